package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
)

var sqliteStoreLine = regexp.MustCompile(`(?m)^store: \{sqlite: .*\}$`)

// usePostgresStore points w's configuration at the PostgreSQL store dsn,
// listening on addr.
func (w *world) usePostgresStore(dsn, addr string) {
	w.t.Helper()
	b, err := os.ReadFile(w.cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg := sqliteStoreLine.ReplaceAllString(string(b), `store: {postgres: {dsn: "`+dsn+`", max_conns: 4}}`)
	cfg = strings.Replace(cfg, "listen: "+w.addr, "listen: "+addr, 1)
	if !strings.Contains(cfg, "postgres: {dsn:") {
		w.t.Fatalf("no store line to replace in\n%s", b)
	}
	w.addr = addr
	if err := os.WriteFile(w.cfg, []byte(cfg), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

// twoReplicas starts two servers in this process on a new PostgreSQL
// store (its DSN returned), configured with opts but for their addresses.
func twoReplicas(t *testing.T, opts worldOpts) (a, b *world, dsn string) {
	t.Helper()
	dsn = pgtest.NewDatabase(t)
	requirePG(t)
	a = &world{t: t, dir: t.TempDir(), addr: freeAddr(t), tokens: newTokens(), stderr: &syncBuffer{}}
	a.cfg = writeConfig(t, a.dir, a.addr, a.tokens, opts)
	a.usePostgresStore(dsn, a.addr)
	a.startInProcess()
	t.Cleanup(a.stop)
	return a, replicaOf(t, a), dsn
}

// replicaOf is a second server process on w's configuration (the same
// store and users) listening on another address.
func replicaOf(t *testing.T, w *world) *world {
	t.Helper()
	r := &world{t: t, dir: t.TempDir(), addr: freeAddr(t), tokens: w.tokens, stderr: &syncBuffer{}}
	b, err := os.ReadFile(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "listen: "+w.addr, "listen: "+r.addr, 1)
	r.cfg = filepath.Join(r.dir, "mayfly.yaml")
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r.startInProcess()
	t.Cleanup(r.stop)
	return r
}

type verifyOut struct {
	OK      bool  `json:"ok"`
	Checked int64 `json:"checked"`
	Last    int64 `json:"last_seq"`
}

// TestTwoServersOnePostgresStore runs two servers with different listen
// addresses on one PostgreSQL store: a request made through one is seen
// and approved through the other, its credentials taken and its lease
// revoked through either, and the audit trail both wrote is one intact
// chain.
func TestTwoServersOnePostgresStore(t *testing.T) {
	a, b, _ := twoReplicas(t, worldOpts{})

	var r reqOut
	a.ok("alice", &r, "request", "local-pg/readonly", "--for", "2h", "--reason", "INC-42 two replicas", "-o", "json")
	if r.State != "pending" {
		t.Fatalf("request state = %s; want pending", r.State)
	}
	var pending []reqOut
	b.ok("bob", &pending, "requests", "--pending", "-o", "json")
	if len(pending) != 1 || pending[0].ID != r.ID {
		t.Fatalf("pending requests through the second server = %+v; want %s", pending, r.ID)
	}
	b.ok("bob", &r, "approve", r.ID, "-o", "json")
	if r.State != "approved" {
		t.Fatalf("after approval through the second server: %s", r.State)
	}
	// The first server sees the decision and issues the credentials.
	var c credsOut
	a.ok("alice", &c, "creds", r.ID, "-o", "json")
	if !roleExists(t, c.Username) {
		t.Fatalf("role %s not created", c.Username)
	}
	var ls []leaseOut
	b.ok("carol", &ls, "leases", "--active", "-o", "json")
	if len(ls) != 1 || ls[0].ID != c.LeaseID || ls[0].State != "active" {
		t.Fatalf("active leases through the second server = %+v; want %s", ls, c.LeaseID)
	}
	var l leaseOut
	b.ok("carol", &l, "revoke", c.LeaseID, "-o", "json")
	if l.State != "revoked" || roleExists(t, c.Username) {
		t.Fatalf("after revoking through the second server: %+v, role exists %v", l, roleExists(t, c.Username))
	}
	// Both servers wrote to the trail; each verifies it whole.
	for _, w := range []*world{a, b} {
		var v verifyOut
		w.ok("carol", &v, "audit", "verify", "-o", "json")
		if !v.OK || v.Checked < 4 {
			t.Errorf("audit verify through %s = %+v; want an intact chain of the request's events", w.addr, v)
		}
	}
	var es []eventOut
	a.ok("carol", &es, "audit", "--request", r.ID, "-o", "json")
	actors := map[string]bool{}
	for _, e := range es {
		actors[e.Actor] = true
	}
	if !actors["alice"] || !actors["bob"] {
		t.Errorf("audit events of %s have actors %v; want alice's request and bob's approval", r.ID, actors)
	}
}

// TestStoreMigrateSQLiteToPostgres makes some history on a SQLite store
// through the real server, copies it with `mayfly store migrate`, and
// runs a server on the PostgreSQL store: the same leases, the same audit
// events (sequence numbers and hashes), an intact chain, and an API token
// made before still authenticates.
func TestStoreMigrateSQLiteToPostgres(t *testing.T) {
	w := startWorld(t, worldOpts{})
	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30m", "--reason", "INC-1 quick look", "-o", "json")
	var c credsOut
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	w.ok("alice", nil, "done", r.ID)
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2h", "--reason", "INC-2 long look", "-o", "json")
	w.ok("bob", &r, "deny", r.ID, "--reason", "not now", "-o", "json")
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2h", "--reason", "INC-3 waiting", "-o", "json")
	var tok struct {
		Token string `json:"token"`
	}
	w.ok("alice", &tok, "tokens", "create", "--name", "ci", "--ttl", "1h", "-o", "json")
	if tok.Token == "" {
		t.Fatal("tokens create printed no token")
	}
	w.ok("carol", nil, "users", "suspend", "dave", "--reason", "leave")

	var leasesBefore []leaseOut
	w.ok("carol", &leasesBefore, "leases", "-o", "json")
	var auditBefore []eventOut
	w.ok("carol", &auditBefore, "audit", "-o", "json")

	dsn := pgtest.NewDatabase(t)
	migrate := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"store", "migrate"}, args...), func(string) string { return "" }, strings.NewReader(""), &out, &errb)
		return out.String(), err
	}
	from := "sqlite:" + filepath.Join(w.dir, "mayfly.db")
	// Not while its server runs, which would go on writing after the
	// copy: a server told to stop as the copy begins is waited for.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		time.Sleep(300 * time.Millisecond)
		w.stop()
	}()
	var outb, errb bytes.Buffer
	err := run(context.Background(), []string{"store", "migrate", "--from", from, "--to", "postgres:" + dsn, "-o", "json"}, func(string) string { return "" }, strings.NewReader(""), &outb, &errb)
	<-stopped
	if err != nil {
		t.Fatalf("store migrate: %v", err)
	}
	if !strings.Contains(errb.String(), "waiting up to 10s for it to stop") {
		t.Errorf("store migrate did not wait for the server holding the store: %q", errb.String())
	}
	out := outb.String()
	var n struct {
		Requests, Leases, Tokens int
		AuditEvents              int   `json:"audit_events"`
		LastSeq                  int64 `json:"last_seq"`
		Users                    int   `json:"user_statuses"`
		Settings                 int
		Verified                 bool `json:"audit_verified"`
	}
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatalf("store migrate -o json: %v\n%s", err, out)
	}
	if n.Requests != 3 || n.Leases != len(leasesBefore) || n.AuditEvents != len(auditBefore) || n.Tokens != 1 || n.Users != 1 || n.Settings < 1 || !n.Verified {
		t.Errorf("store migrate counts = %+v; want 3 requests, %d leases, %d audit events, 1 token, 1 user status, the hashing key, verified", n, len(leasesBefore), len(auditBefore))
	}
	// A second copy into the same database is refused.
	if _, err := migrate("--from", from, "--to", "postgres:"+dsn); mayfly.ErrorCode(err) != mayfly.ECONFLICT || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("migrate into a non-empty store = %v; want a conflict saying it is not empty", err)
	}
	for _, args := range [][]string{
		{"--from", "sqlite:" + filepath.Join(w.dir, "missing.db"), "--to", "postgres:" + dsn},
		{"--from", filepath.Join(w.dir, "mayfly.db"), "--to", "postgres:" + dsn},
		{"--from", from, "--to", dsn},
	} {
		if _, err := migrate(args...); err == nil {
			t.Errorf("store migrate %v succeeded; want an error", args)
		}
	}

	w.usePostgresStore(dsn, freeAddr(t))
	w.startInProcess()
	var leasesAfter []leaseOut
	w.ok("carol", &leasesAfter, "leases", "-o", "json")
	if !reflect.DeepEqual(leasesAfter, leasesBefore) {
		t.Errorf("leases on the PostgreSQL store:\n%+v\nwant\n%+v", leasesAfter, leasesBefore)
	}
	var auditAfter []eventOut
	w.ok("carol", &auditAfter, "audit", "--limit", "1000", "-o", "json")
	if len(auditAfter) < len(auditBefore) || !reflect.DeepEqual(auditAfter[:len(auditBefore)], auditBefore) {
		t.Errorf("audit events on the PostgreSQL store differ from the SQLite store's")
	}
	var v verifyOut
	w.ok("carol", &v, "audit", "verify", "-o", "json")
	if !v.OK || v.Checked < int64(len(auditBefore)) {
		t.Errorf("audit verify after migration = %+v; want an intact chain of at least %d events", v, len(auditBefore))
	}
	var pending []reqOut
	w.ok("bob", &pending, "requests", "--pending", "-o", "json")
	if len(pending) != 1 || pending[0].ID != r.ID {
		t.Errorf("pending requests after migration = %+v; want %s", pending, r.ID)
	}
	// The token made on SQLite authenticates on PostgreSQL; dave stays
	// suspended.
	w.tokens["alice-ci"] = tok.Token
	var who struct {
		Name string `json:"name"`
	}
	w.ok("alice-ci", &who, "whoami", "-o", "json")
	if who.Name != "alice" {
		t.Errorf("whoami with the migrated token = %q; want alice", who.Name)
	}
	if msg := w.fails("dave", "requests"); !strings.Contains(msg, "user dave is suspended") {
		t.Errorf("suspended dave after migration: %q; want his token refused", msg)
	}
}

// TestCrashBeforeTargetCommitPostgresStore kills the broker on the
// one-call path with the PostgreSQL store, where the lease is recorded
// active with its intent, in one commit, before the target commits the
// account: PostgreSQL rolls the creation back, no credential was given,
// and reconciliation finds the lease's account missing and ends it.
func TestCrashBeforeTargetCommitPostgresStore(t *testing.T) {
	b := make([]byte, 3)
	rand.Read(b)
	prefix := "mf_one" + hex.EncodeToString(b) + "_"
	w := newProcessWorld(t, worldOpts{prefix: prefix})
	w.usePostgresStore(pgtest.NewDatabase(t), w.addr)
	w.crashOnOneCall(prefix)
	cmd := w.startProcess()
	t.Cleanup(func() { cmd.Process.Kill() })
	var ls []leaseOut
	w.ok("carol", &ls, "leases", "-o", "json")
	if len(ls) != 1 || ls[0].State != "active" {
		t.Fatalf("leases = %+v; want the one recorded active", ls)
	}
	var res struct {
		LeasesMissing []string `json:"leases_missing"`
	}
	w.ok("carol", &res, "reconcile", "local-pg", "-o", "json")
	if len(res.LeasesMissing) != 1 || res.LeasesMissing[0] != ls[0].ID {
		t.Fatalf("leases_missing = %v; want [%s]", res.LeasesMissing, ls[0].ID)
	}
	waitFor(t, "the lease to be revoked", 10*time.Second, func() bool { return w.lease(ls[0].ID).State == "revoked" })
	if l := w.lease(ls[0].ID); l.EndReason != "missing" {
		t.Errorf("lease = %+v; want revoked/missing", l)
	}
	w.wantNothingLeft(t, prefix)
}
