package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// world is a running broker (in-process through run, or a child process)
// with demo users and a config pointing at the real PostgreSQL.
type world struct {
	t      *testing.T
	dir    string
	addr   string
	tokens map[string]string
	cfg    string
	cancel context.CancelFunc
	done   chan error
	stderr *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func requirePG(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	defer c.Close(ctx)
	// Trust auth would let any password in and prove nothing: a role that
	// exists, with a password, must be refused a wrong one.
	const probe = "mf_test_password_probe"
	if _, err := c.Exec(ctx, `DO $$BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '`+probe+`') THEN
			CREATE ROLE `+probe+` LOGIN PASSWORD 'right-password';
		END IF; END$$`); err != nil {
		t.Fatalf("create the password probe role: %v", err)
	}
	u, _ := url.Parse(testenv.PostgresDSN())
	u.User = url.UserPassword(probe, "wrong")
	c2, err := pgx.Connect(ctx, u.String())
	if err == nil {
		c2.Close(ctx)
		t.Fatalf("PostgreSQL lets a wrong password in over %s; run scripts/services.sh so it checks passwords", u.Host)
	}
	if !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("wrong password for %s: %v; want a password authentication failure", probe, err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type worldOpts struct {
	prefix    string
	targets   string // more target items
	engRead   string // extra keys of the eng-read policy, e.g. ", idle_timeout: 3s"
	extraYAML string
	pgDSN     string
	scheduler string
}

func writeConfig(t *testing.T, dir, addr string, tokens map[string]string, o worldOpts) string {
	t.Helper()
	if o.pgDSN == "" {
		o.pgDSN = testenv.PostgresDSN()
	}
	if o.scheduler == "" {
		o.scheduler = "{max_backoff: 2s}"
	}
	if o.prefix == "" {
		o.prefix = "mf_"
	}
	cfg := fmt.Sprintf(`listen: %s
store: {sqlite: %s}
users:
  - {name: alice, groups: [eng], token_sha256: "%s"}
  - {name: bob, groups: [dba], token_sha256: "%s"}
  - {name: carol, groups: [dba, admin], token_sha256: "%s"}
  - {name: dave, groups: [dba], token_sha256: "%s"}
admins: {groups: [admin]}
scheduler: %s
log: {format: text, level: debug}
targets:
  - name: local-pg
    kind: postgres
    prefix: %s
    dsn: %q
    grants:
      readonly: {roles: [pg_read_all_data]}
%spolicies:
  - {name: eng-read, groups: [eng], targets: [local-pg], grants: [readonly], max_duration: 1h, approvals: 0%s}
  - {name: eng-read-long, groups: [eng], targets: [local-pg], grants: [readonly], max_duration: 8h, approvals: 1, approver_groups: [dba]}
  - {name: eng-read-day, groups: [eng], targets: [local-pg], grants: [readonly], max_duration: 24h, approvals: 2, approver_groups: [dba]}
%s`, addr, filepath.Join(dir, "mayfly.db"), hashOf(tokens["alice"]), hashOf(tokens["bob"]), hashOf(tokens["carol"]), hashOf(tokens["dave"]), o.scheduler, o.prefix, o.pgDSN, o.targets, o.engRead, o.extraYAML)
	path := filepath.Join(dir, "mayfly.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func hashOf(tok string) string { return sha256Hex(tok) }

func newTokens() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"alice", "bob", "carol", "dave"} {
		tok, _ := newToken()
		m[n] = tok
	}
	return m
}

// startWorld runs the server in-process through run().
func startWorld(t *testing.T, o worldOpts) *world {
	t.Helper()
	requirePG(t)
	w := &world{t: t, dir: t.TempDir(), addr: freeAddr(t), tokens: newTokens(), stderr: &syncBuffer{}}
	w.cfg = writeConfig(t, w.dir, w.addr, w.tokens, o)
	w.startInProcess()
	t.Cleanup(w.stop)
	return w
}

func (w *world) startInProcess() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.done = make(chan error, 1)
	go func() {
		w.done <- run(ctx, []string{"server", "--config", w.cfg}, os.Getenv, strings.NewReader(""), &bytes.Buffer{}, w.stderr)
	}()
	w.waitHealthy()
}

func (w *world) waitHealthy() {
	w.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", w.addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			if _, err := w.try("alice", "whoami"); err == nil {
				return
			}
		}
		select {
		case err := <-w.done:
			w.t.Fatalf("server exited: %v\n%s", err, w.stderr.String())
		default:
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.t.Fatalf("server did not become healthy\n%s", w.stderr.String())
}

func (w *world) stop() {
	if w.cancel != nil {
		// Leave no account behind on the shared server.
		var ls []leaseOut
		if out, err := w.try("carol", "leases", "--active", "-o", "json"); err == nil && json.Unmarshal([]byte(out), &ls) == nil {
			for _, l := range ls {
				if l.State == "active" {
					w.try("carol", "revoke", l.ID)
				}
			}
		}
	}
	w.halt()
}

// halt stops the server as it is, leaving its leases to other replicas.
func (w *world) halt() {
	if w.cancel != nil {
		w.cancel()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			w.t.Errorf("server did not stop")
		}
		w.cancel = nil
	}
}

// try runs a CLI command as user and returns stdout, or the error.
func (w *world) try(user string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		switch k {
		case "MAYFLY_ADDR":
			return "http://" + w.addr
		case "MAYFLY_TOKEN":
			return w.tokens[user]
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, args, getenv, strings.NewReader(""), &out, &errb)
	return out.String(), err
}

// ok runs a CLI command that must succeed and decodes its JSON output.
func (w *world) ok(user string, v any, args ...string) string {
	w.t.Helper()
	out, err := w.try(user, args...)
	if err != nil {
		w.t.Fatalf("mayfly %s (as %s): %v\nserver log:\n%s", strings.Join(args, " "), user, err, tail(w.stderr.String(), 3000))
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			w.t.Fatalf("mayfly %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// fails runs a CLI command that must fail and returns the error text.
func (w *world) fails(user string, args ...string) string {
	w.t.Helper()
	out, err := w.try(user, args...)
	if err == nil {
		w.t.Fatalf("mayfly %s (as %s) succeeded; want an error\n%s", strings.Join(args, " "), user, out)
	}
	return err.Error()
}

type reqOut struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Requester string `json:"requester"`
	Target    string `json:"target"`
	Grant     string `json:"grant"`
	Reason    string `json:"reason"`
	Duration  string `json:"duration"`
	CreatedAt string `json:"created_at"`
	LeaseID   string `json:"lease_id"`
}

type credsOut struct {
	LeaseID   string    `json:"lease_id"`
	Username  string    `json:"username"`
	Password  string    `json:"password"`
	Host      string    `json:"host"`
	Port      int       `json:"port"`
	Database  string    `json:"database"`
	ExpiresAt time.Time `json:"expires_at"`
}

type leaseOut struct {
	ID        string     `json:"id"`
	RequestID string     `json:"request_id"`
	Username  string     `json:"username"`
	Target    string     `json:"target"`
	State     string     `json:"state"`
	ExpiresAt time.Time  `json:"expires_at"`
	EndedAt   *time.Time `json:"ended_at"`
	EndReason string     `json:"end_reason"`
	Attempts  int        `json:"revoke_attempts"`
	LastError string     `json:"last_error"`
}

type eventOut struct {
	Seq      int64  `json:"seq"`
	Time     string `json:"time"`
	Actor    string `json:"actor"`
	Action   string `json:"action"`
	Subject  string `json:"subject"`
	Reason   string `json:"reason"`
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

func pgLogin(ctx context.Context, c credsOut, password string) (*pgx.Conn, error) {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(c.Username, password), Host: net.JoinHostPort(c.Host, fmt.Sprint(c.Port)), Path: "/" + c.Database, RawQuery: "sslmode=disable&connect_timeout=5"}
	return pgx.Connect(ctx, u.String())
}

// rolesLike counts the roles whose name starts with prefix.
func rolesLike(t *testing.T, prefix string) int {
	t.Helper()
	return countRoles(t, "starts_with(rolname, $1)", prefix)
}

// wantNothingLeft checks the end of a run whose leases have all ended: no
// role named prefix* is left on PostgreSQL, and the audit chain verifies
// (read through w as carol, an admin).
func (w *world) wantNothingLeft(t *testing.T, prefix string) {
	t.Helper()
	if n := rolesLike(t, prefix); n != 0 {
		t.Errorf("%d role(s) named %s* left on PostgreSQL after every lease ended", n, prefix)
	}
	var v verifyOut
	w.ok("carol", &v, "audit", "verify", "-o", "json")
	if !v.OK {
		t.Errorf("audit verify = %+v; want an intact chain", v)
	}
}

func roleExists(t *testing.T, name string) bool {
	t.Helper()
	return countRoles(t, "rolname = $1", name) > 0
}

// countRoles counts the roles matching cond, with arg as $1, as the admin.
func countRoles(t *testing.T, cond, arg string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatalf("admin connect: %v", err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE "+cond, arg).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *world) lease(id string) leaseOut {
	w.t.Helper()
	var ls []leaseOut
	w.ok("carol", &ls, "leases", "-o", "json")
	for _, l := range ls {
		if l.ID == id {
			return l
		}
	}
	w.t.Fatalf("lease %s not listed", id)
	return leaseOut{}
}

func TestLifecycleExpiry(t *testing.T) {
	w := startWorld(t, worldOpts{})
	ctx := context.Background()

	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "4s", "--reason", "INC-1234 slow query", "-o", "json")
	if r.State != "approved" || r.ID == "" {
		t.Fatalf("request = %+v; want approved with an id", r)
	}
	var c credsOut
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	if c.Username == "" || len(c.Password) < 40 || c.Host == "" || c.Port == 0 || c.Database == "" || c.LeaseID == "" {
		t.Fatalf("creds = %+v; want every field", c)
	}
	if until := time.Until(c.ExpiresAt); until < 2*time.Second || until > 5*time.Second {
		t.Errorf("expires_at is %s away; want about 4s", until)
	}
	// The credential works, a wrong password does not, and the rights are the grant's.
	conn, err := pgLogin(ctx, c, c.Password)
	if err != nil {
		t.Fatalf("login with the issued password: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM pg_catalog.pg_class"); err != nil {
		t.Errorf("read with readonly grant: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE mayfly_should_not_exist(x int)"); err == nil {
		t.Errorf("readonly grant could create a table")
	}
	if bad, err := pgLogin(ctx, c, c.Password+"x"); err == nil {
		bad.Close(ctx)
		t.Fatalf("login with a wrong password succeeded")
	}
	// A second creds call is refused.
	if msg := w.fails("alice", "creds", r.ID, "-o", "json"); !strings.Contains(msg, "already issued") {
		t.Errorf("second creds: %q; want it to say the credentials were already issued", msg)
	}

	// After expiry: the open session is gone, login refused, role absent.
	waitFor(t, "lease to be revoked", 10*time.Second, func() bool { return w.lease(c.LeaseID).State == "revoked" })
	l := w.lease(c.LeaseID)
	if l.EndReason != "expired" || l.EndedAt == nil {
		t.Errorf("lease = %+v; want end_reason expired and ended_at", l)
	}
	if lag := l.EndedAt.Sub(c.ExpiresAt); lag > 2*time.Second || lag < 0 {
		t.Errorf("revoked %s after expiry; want under 2s", lag)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Errorf("session opened before expiry still alive after revocation")
	}
	if c2, err := pgLogin(ctx, c, c.Password); err == nil {
		c2.Close(ctx)
		t.Errorf("login after expiry succeeded")
	}
	if roleExists(t, c.Username) {
		t.Errorf("role %s still exists after expiry", c.Username)
	}

	// The audit trail has every step and verifies.
	var evs []eventOut
	w.ok("carol", &evs, "audit", "-o", "json", "--lease", c.LeaseID)
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action)
		if e.Hash == "" || e.Time == "" || e.Actor == "" {
			t.Errorf("event %+v lacks fields", e)
		}
	}
	for _, want := range []string{"lease.intent", "lease.activate", "lease.revoked"} {
		if !strings.Contains(strings.Join(actions, " "), want) {
			t.Errorf("audit for lease has %v; want %s", actions, want)
		}
	}
	if last := evs[len(evs)-1]; last.Action != "lease.revoked" || last.Reason != "expired" || last.Actor != "mayfly" {
		t.Errorf("last event = %+v; want lease.revoked by mayfly, reason expired", last)
	}
	out := w.ok("carol", nil, "audit", "verify")
	if !strings.Contains(out, "intact") {
		t.Errorf("audit verify: %q", out)
	}
	// The password never reaches the store or the log.
	db, _ := os.ReadFile(filepath.Join(w.dir, "mayfly.db"))
	wal, _ := os.ReadFile(filepath.Join(w.dir, "mayfly.db-wal"))
	if bytes.Contains(db, []byte(c.Password)) || bytes.Contains(wal, []byte(c.Password)) {
		t.Errorf("the issued password is in the store file")
	}
	if strings.Contains(w.stderr.String(), c.Password) {
		t.Errorf("the issued password is in the log")
	}
}

func TestApprovalsAndAuthorization(t *testing.T) {
	w := startWorld(t, worldOpts{})

	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2h", "--reason", "INC-7 long analysis", "-o", "json")
	if r.State != "pending" {
		t.Fatalf("2h request = %s; want pending (over eng-read's 1h)", r.State)
	}
	// Approver sees it; requester sees own; unrelated non-approver does not.
	var pending []reqOut
	w.ok("bob", &pending, "requests", "--pending", "-o", "json")
	if len(pending) != 1 || pending[0].ID != r.ID || pending[0].Requester != "alice" || pending[0].Duration == "" || pending[0].CreatedAt == "" {
		t.Fatalf("bob's pending = %+v; want alice's request with all fields", pending)
	}
	// Requester cannot approve own request; creds before approval refused.
	if msg := w.fails("alice", "approve", r.ID); !strings.Contains(msg, "own request") {
		t.Errorf("self-approval: %q", msg)
	}
	if msg := w.fails("alice", "creds", r.ID); !strings.Contains(msg, "pending") {
		t.Errorf("creds while pending: %q", msg)
	}
	w.ok("bob", &r, "approve", r.ID, "-o", "json")
	if r.State != "approved" {
		t.Fatalf("after bob's approval state = %s", r.State)
	}
	if msg := w.fails("bob", "approve", r.ID); !strings.Contains(msg, "not pending") {
		t.Errorf("approving a decided request: %q", msg)
	}
	// Another user cannot take alice's credentials.
	if msg := w.fails("bob", "creds", r.ID); !strings.Contains(msg, "only alice") {
		t.Errorf("bob taking alice's creds: %q", msg)
	}
	var c credsOut
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	if !roleExists(t, c.Username) {
		t.Fatalf("role %s not created", c.Username)
	}
	// A non-admin cannot revoke someone else's lease; the admin can.
	w.fails("bob", "revoke", c.LeaseID)
	var l leaseOut
	w.ok("carol", &l, "revoke", c.LeaseID, "-o", "json")
	if l.State != "revoked" || l.EndReason != "revoked" {
		t.Errorf("after admin revoke lease = %+v", l)
	}
	if roleExists(t, c.Username) {
		t.Errorf("role %s still exists after revoke", c.Username)
	}

	// Two approvals: distinct approvers, one counts once.
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "12h", "--reason", "CHG-9 migration", "-o", "json")
	w.ok("bob", &r, "approve", r.ID, "-o", "json")
	if r.State != "pending" {
		t.Fatalf("after 1 of 2 approvals state = %s", r.State)
	}
	if msg := w.fails("bob", "approve", r.ID); !strings.Contains(msg, "already approved") {
		t.Errorf("same approver twice: %q", msg)
	}
	w.ok("dave", &r, "approve", r.ID, "-o", "json")
	if r.State != "approved" {
		t.Fatalf("after 2 of 2 approvals state = %s", r.State)
	}
	// done by request id ends the lease.
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	w.ok("alice", &l, "done", r.ID, "-o", "json")
	if l.State != "revoked" || l.EndReason != "done" {
		t.Errorf("after done lease = %+v", l)
	}
	if roleExists(t, c.Username) {
		t.Errorf("role %s still exists after done", c.Username)
	}

	// Deny ends a request.
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "3h", "--reason", "INC-8", "-o", "json")
	w.fails("bob", "deny", r.ID) // reason required
	w.ok("bob", &r, "deny", r.ID, "--reason", "use the replica", "-o", "json")
	if r.State != "denied" {
		t.Errorf("after deny state = %s", r.State)
	}
	w.fails("alice", "creds", r.ID)

	// Leases list carries the contract's fields.
	var ls []leaseOut
	w.ok("alice", &ls, "leases", "-o", "json")
	if len(ls) != 2 {
		t.Errorf("alice sees %d leases; want 2", len(ls))
	}
	for _, l := range ls {
		if l.ID == "" || l.RequestID == "" || l.Username == "" || l.Target != "local-pg" || l.EndedAt == nil || l.EndReason == "" {
			t.Errorf("lease %+v lacks contract fields", l)
		}
	}
	var bobs []leaseOut
	w.ok("bob", &bobs, "leases", "-o", "json")
	if len(bobs) != 0 {
		t.Errorf("bob sees %d of alice's leases; want 0", len(bobs))
	}
}

func TestBadInput(t *testing.T) {
	w := startWorld(t, worldOpts{})
	cases := []struct {
		name string
		user string
		args []string
		want string
	}{
		{"unknown target", "alice", []string{"request", "nope/readonly", "--for", "1m", "--reason", "x"}, `unknown target "nope"`},
		{"unknown grant", "alice", []string{"request", "local-pg/superuser", "--for", "1m", "--reason", "x"}, `no grant "superuser"`},
		{"over max", "alice", []string{"request", "local-pg/readonly", "--for", "25h", "--reason", "x"}, "refused"},
		{"zero", "alice", []string{"request", "local-pg/readonly", "--for", "0s", "--reason", "x"}, "positive"},
		{"negative", "alice", []string{"request", "local-pg/readonly", "--for", "-5m", "--reason", "x"}, "positive"},
		{"absurd", "alice", []string{"request", "local-pg/readonly", "--for", "100000000h", "--reason", "x"}, ""},
		{"garbage duration", "alice", []string{"request", "local-pg/readonly", "--for", "soon", "--reason", "x"}, "want a duration such as 90s"},
		{"sub-second", "alice", []string{"request", "local-pg/readonly", "--for", "10ms", "--reason", "x"}, "minimum"},
		{"hostile grant", "alice", []string{"request", "local-pg/readonly'; DROP ROLE postgres; --", "--for", "1m", "--reason", "x"}, "no grant"},
		{"hostile target", "alice", []string{"request", "local-pg\"x/readonly", "--for", "1m", "--reason", "x"}, "unknown target"},
		{"no slash", "alice", []string{"request", "local-pg", "--for", "1m"}, "TARGET/GRANT"},
		{"not allowed user", "bob", []string{"request", "local-pg/readonly", "--for", "1m", "--reason", "x"}, "refused"},
		{"unknown token", "mallory", []string{"request", "local-pg/readonly", "--for", "1m", "--reason", "x"}, "MAYFLY_TOKEN"},
		{"unknown request", "alice", []string{"creds", "req_doesnotexist"}, "not found"},
		{"unknown lease", "carol", []string{"revoke", "lse_doesnotexist"}, "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := w.fails(tc.user, tc.args...)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error = %q; want it to contain %q", msg, tc.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
		})
	}
	// A wrong token (set but unknown) is refused.
	w.tokens["mallory"] = "mfy_not_a_real_token"
	if msg := w.fails("mallory", "requests"); !strings.Contains(msg, "unknown or revoked token") {
		t.Errorf("wrong token: %q", msg)
	}
	// A refusal through the API carries the explanation, policy by policy.
	req, _ := http.NewRequest("POST", "http://"+w.addr+"/v1/requests", strings.NewReader(`{"target":"local-pg","grant":"readonly","duration":"25h","reason":"x"}`))
	req.Header.Set("Authorization", "Bearer "+w.tokens["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var refusal struct {
		Error    struct{ Code, Message string }
		Decision struct {
			Decision   string
			Considered []struct {
				Name    string
				Matched bool
				Why     string
			}
		}
	}
	json.NewDecoder(resp.Body).Decode(&refusal)
	resp.Body.Close()
	if resp.StatusCode != 403 || refusal.Error.Code != "forbidden" || refusal.Decision.Decision != "deny" || len(refusal.Decision.Considered) != 3 {
		t.Errorf("refusal = %d %+v; want 403 with the decision of all 3 policies", resp.StatusCode, refusal)
	}
	for _, c := range refusal.Decision.Considered {
		if c.Why == "" {
			t.Errorf("policy %s considered without a why", c.Name)
		}
	}
	// Nothing was created by any of it.
	var rs []reqOut
	w.ok("carol", &rs, "requests", "-o", "json")
	if len(rs) != 0 {
		t.Errorf("bad input created %d requests: %+v", len(rs), rs)
	}
}

func TestMalformedConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown key", "listen: x\nstore: {sqlite: a.db}\nbogus: 1\n", "mayfly.yaml:3"},
		{"bad kind", "store: {sqlite: a.db}\ntargets:\n  - {name: t1, kind: oracle, grants: {r: {}}}\n", "mayfly.yaml:3: target \"t1\": unknown kind"},
		{"bad token", "store: {sqlite: a.db}\nusers:\n  - {name: al, token_sha256: zz}\n", "mayfly.yaml:3: user \"al\": token_sha256"},
		{"bad duration", "store: {sqlite: a.db}\npolicies:\n  - {name: p, max_duration: forever}\n", "mayfly.yaml:3"},
		{"tabs", "store:\n\tsqlite: a.db\n", "mayfly.yaml:2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "mayfly.yaml")
			os.WriteFile(p, []byte(tc.yaml), 0o600)
			var out, errb bytes.Buffer
			err := run(context.Background(), []string{"server", "--config", p}, os.Getenv, strings.NewReader(""), &out, &errb)
			if err == nil {
				t.Fatalf("server accepted malformed config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q; want it to contain %q", err, tc.want)
			}
		})
	}
}

// binary builds the mayfly binary once for tests that need a process to kill.
var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mayfly-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "mayfly")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// startProcess runs the server as a child process.
func (w *world) startProcess(extraEnv ...string) *exec.Cmd {
	w.t.Helper()
	cmd := exec.Command(buildBinary(w.t), "server", "--config", w.cfg)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stderr = w.stderr
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	done := make(chan error, 1) // this process's, should another start before it ends
	w.done = done
	go func() { done <- cmd.Wait() }()
	w.waitHealthy()
	return cmd
}

func newProcessWorld(t *testing.T, o worldOpts) *world {
	requirePG(t)
	w := &world{t: t, dir: t.TempDir(), addr: freeAddr(t), tokens: newTokens(), stderr: &syncBuffer{}}
	w.cfg = writeConfig(t, w.dir, w.addr, w.tokens, o)
	return w
}

func TestCrashBetweenIntentAndProvisioning(t *testing.T) {
	w := newProcessWorld(t, worldOpts{})
	cmd := w.startProcess("MAYFLY_FAILPOINT=crash-after-intent")
	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "3s", "--reason", "crash test", "-o", "json")
	if _, err := w.try("alice", "creds", r.ID, "-o", "json"); err == nil {
		t.Fatalf("creds succeeded; the failpoint should have killed the broker")
	}
	w.waitKilled()
	_ = cmd
	// Restart: the interrupted lease is undone and nothing is left behind.
	l := w.restartUndone()
	if roleExists(t, l.Username) {
		t.Errorf("role %s exists after recovery", l.Username)
	}
	// The request can be activated again after the failed attempt.
	var c credsOut
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	if !roleExists(t, c.Username) {
		t.Errorf("retry after recovery created no role")
	}
	waitFor(t, "retried lease to expire", 10*time.Second, func() bool { return !roleExists(t, c.Username) })
}

// TestCrashBeforeStagedCommit kills the broker on the one-call path, where
// the account's creation is already sent to PostgreSQL in an open
// transaction while the intent commits: the server must roll it back, so
// no role ever exists, and recovery ends the lease.
func TestCrashBeforeStagedCommit(t *testing.T) {
	b := make([]byte, 3)
	rand.Read(b)
	prefix := "mf_stg" + hex.EncodeToString(b) + "_"
	w := newProcessWorld(t, worldOpts{prefix: prefix})
	w.crashOnOneCall(prefix)
	if l := w.restartUndone(); roleExists(t, l.Username) {
		t.Errorf("role %s exists: the staged creation outlived the broker", l.Username)
	}
}

// crashOnOneCall starts the broker with the failpoint that kills it once
// a lease's intent is committed, makes a one-call issue, and checks that
// PostgreSQL rolled the staged creation back: no role named prefix*.
func (w *world) crashOnOneCall(prefix string) {
	w.t.Helper()
	w.startProcess("MAYFLY_FAILPOINT=crash-after-intent")
	if _, err := w.try("alice", "request", "local-pg/readonly", "--for", "1m", "--reason", "crash test", "--creds", "-o", "json"); err == nil {
		w.t.Fatalf("request --creds succeeded; the failpoint should have killed the broker")
	}
	w.waitKilled()
	// Before any recovery: the server itself rolled the creation back.
	time.Sleep(200 * time.Millisecond)
	if n := rolesLike(w.t, prefix); n != 0 {
		w.t.Fatalf("%d role(s) named %s* exist after the broker died before the target's commit", n, prefix)
	}
}

// waitKilled waits for the broker process to die of SIGKILL.
func (w *world) waitKilled() {
	w.t.Helper()
	if err := <-w.done; err == nil || !strings.Contains(err.Error(), "killed") {
		w.t.Fatalf("broker exit = %v; want killed", err)
	}
}

// restartUndone restarts the broker, which holds one lease interrupted by a
// crash, and returns that lease once recovery has ended it failed.
func (w *world) restartUndone() leaseOut {
	w.t.Helper()
	cmd := w.startProcess()
	w.t.Cleanup(func() { cmd.Process.Kill() })
	var ls []leaseOut
	waitFor(w.t, "interrupted lease to be undone", 10*time.Second, func() bool {
		w.ok("carol", &ls, "leases", "-o", "json")
		return len(ls) == 1 && ls[0].State == "failed"
	})
	return ls[0]
}

func TestCrashWhileLeasesLive(t *testing.T) {
	w := newProcessWorld(t, worldOpts{})
	cmd := w.startProcess()
	var names []string
	for i := 0; i < 3; i++ {
		var c credsOut
		var r reqOut
		w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2s", "--reason", "crash test", "-o", "json")
		w.ok("alice", &c, "creds", r.ID, "-o", "json")
		names = append(names, c.Username)
	}
	// The activation is recorded just after the credential is sent; kill
	// the broker once all three are recorded active.
	waitFor(t, "the leases to be recorded active", 5*time.Second, func() bool {
		var ls []leaseOut
		w.ok("carol", &ls, "leases", "--active", "-o", "json")
		n := 0
		for _, l := range ls {
			if l.State == "active" {
				n++
			}
		}
		return n == 3
	})
	cmd.Process.Kill() // SIGKILL
	<-w.done
	time.Sleep(3 * time.Second) // the leases expire while the broker is dead
	for _, n := range names {
		if !roleExists(t, n) {
			t.Fatalf("role %s vanished while the broker was dead; the test proves nothing", n)
		}
	}
	cmd = w.startProcess()
	defer cmd.Process.Kill()
	waitFor(t, "expired leases to be revoked after restart", 10*time.Second, func() bool {
		for _, n := range names {
			if roleExists(t, n) {
				return false
			}
		}
		return true
	})
	var ls []leaseOut
	w.ok("carol", &ls, "leases", "-o", "json")
	for _, l := range ls {
		if l.State != "revoked" || l.EndReason != "expired" {
			t.Errorf("lease %+v; want revoked/expired", l)
		}
	}
}

// proxy is a TCP forwarder that can be switched off to make a target
// unreachable.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { copyClose(c, u) }()
		go func() { copyClose(u, c) }()
	}
}

func copyClose(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func TestTargetDownAtExpiry(t *testing.T) {
	requirePG(t)
	u, _ := url.Parse(testenv.PostgresDSN())
	px := newProxy(t, u.Host)
	u.Host = px.ln.Addr().String()
	w := startWorld(t, worldOpts{pgDSN: u.String(), extraYAML: "reconcile: {health_interval: 300ms}\naudit: {revocation_overdue_alert: 1s}\n"})

	var r reqOut
	var c credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2s", "--reason", "outage test", "-o", "json")
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	px.setDown(true)
	waitFor(t, "revocation to fail at least twice", 15*time.Second, func() bool {
		l := w.lease(c.LeaseID)
		return l.State == "revoking" && l.Attempts >= 2
	})
	if l := w.lease(c.LeaseID); l.LastError == "" {
		t.Errorf("failing lease has no last_error: %+v", l)
	}
	if !roleExists(t, c.Username) {
		t.Fatalf("role vanished while the target was unreachable; the test proves nothing")
	}
	var evs []eventOut
	w.ok("carol", &evs, "audit", "-o", "json", "--action", "lease.revoke_failed")
	if len(evs) < 2 {
		t.Errorf("audit has %d revoke_failed events; want each failure audited", len(evs))
	}
	px.setDown(false)
	waitFor(t, "revocation to complete once the target is back", 15*time.Second, func() bool {
		return w.lease(c.LeaseID).State == "revoked"
	})
	if roleExists(t, c.Username) {
		t.Errorf("role %s still exists after the target came back", c.Username)
	}
	// Each problem raised an alert for the security team, saying what to do.
	for _, action := range []string{"alert.target_unreachable", "alert.revocation_overdue", "alert.target_recovered"} {
		waitFor(t, action, 5*time.Second, func() bool {
			var evs []eventOut
			w.ok("carol", &evs, "audit", "-o", "json", "--action", action)
			return len(evs) >= 1
		})
	}
}

// TestRevokeExitStatusWhileTargetIsDown: with the target unreachable,
// `mayfly revoke` exits 6 naming the retry (not 0: access is not gone);
// `--wait` blocks until the target is back and the account removed, then
// exits 0; `--wait` with a short --timeout exits 6.
func TestRevokeExitStatusWhileTargetIsDown(t *testing.T) {
	requirePG(t)
	u, _ := url.Parse(testenv.PostgresDSN())
	px := newProxy(t, u.Host)
	u.Host = px.ln.Addr().String()
	w := startWorld(t, worldOpts{pgDSN: u.String()})
	var r reqOut
	var c credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-6 exit status", "-o", "json")
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	px.setDown(true)
	out, err := w.try("carol", "revoke", c.LeaseID)
	if code := exitCode(err); code != exitNotGone || !strings.Contains(fmt.Sprint(err), "keeps retrying") {
		t.Fatalf("revoke with the target down: exit %d, %q %v; want %d naming the retry", code, out, err, exitNotGone)
	}
	if !roleExists(t, c.Username) {
		t.Fatalf("role vanished while the target was unreachable; the test proves nothing")
	}
	if _, err := w.try("carol", "revoke", c.LeaseID, "--wait", "--timeout", "1s"); exitCode(err) != exitNotGone {
		t.Errorf("revoke --wait --timeout 1s with the target down: exit %d (%v); want %d", exitCode(err), err, exitNotGone)
	}
	go func() { time.Sleep(time.Second); px.setDown(false) }()
	var l leaseOut
	out, err = w.try("alice", "done", c.LeaseID, "--wait", "--timeout", "30s", "-o", "json")
	if err != nil {
		t.Fatalf("done --wait once the target is back: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil || l.State != "revoked" {
		t.Fatalf("done --wait printed %q; want the revoked lease", out)
	}
	if roleExists(t, c.Username) {
		t.Errorf("role %s exists after done --wait returned 0", c.Username)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
