package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type tokenOut struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	User       string    `json:"user"`
	Kind       string    `json:"kind"`
	Token      string    `json:"token"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	RevokedAt  time.Time `json:"revoked_at"`
}

type tokenWho struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	Admin  bool     `json:"admin"`
}

// failsWith runs a command that must fail with the given exit code.
func (w *world) failsWith(code int, user string, args ...string) {
	w.t.Helper()
	_, err := w.try(user, args...)
	if err == nil || exitCode(err) != code {
		w.t.Fatalf("mayfly %s (as %s) = %v (exit %d); want exit %d", strings.Join(args, " "), user, err, exitCode(err), code)
	}
}

func findToken(ts []tokenOut, id string) (tokenOut, bool) {
	i := slices.IndexFunc(ts, func(t tokenOut) bool { return t.ID == id })
	if i < 0 {
		return tokenOut{}, false
	}
	return ts[i], true
}

// TestAPITokens: people create expiring API tokens (for themselves; admins
// for others; within auth.max_token_ttl), use them as MAYFLY_TOKEN at
// once, list them with their last use, and lose them at once to
// revocation, expiry and suspension. The plaintext is in neither the
// store's files nor the server's log.
func TestAPITokens(t *testing.T) {
	w := startWorld(t, worldOpts{extraYAML: "auth: {max_token_ttl: 48h}\n"})
	var plains []string

	var ci tokenOut
	w.ok("alice", &ci, "tokens", "create", "--name", "ci", "--ttl", "1h", "-o", "json")
	if ci.ID == "" || !strings.HasPrefix(ci.Token, "mft_") || ci.User != "alice" || ci.Name != "ci" {
		t.Fatalf("tokens create = %+v; want an id, an mft_ token, user alice, name ci", ci)
	}
	if d := time.Until(ci.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expires_at %v is %v away; want about 1h", ci.ExpiresAt, d)
	}
	plains = append(plains, ci.Token)
	w.tokens["alice-ci"] = ci.Token
	var who tokenWho
	w.ok("alice-ci", &who, "whoami", "-o", "json")
	if who.Name != "alice" || !slices.Equal(who.Groups, []string{"eng"}) || who.Admin {
		t.Errorf("whoami with alice's API token = %+v; want alice, [eng], not admin", who)
	}
	// The token does what alice's static token does.
	w.ok("alice-ci", nil, "requests", "-o", "json")

	// An admin creates a token for another user (a service user).
	var svc tokenOut
	w.ok("carol", &svc, "tokens", "create", "--name", "deploy", "--ttl", "48h", "--user", "bob", "-o", "json")
	plains = append(plains, svc.Token)
	w.tokens["bob-svc"] = svc.Token
	w.ok("bob-svc", &who, "whoami", "-o", "json")
	if who.Name != "bob" || !slices.Equal(who.Groups, []string{"dba"}) {
		t.Errorf("whoami with bob's API token = %+v; want bob, [dba]", who)
	}

	// Refused: a token for someone else without being an admin (3); over
	// the maximum TTL (2); no name (2).
	w.failsWith(3, "alice", "tokens", "create", "--name", "x", "--ttl", "1h", "--user", "bob")
	w.failsWith(2, "alice", "tokens", "create", "--name", "x", "--ttl", "49h")
	w.failsWith(2, "carol", "tokens", "create", "--name", "x", "--ttl", "49h", "--user", "bob")
	w.failsWith(2, "alice", "tokens", "create", "--ttl", "1h")

	// Lists: alice sees hers, with its last use; the admin sees all or one
	// user's; alice may not list bob's.
	var ts []tokenOut
	w.ok("alice", &ts, "tokens", "list", "-o", "json")
	got, ok := findToken(ts, ci.ID)
	if len(ts) != 1 || !ok || got.User != "alice" || got.Name != "ci" || !got.ExpiresAt.Equal(ci.ExpiresAt) {
		t.Fatalf("alice's tokens = %+v; want only %s", ts, ci.ID)
	}
	if got.LastUsedAt.IsZero() || got.LastUsedAt.Before(got.CreatedAt) {
		t.Errorf("last_used_at after use = %v (created %v); want set", got.LastUsedAt, got.CreatedAt)
	}
	w.ok("carol", &ts, "tokens", "list", "-o", "json")
	if _, ok := findToken(ts, svc.ID); !ok || len(ts) != 2 {
		t.Errorf("all tokens = %+v; want alice's and bob's", ts)
	}
	w.ok("carol", &ts, "tokens", "list", "--user", "bob", "-o", "json")
	if len(ts) != 1 || ts[0].ID != svc.ID {
		t.Errorf("bob's tokens = %+v; want %s", ts, svc.ID)
	}
	w.failsWith(3, "alice", "tokens", "list", "--user", "bob")
	if out := w.ok("alice", nil, "tokens", "list"); !strings.Contains(out, ci.ID) || !strings.Contains(out, "LAST USED") {
		t.Errorf("tokens list table:\n%s", out)
	}

	// Revocation is immediate; alice may not revoke bob's token.
	w.failsWith(3, "alice", "tokens", "revoke", svc.ID)
	w.failsWith(4, "alice", "tokens", "revoke", "tok_nosuchtoken")
	w.ok("alice", nil, "tokens", "revoke", ci.ID)
	w.failsWith(3, "alice-ci", "whoami")

	// Suspension revokes the user's tokens; resuming does not revive them.
	w.ok("carol", nil, "users", "suspend", "bob", "--reason", "left")
	w.failsWith(3, "bob-svc", "whoami")
	w.ok("carol", nil, "users", "resume", "bob", "--reason", "back")
	w.failsWith(3, "bob-svc", "whoami")
	w.ok("carol", &ts, "tokens", "list", "--user", "bob", "-o", "json")
	if len(ts) != 1 || ts[0].RevokedAt.IsZero() {
		t.Errorf("bob's tokens after suspension = %+v; want revoked", ts)
	}

	// Expiry: a 2s token works, then is refused once past expires_at.
	var short tokenOut
	w.ok("alice", &short, "tokens", "create", "--name", "short", "--ttl", "2s", "-o", "json")
	plains = append(plains, short.Token)
	w.tokens["alice-short"] = short.Token
	w.ok("alice-short", nil, "whoami")
	time.Sleep(time.Until(short.ExpiresAt) + 50*time.Millisecond)
	w.failsWith(3, "alice-short", "whoami")

	// The audit trail records creation, first use and revocation.
	var evs []struct {
		Action  string `json:"action"`
		Subject string `json:"subject"`
	}
	w.ok("carol", &evs, "audit", "-o", "json")
	var actions []string
	for _, e := range evs {
		if e.Subject == "token:"+ci.ID {
			actions = append(actions, e.Action)
		}
	}
	if strings.Join(actions, " ") != "token.create token.first_use token.revoke" {
		t.Errorf("audit of %s = %v; want token.create token.first_use token.revoke", ci.ID, actions)
	}

	// The plaintext is nowhere in the store's files or the log; the hash
	// the store keeps is (so these are the right files).
	w.stop()
	files, _ := filepath.Glob(filepath.Join(w.dir, "mayfly.db*"))
	var store []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		store = append(store, b...)
	}
	logs := []byte(w.stderr.String())
	if len(logs) == 0 {
		t.Fatal("the server logged nothing")
	}
	for _, p := range plains {
		if bytes.Contains(store, []byte(p)) || bytes.Contains(logs, []byte(p)) {
			t.Errorf("token plaintext %s… found in the store files %v or the log", p[:8], files)
		}
		if !bytes.Contains(store, []byte(sha256Hex(p))) {
			t.Errorf("the hash of token %s… is not in the store files %v", p[:8], files)
		}
	}
	var audit bytes.Buffer
	json.NewEncoder(&audit).Encode(evs)
	for _, p := range plains {
		if strings.Contains(audit.String(), p) {
			t.Errorf("token plaintext found in the audit trail")
		}
	}
}
