package slackapp

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
)

func TestApproveAndDenySQLite(t *testing.T) { testApproveAndDeny(t, openSQLite(t)) }

func TestApproveAndDenyPostgres(t *testing.T) { testApproveAndDeny(t, openPostgres(t)) }

func wantContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s = %q; want it to contain %q", what, got, w)
		}
	}
}

// unchanged checks that request id is still pending without approvals.
func (e *env) unchanged(id, after string) {
	e.t.Helper()
	r := e.get(id)
	if r.State != mayfly.RequestPending || len(r.Approvers) != 0 {
		e.t.Errorf("after %s: request is %s approved by %v; want pending with no approvals", after, r.State, r.Approvers)
	}
}

func testApproveAndDeny(t *testing.T, st mayfly.Store) {
	e := newEnv(t, st, nil)
	r := e.request("alice", "readonly", "investigate INC-42 <!channel> <https://evil.example|docs>")

	posted := e.fake.waitCalls("chat.postMessage", 1)[0]
	if got := posted.Form.Get("channel"); got != "#db-approvals" {
		t.Errorf("approval message posted to %q; want the policy's channel #db-approvals", got)
	}
	golden(t, "approval_pending", posted)

	// Refused, changing nothing: a wrong signature, an old timestamp, a
	// click by someone who may not decide, by the requester, by an
	// unknown Slack user.
	body := e.payload("U0BOB", ActionApprove, r.ID)
	now := time.Now().Unix()
	if status, out := e.post(body, now, sign("not-the-signing-secret", now, body)); status != http.StatusUnauthorized {
		t.Errorf("wrong signature: status %d (%s); want 401", status, out)
	}
	if status, out := e.post(body, now, "v0=zz"); status != http.StatusUnauthorized {
		t.Errorf("malformed signature: status %d (%s); want 401", status, out)
	}
	old := now - 6*60
	if status, out := e.post(body, old, sign(signingSecret, old, body)); status != http.StatusUnauthorized || !strings.Contains(out, "5 minutes") {
		t.Errorf("timestamp 6 minutes old: status %d (%s); want 401 naming the 5 minutes", status, out)
	}
	tampered := strings.Replace(body, "U0BOB", "U0CAROL", 1)
	if status, _ := e.post(tampered, now, sign(signingSecret, now, body)); status != http.StatusUnauthorized {
		t.Errorf("body changed after signing: status %d; want 401", status)
	}
	e.unchanged(r.ID, "refused requests")
	if n := len(e.fake.callsOf("response_url")); n != 0 {
		t.Errorf("refused requests got %d replies; want none", n)
	}

	wantContains(t, "reply to dave (not an approver)", e.click("U0DAVE", ActionApprove, r.ID), "dave may not decide request", "approvers from dba", "Nothing was changed")
	wantContains(t, "reply to dave's deny", e.click("U0DAVE", ActionDeny, r.ID), "dave may not decide request", "Nothing was changed")
	wantContains(t, "reply to alice (the requester)", e.click("U0ALICE", ActionApprove, r.ID), "cannot approve your own request")
	wantContains(t, "reply to alice's deny", e.click("U0ALICE", ActionDeny, r.ID), "cannot deny your own request")
	wantContains(t, "reply to an unlinked Slack user", e.click("U0MALLORY", ActionApprove, r.ID), "not linked to a Mayfly user", "slack_id U0MALLORY")
	wantContains(t, "reply to erin without match_email", e.click("U0ERIN", ActionApprove, r.ID), "not linked to a Mayfly user")
	e.unchanged(r.ID, "clicks by people who may not decide")

	// bob approves: the message is updated in place, alice is told.
	body = e.payload("U0BOB", ActionApprove, r.ID)
	ts := time.Now().Unix()
	sig := sign(signingSecret, ts, body)
	if status, out := e.post(body, ts, sig); status != http.StatusOK {
		t.Fatalf("bob's signed approval: status %d: %s", status, out)
	}
	wantContains(t, "reply to bob", e.fake.waitCalls("response_url", 7)[6].JSON["text"].(string), "You approved request", "it is approved")
	if got := e.get(r.ID); got.State != mayfly.RequestApproved || len(got.Approvers) != 1 || got.Approvers[0] != "bob" {
		t.Fatalf("after bob's click: %s approved by %v; want approved by bob", got.State, got.Approvers)
	}
	upd := e.fake.waitCalls("chat.update", 1)[0]
	if upd.Form.Get("channel") != "C0DBAPPROVALS" || upd.Form.Get("ts") != "1700000000.000001" {
		t.Errorf("chat.update of channel %q ts %q; want the posted message C0DBAPPROVALS 1700000000.000001", upd.Form.Get("channel"), upd.Form.Get("ts"))
	}
	golden(t, "approval_approved", upd)
	open := e.fake.waitCalls("conversations.open", 1)[0]
	if open.Form.Get("users") != "U0ALICE" {
		t.Errorf("conversations.open users = %q; want U0ALICE", open.Form.Get("users"))
	}
	dm := e.fake.waitCalls("chat.postMessage", 2)[1]
	golden(t, "dm_approved", dm)

	// The same signed request again is a replay, even within the window.
	if status, out := e.post(body, ts, sig); status != http.StatusUnauthorized || !strings.Contains(out, "replay") {
		t.Errorf("replayed approval: status %d (%s); want 401 naming the replay", status, out)
	}

	// bob denies another request in Slack: Deny opens a form for the
	// reason; submitting it denies.
	r2 := e.request("alice", "readonly", "read the orders table")
	e.fake.waitCalls("chat.postMessage", 3)
	if n := len(e.fake.callsOf("views.open")); n != 0 {
		t.Errorf("%d denial forms opened for people who may not deny; want none", n)
	}
	if status, out := e.send(e.payload("U0BOB", ActionDeny, r2.ID)); status != http.StatusOK {
		t.Fatalf("bob's Deny click: %d %s", status, out)
	}
	form := e.fake.waitCalls("views.open", 1)[0].JSON
	if form["trigger_id"] != "12345.98765.abcd" {
		t.Errorf("views.open trigger_id = %v; want the click's", form["trigger_id"])
	}
	goldenJSON(t, "deny_form", form["view"])
	if got := e.get(r2.ID); got.State != mayfly.RequestPending {
		t.Fatalf("opening the denial form changed the request to %s", got.State)
	}
	if status, out := e.submit("U0BOB", r2.ID, "   "); status != http.StatusOK || !strings.Contains(out, `"response_action":"errors"`) || !strings.Contains(out, "a denial needs a reason") {
		t.Errorf("denial without a reason: %d %s; want the form to show the error", status, out)
	}
	if status, out := e.submit("U0DAVE", r2.ID, "no"); !strings.Contains(out, "dave may not decide") {
		t.Errorf("denial form submitted by dave: %d %s; want the form to show he may not decide", status, out)
	}
	e.unchanged(r2.ID, "refused denials")
	if status, out := e.submit("U0BOB", r2.ID, "not during the freeze <@U0ALL>"); status != http.StatusOK || strings.TrimSpace(out) != "" {
		t.Errorf("bob's denial: %d %q; want 200 with an empty body (the form closes)", status, out)
	}
	got := e.get(r2.ID)
	if got.State != mayfly.RequestDenied || got.Decider != "bob" || got.DecisionReason != "not during the freeze <@U0ALL>" {
		t.Errorf("after bob's deny: %s by %q for %q; want denied by bob for his reason", got.State, got.Decider, got.DecisionReason)
	}
	golden(t, "approval_denied", e.fake.waitCalls("chat.update", 2)[1])
	golden(t, "dm_denied", e.fake.waitCalls("chat.postMessage", 4)[3])

	// Decided elsewhere (the API, the CLI, the web app): the message is
	// updated all the same.
	r3 := e.request("alice", "readonly", "check replication")
	e.fake.waitCalls("chat.postMessage", 5)
	if _, err := e.b.Approve(e.ctx, broker.Caller{User: "carol", Groups: users["carol"].groups}, r3.ID, ""); err != nil {
		t.Fatal(err)
	}
	upd3 := e.fake.waitCalls("chat.update", 3)[2]
	if n := len(e.fake.callsOf("chat.update")); n != 3 {
		t.Errorf("%d chat.update calls; want 3, one per decision", n)
	}
	wantContains(t, "message after an approval through the API", upd3.Form.Get("blocks"), "Approved* by carol")
	if strings.Contains(upd3.Form.Get("blocks"), ActionApprove) {
		t.Error("a decided request's message still has the Approve button")
	}
}

// TestStepsEachApproverOnceAndMatchEmail: a request of two steps; the
// message follows each step; one approver counts once; the second step
// is another group's; a Slack user is matched by confirmed email only.
func TestStepsEachApproverOnceAndMatchEmail(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) { c.MatchEmail = true })
	e.fake.users["U0ERIN"] = fakeUser{ID: "U0ERIN", Email: "erin@example.com", Confirmed: true}
	e.fake.users["U0SPOOF"] = fakeUser{ID: "U0SPOOF", Email: "erin@example.com", Confirmed: false}
	r := e.request("alice", "write", "schema migration")
	posted := e.fake.waitCalls("chat.postMessage", 1)[0]
	if got := posted.Form.Get("channel"); got != "#access-requests" {
		t.Errorf("approval message of a policy without slack_channel posted to %q; want default_channel #access-requests", got)
	}
	wantContains(t, "pending message", posted.Form.Get("blocks"), "step 1 of 2", "from dba")

	wantContains(t, "reply to carol", e.click("U0CAROL", ActionApprove, r.ID), "You approved request", "step 2 of 2")
	golden(t, "approval_step2", e.fake.waitCalls("chat.update", 1)[0])

	wantContains(t, "reply to carol's second click", e.click("U0CAROL", ActionApprove, r.ID), "already approved", "one approver counts once")
	wantContains(t, "reply to bob at step 2", e.click("U0BOB", ActionApprove, r.ID), "not an eligible approver")
	wantContains(t, "reply to an unconfirmed email", e.click("U0SPOOF", ActionApprove, r.ID), "no confirmed email")
	if got := e.get(r.ID); got.State != mayfly.RequestPending || got.Step != 1 || len(got.Approvers) != 1 {
		t.Fatalf("after refused clicks: %s step %d approvers %v; want pending at step 2 with carol's approval only", got.State, got.Step+1, got.Approvers)
	}
	wantContains(t, "reply to erin", e.click("U0ERIN", ActionApprove, r.ID), "it is approved")
	if got := e.get(r.ID); got.State != mayfly.RequestApproved {
		t.Errorf("after erin's click: %s; want approved", got.State)
	}
	if len(e.fake.callsOf("users.info")) == 0 {
		t.Error("erin was matched without users.info")
	}
	wantContains(t, "final message", e.fake.waitCalls("chat.update", 2)[1].Form.Get("blocks"), "Approved* by carol, erin")
}

// TestLapseAndExpiryDirectMessages: the requester is told when a request
// lapses and when a lease is about to expire; match_email finds a
// requester's Slack account by email.
func TestLapseAndExpiryDirectMessages(t *testing.T) {
	e := newEnv(t, openSQLite(t), nil)
	r := e.request("alice", "admin", "rotate keys")
	e.fake.waitCalls("chat.postMessage", 1)
	time.Sleep(1100 * time.Millisecond)
	if n, err := e.b.LapseRequests(e.ctx); err != nil || n != 1 {
		t.Fatalf("LapseRequests = %d, %v; want 1", n, err)
	}
	wantContains(t, "message after the lapse", e.fake.waitCalls("chat.update", 1)[0].Form.Get("blocks"), "Lapsed")
	golden(t, "dm_lapsed", e.fake.waitCalls("chat.postMessage", 2)[1])

	now := time.Now().UTC()
	l := &mayfly.Lease{ID: "lse_expiring", RequestID: r.ID, Requester: "alice", Target: "pg", Grant: "admin", Username: "mf_alice_x1",
		State: mayfly.LeaseActive, CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(2 * time.Minute), DueAt: now.Add(2 * time.Minute)}
	if err := e.store.Update(e.ctx, func(tx mayfly.Tx) error { return tx.CreateLease(l) }); err != nil {
		t.Fatal(err)
	}
	e.app.Notify()
	dm := e.fake.waitCalls("chat.postMessage", 3)[2]
	for _, c := range e.fake.callsOf("chat.postMessage") {
		t.Logf("posted %s: %s", c.Form.Get("channel"), c.Form.Get("text"))
	}
	t.Log(e.logs.String())
	wantContains(t, "expiry warning", dm.Form.Get("text"), "Expiring in", "admin on pg")
	wantContains(t, "expiry warning blocks", dm.Form.Get("blocks"), "mf_alice_x1", "mayfly extend lse_expiring")
	if dm.Form.Get("channel") != "D0ALICE" {
		t.Errorf("expiry warning sent to %q; want alice's DM D0ALICE", dm.Form.Get("channel"))
	}
	// Warned once.
	e.app.Notify()
	time.Sleep(300 * time.Millisecond)
	if n := len(e.fake.callsOf("chat.postMessage")); n != 3 {
		t.Errorf("%d messages after another pass; want 3 (each lease warned once)", n)
	}
}

// TestReplayRefusedByAnotherReplica: two servers on one PostgreSQL store;
// a request accepted by one is refused by the other.
func TestReplayRefusedByAnotherReplica(t *testing.T) {
	st := openPostgres(t)
	e1 := newEnv(t, st, nil)
	e2 := newEnv(t, st, nil)
	r := e1.request("alice", "readonly", "replicas")
	body := e1.payload("U0BOB", ActionApprove, r.ID)
	ts := time.Now().Unix()
	sig := sign(signingSecret, ts, body)
	if status, out := e1.post(body, ts, sig); status != http.StatusOK {
		t.Fatalf("first delivery: %d %s", status, out)
	}
	if status, out := e2.post(body, ts, sig); status != http.StatusUnauthorized || !strings.Contains(out, "replay") {
		t.Errorf("replay to the other replica: status %d (%s); want 401 naming the replay", status, out)
	}
	if got := e1.get(r.ID); got.State != mayfly.RequestApproved || len(got.Approvers) != 1 {
		t.Errorf("request %s with approvers %v; want approved once", got.State, got.Approvers)
	}
}

// TestSocketMode: a click arrives over a Socket Mode websocket (whose
// URL comes from apps.connections.open on the fake API), is acknowledged
// and approves the request; the HTTP endpoint is off without a signing
// secret.
func TestSocketMode(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) { c.SigningSecretEnv = ""; c.AppTokenEnv = "SLACK_APP" })
	r := e.request("alice", "readonly", "over a socket")
	e.fake.waitCalls("chat.postMessage", 1)
	acks := make(chan map[string]any, 4)
	payload := e.payloadJSON("U0BOB", ActionApprove, r.ID)
	r2 := e.request("alice", "readonly", "the form over a socket")
	e.fake.waitCalls("chat.postMessage", 2)
	form, _ := json.Marshal(map[string]any{"type": "view_submission", "user": map[string]any{"id": "U0BOB"},
		"view": map[string]any{"id": "V0DENY", "type": "modal", "callback_id": "mayfly_deny", "private_metadata": r2.ID,
			"state": map[string]any{"values": map[string]any{"reason": map[string]any{"reason": map[string]any{"type": "plain_text_input", "value": " "}}}}}})
	e.fake.ws = func(c *websocket.Conn) {
		c.WriteJSON(map[string]any{"type": "hello", "num_connections": 1})
		c.WriteJSON(map[string]any{"type": "interactive", "envelope_id": "env-1", "payload": json.RawMessage(payload), "accepts_response_payload": false})
		c.WriteJSON(map[string]any{"type": "interactive", "envelope_id": "env-2", "payload": json.RawMessage(form), "accepts_response_payload": true})
		for {
			var m map[string]any
			if err := c.ReadJSON(&m); err != nil {
				return
			}
			acks <- m
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.app.RunSocketMode(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunSocketMode: %v", err)
		}
	}()
	select {
	case m := <-acks:
		if m["envelope_id"] != "env-1" {
			t.Errorf("acknowledgement %v; want envelope_id env-1", m)
		}
	case <-time.After(10 * time.Second):
		var methods []string
		for _, c := range e.fake.calls {
			methods = append(methods, c.Method)
		}
		t.Fatalf("no acknowledgement over the socket within 10s; calls %v log:\n%s", methods, e.logs.String())
	}
	select {
	case m := <-acks:
		b, _ := json.Marshal(m)
		wantContains(t, "acknowledgement of a denial form without a reason", string(b), `"envelope_id":"env-2"`, `"response_action":"errors"`, "a denial needs a reason")
	case <-time.After(10 * time.Second):
		t.Fatal("no acknowledgement of the form over the socket within 10s")
	}
	if got := e.get(r2.ID); got.State != mayfly.RequestPending {
		t.Errorf("a denial form without a reason left the request %s; want pending", got.State)
	}
	wantContains(t, "reply over socket mode", e.fake.waitCalls("response_url", 1)[0].JSON["text"].(string), "You approved request")
	if got := e.get(r.ID); got.State != mayfly.RequestApproved || got.Approvers[0] != "bob" {
		t.Errorf("after the click over the socket: %s by %v; want approved by bob", got.State, got.Approvers)
	}
	if len(e.fake.callsOf("apps.connections.open")) == 0 {
		t.Error("the socket URL did not come from apps.connections.open")
	}
	// HTTP is off without a signing secret.
	rec := httptest.NewRecorder()
	e.app.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, InteractionsPath, strings.NewReader("payload={}")))
	if rec.Code != http.StatusNotFound {
		t.Errorf("HTTP interactions without a signing secret: status %d; want 404", rec.Code)
	}
}

func FuzzParseBody(f *testing.F) {
	f.Add([]byte(`payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U0BOB%22%7D%2C%22actions%22%3A%5B%7B%22action_id%22%3A%22mayfly_approve%22%2C%22value%22%3A%22req_1%22%7D%5D%7D`))
	f.Add([]byte(`payload=`))
	f.Add([]byte(`payload={"type":"view_submission"}`))
	f.Add([]byte(`payload=%7B%22type%22%3A1%7D`))
	f.Add([]byte(`%zz`))
	f.Add([]byte(`payload={"type":"block_actions","user":{"id":"U0X"},"actions":[null,{"action_id":"mayfly_deny"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		cb, err := ParseBody(body)
		if err != nil {
			if cb != nil {
				t.Fatalf("ParseBody returned an interaction with error %v", err)
			}
			return
		}
		if cb.Type == "" {
			t.Fatal("ParseBody accepted an interaction without a type")
		}
		if cb.Type == "block_actions" && !ValidUserID(cb.User.ID) {
			t.Fatalf("ParseBody accepted block_actions with user id %q", cb.User.ID)
		}
	})
}

// TestSuspendedApproverDecidesNothing: a suspended user's clicks are
// refused, as their tokens are.
func TestSuspendedApproverDecidesNothing(t *testing.T) {
	e := newEnv(t, openSQLite(t), nil)
	r := e.request("alice", "readonly", "while bob is away")
	e.fake.waitCalls("chat.postMessage", 1)
	if _, _, err := e.b.SetUserStatus(e.ctx, broker.System, "bob", broker.UserSuspended, "left the team"); err != nil {
		t.Fatal(err)
	}
	wantContains(t, "reply to suspended bob", e.click("U0BOB", ActionApprove, r.ID), "bob is suspended", "Nothing was changed")
	e.unchanged(r.ID, "a suspended approver's click")
}

func TestResponseURLAllowed(t *testing.T) {
	a := &App{}
	fake := &App{cfg: Config{APIURL: "http://127.0.0.1:4567/api/"}}
	tests := []struct {
		app  *App
		url  string
		want bool
	}{
		{a, "https://hooks.slack.com/actions/T0/1/abc", true},
		{a, "http://hooks.slack.com/actions/T0/1/abc", false},
		{a, "https://hooks.slack.com.evil.example/x", false},
		{a, "https://user@hooks.slack.com/x", false},
		{a, "https://169.254.169.254/latest", false},
		{a, "::", false},
		{fake, "http://127.0.0.1:4567/response/1", true},
		{fake, "http://127.0.0.1:9999/response/1", false},
	}
	for _, tt := range tests {
		if got := tt.app.responseURLAllowed(tt.url); got != tt.want {
			t.Errorf("responseURLAllowed(%q) with api_url %q = %v; want %v", tt.url, tt.app.cfg.APIURL, got, tt.want)
		}
	}
}

// TestSenderResumesAfterRestart: a decision made while the sender was
// stopped updates the message posted before, from the cursor and the
// message's place kept in the store, without posting it again. The sender
// is stopped while Slack is still answering the post: the call is
// finished and its outcome kept, not cut off.
func TestSenderResumesAfterRestart(t *testing.T) {
	e := newEnv(t, openSQLite(t), nil)
	e.fake.mu.Lock()
	e.fake.slow["chat.postMessage"] = 300 * time.Millisecond
	e.fake.mu.Unlock()
	r := e.request("alice", "readonly", "across a restart")
	posted := e.fake.waitCalls("chat.postMessage", 1)
	e.stop()
	e.fake.mu.Lock()
	delete(e.fake.slow, "chat.postMessage")
	e.fake.mu.Unlock()
	if _, err := e.b.Approve(e.ctx, broker.Caller{User: "bob", Groups: users["bob"].groups}, r.ID, ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(e.fake.callsOf("chat.update")); n != 0 {
		t.Fatalf("%d updates while the sender was stopped", n)
	}
	e.start()
	upd := e.fake.waitCalls("chat.update", 1)[0]
	if upd.Form.Get("ts") != "1700000000.000001" || !strings.Contains(upd.Form.Get("blocks"), "Approved* by bob") {
		t.Errorf("update after the restart: ts %q %s; want the first message approved by bob", upd.Form.Get("ts"), upd.Form.Get("blocks"))
	}
	e.fake.waitCalls("chat.postMessage", 2) // the DM to alice
	time.Sleep(200 * time.Millisecond)
	approvals := 0
	for _, c := range e.fake.callsOf("chat.postMessage") {
		if !strings.HasPrefix(c.Form.Get("channel"), "D") { // not a direct message
			approvals++
		}
	}
	if approvals != 1 || len(posted) != 1 {
		t.Errorf("%d approval messages posted; want 1 (none again after the restart)", approvals)
	}
}
