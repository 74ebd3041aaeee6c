package notify

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func webhookConfig(h *hook) Config {
	return Config{
		BaseURL:        "https://mayfly.example.com/",
		SecurityGroups: []string{"sec"},
		Channels:       []Channel{{Name: "hook", Type: TypeWebhook, URL: h.srv.URL + "/hook", SecretEnv: "HOOK_SECRET"}},
	}
}

var hookEnv = map[string]string{"HOOK_SECRET": "s3cret"}

func TestWebhookApprovalFlow(t *testing.T) {
	db := openStore(t)
	dir := newDir(db)
	// History from before notifications were enabled is not replayed.
	createRequest(t, db, pendingRequest("req_old"), nil)

	h := newHook(t, "s3cret")
	start(t, db, webhookConfig(h), dir, hookEnv)
	if got, want := waitCursor(t, db, "hook"), int64(1); got != want {
		t.Fatalf("initial cursor = %d; want %d (the last event)", got, want)
	}

	createRequest(t, db, pendingRequest("req_1"), nil)
	appendEvent(t, db, &mayfly.AuditEvent{Actor: "bob", Action: "request.deny", RequestID: "req_1", Reason: "use the replica"})
	waitFor(t, "two webhook deliveries", func() bool { return len(h.payloads()) >= 2 })

	got := h.payloads()
	if len(got) != 2 {
		t.Fatalf("got %d deliveries (%v); want 2", len(got), ids(got))
	}
	need := got[0]
	if need.Type != TypeApprovalNeeded {
		t.Errorf("first type = %q; want %q", need.Type, TypeApprovalNeeded)
	}
	if got, want := users(need), []string{"bob", "carol"}; !slices.Equal(got, want) {
		t.Errorf("approval_needed recipients = %v; want %v (dba members but the requester)", got, want)
	}
	if need.Request == nil || need.Request.ID != "req_1" || need.Request.Target != "pg-prod" ||
		need.Request.Grant != "readonly" || need.Request.DurationSeconds != 3600 || need.Request.Reason != "investigate INC-42" {
		t.Errorf("request = %+v; want req_1 readonly on pg-prod for 1h with its reason", need.Request)
	}
	for _, s := range []string{"alice asks for readonly on pg-prod for 1h", "investigate INC-42", "req_1",
		"mayfly approve req_1", `mayfly deny req_1 --reason "WHY"`, "https://mayfly.example.com/app/approvals"} {
		if !strings.Contains(need.Text, s) {
			t.Errorf("approval_needed text lacks %q:\n%s", s, need.Text)
		}
	}
	if need.URL != "https://mayfly.example.com/app/approvals" {
		t.Errorf("url = %q", need.URL)
	}
	if need.Urgent {
		t.Error("an ordinary request is marked urgent")
	}

	deny := got[1]
	if deny.Type != TypeDenied || !slices.Equal(users(deny), []string{"alice"}) {
		t.Errorf("second = %s to %v; want denied to [alice]", deny.Type, users(deny))
	}
	if !strings.Contains(deny.Text, "bob denied your request") || !strings.Contains(deny.Text, "use the replica") {
		t.Errorf("denied text:\n%s", deny.Text)
	}
	if h.badSig != 0 {
		t.Errorf("%d deliveries had a bad signature", h.badSig)
	}
	// The cursor is saved just after the delivery the hook has seen.
	var cur int64
	waitFor(t, "the cursor to pass the delivered events", func() bool {
		cur = waitCursor(t, db, "hook")
		return cur >= 3
	})
	if cur != 3 {
		t.Errorf("cursor = %d; want 3", cur)
	}
}

func TestMultiStepApproval(t *testing.T) {
	db := openStore(t)
	h := newHook(t, "s3cret")
	start(t, db, webhookConfig(h), newDir(db), hookEnv)
	waitCursor(t, db, "hook")

	r := pendingRequest("req_2")
	r.Steps = []mayfly.ApprovalStep{{Approvals: 1, ApproverGroups: []string{"dba"}}, {Approvals: 1, ApproverGroups: []string{"leads"}}}
	createRequest(t, db, r, nil)
	appendEvent(t, db, &mayfly.AuditEvent{Actor: "bob", Action: "request.approval", RequestID: "req_2",
		Data: map[string]string{"approvals": "1/1", "step": "1/2"}})
	appendEvent(t, db, &mayfly.AuditEvent{Actor: "lee", Action: "request.approval", RequestID: "req_2",
		Data: map[string]string{"approvals": "1/1", "step": "2/2"}})
	appendEvent(t, db, &mayfly.AuditEvent{Actor: "lee", Action: "request.approve", RequestID: "req_2",
		Data: map[string]string{"approvers": "bob,lee"}})
	waitFor(t, "four deliveries", func() bool { return len(h.payloads()) >= 4 })

	type sent struct {
		typ string
		to  string
	}
	var got []sent
	for _, p := range h.payloads() {
		got = append(got, sent{p.Type, strings.Join(users(p), ",")})
	}
	want := []sent{
		{TypeApprovalNeeded, "bob,carol"}, // step 1: dba
		{TypeApproval, "alice"},           // bob's approval
		{TypeApprovalNeeded, "lee"},       // step 2: leads
		{TypeApproved, "alice"},           // fully approved
	}
	if !slices.Equal(got, want) {
		t.Errorf("deliveries = %v; want %v", got, want)
	}
	if p := h.payloads()[3]; !strings.Contains(p.Text, "mayfly creds req_2") {
		t.Errorf("approved text lacks the creds command:\n%s", p.Text)
	}
}

func TestSlack(t *testing.T) {
	db := openStore(t)
	h := newHook(t, "")
	c := Config{Channels: []Channel{{Name: "chat", Type: TypeSlack, URLEnv: "SLACK_URL"}}}
	start(t, db, c, newDir(db), map[string]string{"SLACK_URL": h.srv.URL + "/slack"})
	waitCursor(t, db, "chat")

	r := pendingRequest("req_3")
	r.Reason = "fix <!channel> & <https://evil.example|click>"
	createRequest(t, db, r, nil)
	waitFor(t, "a slack message", func() bool { return len(h.slackMessages()) >= 1 })

	m := h.slackMessages()[0]
	if !strings.Contains(m.Text, "alice asks for readonly on pg-prod for 1h") {
		t.Errorf("text = %q", m.Text)
	}
	var all strings.Builder
	for _, b := range m.Blocks {
		if b.Text != nil {
			all.WriteString(b.Text.Text + "\n")
		}
		for _, f := range b.Fields {
			all.WriteString(f.Text + "\n")
		}
		for _, e := range b.Elements {
			all.WriteString(e.Text + "\n")
		}
	}
	s := all.String()
	for _, want := range []string{"*Target*\npg-prod", "*Grant*\nreadonly", "*Duration*\n1h",
		"fix &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;", "`mayfly approve req_3`", "For: bob, carol"} {
		if !strings.Contains(s, want) {
			t.Errorf("slack blocks lack %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "<!channel>") {
		t.Errorf("slack blocks carry an unescaped mention:\n%s", s)
	}
}

// A channel that answers 500 receives every message, in order, once it is
// back.
func TestChannelDownThenBack(t *testing.T) {
	db := openStore(t)
	h := newHook(t, "s3cret")
	h.failing.Store(true)
	start(t, db, webhookConfig(h), newDir(db), hookEnv)
	waitCursor(t, db, "hook")

	for i := range 3 {
		createRequest(t, db, pendingRequest(fmt.Sprintf("req_%d", i)), nil)
	}
	waitFor(t, "failed webhook attempts", func() bool { return h.attempts.Load() >= 5 })
	h.failing.Store(false)
	waitFor(t, "three webhook deliveries", func() bool { return len(h.payloads()) >= 3 })

	time.Sleep(100 * time.Millisecond) // would-be duplicates have time to arrive
	if got, want := ids(h.payloads()), []string{"1.approval_needed", "2.approval_needed", "3.approval_needed"}; !slices.Equal(got, want) {
		t.Errorf("webhook ids = %v; want %v", got, want)
	}
}

func TestIndependentChannels(t *testing.T) {
	db := openStore(t)
	down := newHook(t, "s3cret")
	down.failing.Store(true)
	up := newHook(t, "")
	c := webhookConfig(down)
	c.Channels = append(c.Channels, Channel{Name: "chat", Type: TypeSlack, URL: up.srv.URL + "/slack"})
	start(t, db, c, newDir(db), hookEnv)
	waitCursor(t, db, "hook")
	waitCursor(t, db, "chat")

	createRequest(t, db, pendingRequest("req_a"), nil)
	createRequest(t, db, pendingRequest("req_b"), nil)
	waitFor(t, "slack despite the webhook being down", func() bool { return len(up.slackMessages()) == 2 })
	if got := len(down.payloads()); got != 0 {
		t.Errorf("failing webhook recorded %d payloads", got)
	}
}

// runHook runs a notifier of c on db until the returned stop is called
// (or the test ends), once its "hook" channel has stored its cursor.
func runHook(t *testing.T, db mayfly.Store, c Config) (stop func()) {
	t.Helper()
	n, err := New(db, fast(c), newDir(db), func(k string) string { return hookEnv[k] }, testLog)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stop = run(t, n)
	waitCursor(t, db, "hook")
	return stop
}

func TestCursorSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mayfly.db")
	db := openStoreAt(t, path)
	h := newHook(t, "s3cret")
	c := webhookConfig(h)
	stop := runHook(t, db, c)
	createRequest(t, db, pendingRequest("req_1"), nil)
	createRequest(t, db, pendingRequest("req_2"), nil)
	waitFor(t, "two deliveries", func() bool { return len(h.payloads()) == 2 })
	stop()

	// While Mayfly is down, more happens.
	createRequest(t, db, pendingRequest("req_3"), nil)
	appendEvent(t, db, &mayfly.AuditEvent{Actor: "bob", Action: "request.deny", RequestID: "req_1", Reason: "no"})
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	db2 := openStoreAt(t, path)
	start(t, db2, c, newDir(db2), hookEnv)
	waitFor(t, "four deliveries", func() bool { return len(h.payloads()) >= 4 })
	time.Sleep(100 * time.Millisecond)
	// Delivery is at least once: a delivery cut short by the stop may come
	// again (receivers deduplicate by id); none is lost and order holds.
	want := []string{"1.approval_needed", "2.approval_needed", "3.approval_needed", "4.denied"}
	if got := slices.Compact(ids(h.payloads())); !slices.Equal(got, want) {
		t.Errorf("ids = %v; want %v", got, want)
	}
}

// TestStopFinishesDelivery: a notifier stopped while a receiver has taken
// a delivery but not yet answered finishes that attempt and keeps its
// cursor past it, so the next run does not deliver it again.
func TestStopFinishesDelivery(t *testing.T) {
	db := openStore(t)
	h := newHook(t, "s3cret")
	c := webhookConfig(h)
	stop := runHook(t, db, c)
	h.slow.Store(int64(300 * time.Millisecond))
	createRequest(t, db, pendingRequest("req_1"), nil)
	waitFor(t, "the delivery taken", func() bool { return len(h.payloads()) == 1 })
	stop() // while the receiver has not answered
	h.slow.Store(0)

	start(t, db, c, newDir(db), hookEnv)
	createRequest(t, db, pendingRequest("req_2"), nil)
	waitFor(t, "the next delivery", func() bool { return len(h.payloads()) >= 2 })
	time.Sleep(100 * time.Millisecond)
	if got, want := ids(h.payloads()), []string{"1.approval_needed", "2.approval_needed"}; !slices.Equal(got, want) {
		t.Errorf("ids = %v; want %v, each once", got, want)
	}
}

func TestBreakGlassWebhook(t *testing.T) {
	db := openStore(t)
	h := newHook(t, "s3cret")
	start(t, db, webhookConfig(h), newDir(db), hookEnv)
	waitCursor(t, db, "hook")

	r := pendingRequest("req_bg")
	r.State = mayfly.RequestApproved
	createRequest(t, db, r, map[string]string{"duration": "1h0m0s", "decision": "break_glass", "break_glass": "true"})
	appendEvent(t, db, &mayfly.AuditEvent{Actor: "alice", Action: "request.approve", RequestID: "req_bg",
		Data: map[string]string{"auto": "true"}})
	createRequest(t, db, pendingRequest("req_next"), nil)
	waitFor(t, "two deliveries", func() bool { return len(h.payloads()) >= 2 })

	got := h.payloads()
	p := got[0]
	if p.Type != TypeBreakGlass || !p.Urgent {
		t.Fatalf("first = %s urgent=%v; want urgent break_glass", p.Type, p.Urgent)
	}
	if got, want := users(p), []string{"bob", "carol", "sam"}; !slices.Equal(got, want) {
		t.Errorf("break-glass recipients = %v; want %v (approvers and security, not the requester)", got, want)
	}
	if !strings.Contains(p.Text, "BREAK-GLASS") && !strings.Contains(p.Subject, "BREAK-GLASS") {
		t.Errorf("subject %q does not say break-glass", p.Subject)
	}
	// The automatic approval is not announced: the next delivery is req_next.
	if got[1].Request == nil || got[1].Request.ID != "req_next" {
		t.Errorf("second delivery = %s %+v; want req_next", got[1].Type, got[1].Request)
	}
}

func TestExpiryWarning(t *testing.T) {
	db := openStore(t)
	h := newHook(t, "s3cret")
	c := webhookConfig(h)
	c.ExpiryWarning = 10 * time.Minute
	now := time.Now().UTC()
	r := pendingRequest("req_l")
	r.State = mayfly.RequestApproved
	createRequest(t, db, r, nil)
	lease := func(id string, created, expires time.Time, state mayfly.LeaseState) *mayfly.Lease {
		return &mayfly.Lease{ID: id, RequestID: "req_l", Requester: "alice", Target: "pg-prod", Grant: "readonly",
			Username: "mf_alice_" + id, State: state, CreatedAt: created, ExpiresAt: expires, DueAt: expires}
	}
	leases := []*mayfly.Lease{
		lease("l_soon", now.Add(-time.Hour), now.Add(3*time.Minute), mayfly.LeaseActive),
		lease("l_sooner", now.Add(-time.Hour), now.Add(2*time.Minute), mayfly.LeaseActive),
		lease("l_later", now.Add(-time.Hour), now.Add(time.Hour), mayfly.LeaseActive),        // outside the window
		lease("l_short", now.Add(-time.Minute), now.Add(4*time.Minute), mayfly.LeaseActive),  // granted for 5m < 10m
		lease("l_gone", now.Add(-time.Hour), now.Add(-time.Minute), mayfly.LeaseActive),      // expired, not yet revoked
		lease("l_revoking", now.Add(-time.Hour), now.Add(time.Minute), mayfly.LeaseRevoking), // not active
	}
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		for _, l := range leases {
			if err := tx.CreateLease(l); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("create leases: %v", err)
	}

	n, err := New(db, fast(c), newDir(db), func(k string) string { return hookEnv[k] }, testLog)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stop := run(t, n)
	waitFor(t, "two warnings", func() bool { return len(h.payloads()) >= 2 })
	time.Sleep(100 * time.Millisecond) // several more polls: no repeats
	stop()

	// A restart does not warn again.
	start(t, db, c, newDir(db), hookEnv)
	time.Sleep(150 * time.Millisecond)

	got := h.payloads()
	var leaseIDs []string
	for _, p := range got {
		if p.Type != TypeExpiring || p.Lease == nil {
			t.Fatalf("unexpected delivery %s", p.ID)
		}
		leaseIDs = append(leaseIDs, p.Lease.ID)
	}
	if want := []string{"l_sooner", "l_soon"}; !slices.Equal(leaseIDs, want) {
		t.Fatalf("warned %v; want %v", leaseIDs, want)
	}
	p := got[0]
	if !slices.Equal(users(p), []string{"alice"}) {
		t.Errorf("recipients = %v; want [alice]", users(p))
	}
	for _, s := range []string{"expires in", "mf_alice_l_sooner", "mayfly done l_sooner", "mayfly request pg-prod/readonly --for 1h"} {
		if !strings.Contains(p.Text, s) {
			t.Errorf("warning lacks %q:\n%s", s, p.Text)
		}
	}
}

func TestEventsFilter(t *testing.T) {
	db := openStore(t)
	h := newHook(t, "s3cret")
	c := webhookConfig(h)
	c.Channels[0].Events = []string{TypeDenied}
	start(t, db, c, newDir(db), hookEnv)
	waitCursor(t, db, "hook")
	createRequest(t, db, pendingRequest("req_1"), nil)
	appendEvent(t, db, &mayfly.AuditEvent{Actor: "bob", Action: "request.deny", RequestID: "req_1", Reason: "no"})
	waitFor(t, "one delivery", func() bool { return len(h.payloads()) >= 1 })
	time.Sleep(50 * time.Millisecond)
	if got, want := ids(h.payloads()), []string{"2.denied"}; !slices.Equal(got, want) {
		t.Errorf("ids = %v; want %v", got, want)
	}
}

func TestLastSeq(t *testing.T) {
	db := openStore(t)
	ctx := context.Background()
	count := 0
	for _, n := range []int{0, 1, 2, 3, 7, 8, 9, 64, 100} {
		for count < n {
			appendEvent(t, db, &mayfly.AuditEvent{Actor: "x", Action: "test", Subject: "user:x"})
			count++
		}
		var got int64
		if err := db.View(ctx, func(tx mayfly.Tx) error {
			var err error
			got, err = lastSeq(tx)
			return err
		}); err != nil {
			t.Fatalf("lastSeq: %v", err)
		}
		if got != int64(n) {
			t.Errorf("lastSeq with %d events = %d; want %d", n, got, n)
		}
	}
}

func TestNotifyWakes(t *testing.T) {
	db := openStore(t)
	h := newHook(t, "s3cret")
	c := webhookConfig(h)
	n, err := New(db, c, newDir(db), func(k string) string { return hookEnv[k] }, testLog) // 10s poll
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	run(t, n)
	waitCursor(t, db, "hook")
	time.Sleep(20 * time.Millisecond) // let the first pass finish and sleep
	createRequest(t, db, pendingRequest("req_w"), nil)
	n.Notify()
	n.Notify() // never blocks
	deadline := time.Now().Add(2 * time.Second)
	for len(h.payloads()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if len(h.payloads()) != 1 {
		t.Fatalf("Notify did not wake the channel: %d deliveries", len(h.payloads()))
	}
}

func TestRunTwice(t *testing.T) {
	db := openStore(t)
	n, err := New(db, Config{}, newDir(db), nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	run(t, n)
	waitFor(t, "running", n.running.Load)
	if err := n.Run(context.Background()); err == nil {
		t.Error("second Run succeeded; want an error")
	}
}

func TestBackoff(t *testing.T) {
	n := &Notifier{minBackoff: time.Second, maxBackoff: 10 * time.Second}
	for _, tt := range []struct {
		attempt int
		want    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {4, 8 * time.Second}, {5, 10 * time.Second}, {50, 10 * time.Second}} {
		if got := n.backoff(tt.attempt); got != tt.want {
			t.Errorf("backoff(%d) = %v; want %v", tt.attempt, got, tt.want)
		}
	}
}

func TestCorruptCursor(t *testing.T) {
	db := openStore(t)
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.PutSetting("notify_cursor:hook", "banana")
	}); err != nil {
		t.Fatal(err)
	}
	h := newHook(t, "s3cret")
	n, err := New(db, webhookConfig(h), newDir(db), func(k string) string { return hookEnv[k] }, testLog)
	if err != nil {
		t.Fatal(err)
	}
	err = n.workers[0].loadCursor(context.Background())
	if err == nil || !strings.Contains(err.Error(), "notify_cursor:hook") {
		t.Errorf("loadCursor = %v; want an error naming the setting", err)
	}
}
