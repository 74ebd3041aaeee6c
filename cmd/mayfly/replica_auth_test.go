package main

import (
	"strings"
	"testing"
	"time"
)

// TestSuspensionAndRevokedTokensReachEveryReplica: a user suspended
// through one replica is refused by every other within a second, with
// their static token and their stored API token, and a token revoked through
// one replica stops working on another that has already accepted it
// (and so holds it in its cache).
func TestSuspensionAndRevokedTokensReachEveryReplica(t *testing.T) {
	a, b, _ := twoReplicas(t, worldOpts{extraYAML: "auth: {max_token_ttl: 48h}\n"})
	var ci tokenOut
	a.ok("alice", &ci, "tokens", "create", "--name", "ci", "--ttl", "1h", "-o", "json")
	a.tokens["alice-ci"] = ci.Token
	var other tokenOut
	a.ok("alice", &other, "tokens", "create", "--name", "laptop", "--ttl", "1h", "-o", "json")
	a.tokens["alice-laptop"] = other.Token
	// B accepts both tokens, and so caches them.
	b.ok("alice-ci", nil, "whoami", "-o", "json")
	b.ok("alice-laptop", nil, "whoami", "-o", "json")

	a.ok("alice", nil, "tokens", "revoke", ci.ID)
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, err := b.try("alice-ci", "whoami", "-o", "json")
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a token revoked through A still works on B 3 s later")
		}
		time.Sleep(50 * time.Millisecond)
	}

	a.ok("carol", nil, "users", "suspend", "alice", "--reason", "left the team")
	for _, user := range []string{"alice", "alice-laptop"} {
		deadline := time.Now().Add(3 * time.Second)
		for {
			_, err := b.try(user, "requests", "-o", "json")
			if err != nil {
				// The suspension revoked alice's stored tokens; her
				// static token is refused for her status.
				if user == "alice" && !strings.Contains(err.Error(), "suspended") {
					t.Errorf("B refused %s after the suspension with %q; want it to say alice is suspended", user, err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("B still serves %s 3 s after alice was suspended through A", user)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if msg := b.fails("alice", "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-9"); !strings.Contains(msg, "suspended") {
		t.Errorf("a request through B by suspended alice: %q; want it refused as suspended", msg)
	}

	// Resumed through B: A serves alice again.
	b.ok("carol", nil, "users", "resume", "alice", "--reason", "back")
	deadline = time.Now().Add(3 * time.Second)
	for {
		if _, err := a.try("alice", "requests", "-o", "json"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A still refuses alice 3 s after she was resumed through B")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
