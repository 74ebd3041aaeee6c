package notify

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// openStore opens a fresh SQLite store in a temporary directory.
func openStore(t testing.TB) *sqlite.DB {
	t.Helper()
	return openStoreAt(t, filepath.Join(t.TempDir(), "mayfly.db"))
}

func openStoreAt(t testing.TB, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// testDir is a directory backed by maps and the store's requests.
type testDir struct {
	store   mayfly.Store
	members map[string][]string
	emails  map[string]string
}

func newDir(store mayfly.Store) *testDir {
	return &testDir{
		store: store,
		members: map[string][]string{
			"dba":   {"bob", "alice", "carol"},
			"leads": {"lee"},
			"sec":   {"sam", "bob"},
		},
		emails: map[string]string{
			"alice": "alice@example.com",
			"bob":   "bob@example.com",
			"lee":   "lee@example.com",
			"sam":   "sam@example.com",
			// carol has no address.
		},
	}
}

func (d *testDir) Groups(user string) []string {
	var out []string
	for g, ms := range d.members {
		if slices.Contains(ms, user) {
			out = append(out, g)
		}
	}
	return out
}

func (d *testDir) Email(user string) string      { return d.emails[user] }
func (d *testDir) Members(group string) []string { return d.members[group] }

func (d *testDir) RequestInfo(ctx context.Context, id string) (*mayfly.Request, error) {
	var r *mayfly.Request
	err := d.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = tx.GetRequest(id)
		return err
	})
	return r, err
}

var t0 = time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC)

// pendingRequest returns a request by alice waiting for one dba approval.
func pendingRequest(id string) *mayfly.Request {
	return &mayfly.Request{
		ID: id, Requester: "alice", Target: "pg-prod", Grant: "readonly", Reason: "investigate INC-42",
		Duration: time.Hour, State: mayfly.RequestPending, Policy: "eng-read", ApprovalsRequired: 1,
		ApproverGroups: []string{"dba"}, Steps: []mayfly.ApprovalStep{{Approvals: 1, ApproverGroups: []string{"dba"}}},
		CreatedAt: t0,
	}
}

// createRequest stores r with its request.create event, as the broker does.
func createRequest(t *testing.T, s mayfly.Store, r *mayfly.Request, data map[string]string) {
	t.Helper()
	if data == nil {
		data = map[string]string{"duration": r.Duration.String(), "policy": r.Policy, "decision": "approval"}
	}
	err := s.Update(context.Background(), func(tx mayfly.Tx) error {
		if err := tx.CreateRequest(r); err != nil {
			return err
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: t0, Actor: r.Requester, Action: "request.create",
			Subject: "request:" + r.ID, Target: r.Target, RequestID: r.ID, Reason: r.Reason, Data: data})
	})
	if err != nil {
		t.Fatalf("create request %s: %v", r.ID, err)
	}
}

// appendEvent appends one audit event about request id.
func appendEvent(t *testing.T, s mayfly.Store, e *mayfly.AuditEvent) {
	t.Helper()
	if e.Time.IsZero() {
		e.Time = t0
	}
	if e.Subject == "" {
		e.Subject = "request:" + e.RequestID
	}
	if err := s.Update(context.Background(), func(tx mayfly.Tx) error { return tx.AppendAudit(e) }); err != nil {
		t.Fatalf("append %s: %v", e.Action, err)
	}
}

// fast makes a notifier poll and retry quickly.
func fast(c Config) Config {
	c.PollInterval = 20 * time.Millisecond
	c.MaxBackoff = 40 * time.Millisecond
	return c
}

var testLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// start creates a notifier for c and runs it until the test ends.
func start(t *testing.T, s mayfly.Store, c Config, dir Directory, env map[string]string) *Notifier {
	t.Helper()
	n, err := New(s, fast(c), dir, func(k string) string { return env[k] }, testLog)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n.minBackoff = 5 * time.Millisecond
	run(t, n)
	return n
}

// run runs n until the test ends and waits for it to stop.
func run(t *testing.T, n *Notifier) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitCursor waits until channel name has stored its cursor, so events
// appended afterwards are delivered.
func waitCursor(t *testing.T, s mayfly.Store, name string) int64 {
	t.Helper()
	var got string
	waitFor(t, "cursor of "+name, func() bool {
		err := s.View(context.Background(), func(tx mayfly.Tx) error {
			var err error
			got, err = tx.GetSetting("notify_cursor:" + name)
			return err
		})
		return err == nil
	})
	var seq int64
	for _, c := range got {
		seq = seq*10 + int64(c-'0')
	}
	return seq
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hook is a webhook receiver that checks signatures.
type hook struct {
	srv    *httptest.Server
	secret []byte
	// failing makes it answer 500 while set.
	failing  atomic.Bool
	attempts atomic.Int64
	// slow holds each answer this long after recording the delivery, as
	// a receiver that acts before its answer arrives.
	slow atomic.Int64

	mu     sync.Mutex
	got    []Payload
	slack  []slackMessage
	badSig int
}

func newHook(t *testing.T, secret string) *hook {
	t.Helper()
	h := &hook{secret: []byte(secret)}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) serve(w http.ResponseWriter, r *http.Request) {
	h.attempts.Add(1)
	body, _ := io.ReadAll(r.Body)
	if h.failing.Load() {
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, "/slack") {
		var m slackMessage
		if err := json.Unmarshal(body, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.slack = append(h.slack, m)
		return
	}
	want := Sign(h.secret, body)
	if !hmac.Equal([]byte(r.Header.Get(SignatureHeader)), []byte(want)) {
		h.badSig++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Header.Get("X-Mayfly-Delivery") != p.ID {
		http.Error(w, "delivery header mismatch", http.StatusBadRequest)
		return
	}
	h.got = append(h.got, p)
	if d := time.Duration(h.slow.Load()); d > 0 {
		h.mu.Unlock()
		time.Sleep(d)
		h.mu.Lock()
	}
}

func (h *hook) payloads() []Payload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

func (h *hook) slackMessages() []slackMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.slack)
}

func users(p Payload) []string {
	var out []string
	for _, r := range p.Recipients {
		out = append(out, r.User)
	}
	return out
}

func ids(ps []Payload) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

func newBenchServer(b *testing.B, h *hook) *httptest.Server {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(h.serve))
	b.Cleanup(srv.Close)
	return srv
}
