package slackapp

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"

// testUser is a user of the test directory.
type testUser struct {
	groups  []string
	slackID string
	email   string
	admin   bool
}

// testDir is the directory the server builds from the configuration.
type testDir map[string]testUser

func (d testDir) User(name string) ([]string, bool, bool) {
	u, ok := d[name]
	return u.groups, u.admin, ok
}

func (d testDir) BySlackID(id string) (string, bool) {
	for n, u := range d {
		if u.slackID != "" && u.slackID == id {
			return n, true
		}
	}
	return "", false
}

func (d testDir) SlackID(name string) string { return d[name].slackID }

func (d testDir) ByEmail(email string) (string, bool) {
	for n, u := range d {
		if u.email != "" && strings.EqualFold(u.email, email) {
			return n, true
		}
	}
	return "", false
}

func (d testDir) Email(name string) string { return d[name].email }

var users = testDir{
	"alice": {groups: []string{"eng"}, slackID: "U0ALICE"},
	"bob":   {groups: []string{"dba"}, slackID: "U0BOB"},
	"carol": {groups: []string{"dba", "security"}, slackID: "U0CAROL"},
	"dave":  {groups: []string{"eng"}, slackID: "U0DAVE"},
	"erin":  {groups: []string{"security"}, email: "erin@example.com"},
}

// env is a broker on a real store with the Slack app pointed at a fake.
type env struct {
	t     *testing.T
	ctx   context.Context
	store mayfly.Store
	b     *broker.Broker
	app   *App
	fake  *fakeSlack
	srv   *httptest.Server
	logs  *syncBuffer
	cfg   Config
	stop  func() // stops the sender
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

func openSQLite(t *testing.T) mayfly.Store {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openPostgres(t *testing.T) mayfly.Store {
	st, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newBroker(t *testing.T, st mayfly.Store) *broker.Broker {
	t.Helper()
	set, err := policy.Compile([]policy.Policy{
		{Name: "db-read", Groups: []string{"eng"}, Targets: []string{"pg"}, Grants: []string{"readonly"},
			MaxDuration: 4 * time.Hour, Approvals: 1, ApproverGroups: []string{"dba"}},
		{Name: "db-write", Groups: []string{"eng"}, Targets: []string{"pg"}, Grants: []string{"write"},
			MaxDuration: 4 * time.Hour, Steps: []policy.Step{{Approvals: 1, ApproverGroups: []string{"dba"}}, {Approvals: 1, ApproverGroups: []string{"security"}}}},
		{Name: "db-admin", Groups: []string{"eng"}, Targets: []string{"pg"}, Grants: []string{"admin"},
			MaxDuration: 4 * time.Hour, Approvals: 1, ApproverGroups: []string{"dba"}, PendingTTL: time.Second},
	}, []policy.TargetInfo{{Name: "pg", Kind: "postgres", Grants: []string{"admin", "readonly", "write"}}})
	if err != nil {
		t.Fatal(err)
	}
	tgt := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: "mf_",
		Grants: map[string]mayfly.Grant{"readonly": {Name: "readonly"}, "write": {Name: "write"}, "admin": {Name: "admin"}}}
	bc := &broker.Config{Targets: map[string]mayfly.Target{"pg": tgt}, Policies: set, Users: map[string][]string{}}
	for n, u := range users {
		bc.Users[n] = u.groups
		bc.UserOrder = append(bc.UserOrder, n)
	}
	slices.Sort(bc.UserOrder)
	return broker.New(bc, broker.Options{Store: st})
}

// newEnv starts the sender on st and serves the interactions endpoint.
func newEnv(t *testing.T, st mayfly.Store, mod func(*Config)) *env {
	t.Helper()
	e := &env{t: t, ctx: context.Background(), store: st, b: newBroker(t, st), fake: newFakeSlack(t), logs: &syncBuffer{}}
	e.cfg = Config{BotTokenEnv: "SLACK_BOT", SigningSecretEnv: "SLACK_SIGNING", DefaultChannel: "#access-requests",
		APIURL: e.fake.apiURL(), PollInterval: 50 * time.Millisecond, BaseURL: "https://mayfly.example.com"}
	if mod != nil {
		mod(&e.cfg)
	}
	e.start()
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { e.app.Handler().ServeHTTP(w, r) }))
	t.Cleanup(func() {
		e.stop()
		e.srv.Close()
		for _, secret := range []string{e.fake.botToken, signingSecret, e.fake.appToken} {
			if strings.Contains(e.logs.String(), secret) {
				t.Errorf("the log holds a secret (%.8s...):\n%s", secret, e.logs.String())
			}
		}
	})
	return e
}

// start makes a new App, as a server starting does, and runs its sender.
func (e *env) start() {
	e.t.Helper()
	getenv := func(k string) string {
		return map[string]string{"SLACK_BOT": e.fake.botToken, "SLACK_SIGNING": signingSecret, "SLACK_APP": e.fake.appToken}[k]
	}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	app, err := New(e.cfg, Options{Store: e.store, Broker: e.b, Dir: users, Channels: map[string]string{"db-read": "#db-approvals"},
		Getenv: getenv, Logger: log})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := app.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); app.Run(ctx) }()
	e.app = app
	e.stop = func() {
		cancel()
		<-done
		e.stop = func() {}
	}
}

func (e *env) request(user, grant, reason string) *mayfly.Request {
	e.t.Helper()
	r, _, err := e.b.CreateRequest(e.ctx, broker.Caller{User: user, Groups: users[user].groups},
		broker.RequestInput{Target: "pg", Grant: grant, Duration: time.Hour, Reason: reason})
	if err != nil {
		e.t.Fatalf("CreateRequest: %v", err)
	}
	return r
}

func (e *env) get(id string) *mayfly.Request {
	e.t.Helper()
	var r *mayfly.Request
	if err := e.store.View(e.ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = tx.GetRequest(id)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// payload builds the body of a block_actions interaction as Slack sends
// it over HTTP when slackUser clicks the button action on the approval
// message of id.
func (e *env) payload(slackUser, action, id string) string {
	return "payload=" + url.QueryEscape(e.payloadJSON(slackUser, action, id))
}

// payloadJSON is the interaction's JSON.
func (e *env) payloadJSON(slackUser, action, id string) string {
	n := len(e.fake.callsOf("response_url")) + 1
	p := map[string]any{
		"type":         "block_actions",
		"user":         map[string]any{"id": slackUser, "username": strings.ToLower(slackUser), "name": strings.ToLower(slackUser), "team_id": "T0TEAM"},
		"api_app_id":   "A0MAYFLY",
		"token":        "verification-token-unused",
		"container":    map[string]any{"type": "message", "message_ts": "1700000000.000001", "channel_id": "C0DBAPPROVALS", "is_ephemeral": false},
		"trigger_id":   "12345.98765.abcd",
		"team":         map[string]any{"id": "T0TEAM", "domain": "example"},
		"channel":      map[string]any{"id": "C0DBAPPROVALS", "name": "db-approvals"},
		"message":      map[string]any{"type": "message", "ts": "1700000000.000001", "text": "Approval needed"},
		"response_url": fmt.Sprintf("%s/response/%d-%d", e.fake.srv.URL, n, time.Now().UnixNano()),
		"actions": []any{map[string]any{"action_id": action, "block_id": "mayfly_actions", "value": id, "type": "button",
			"text": map[string]any{"type": "plain_text", "text": "Approve"}, "action_ts": "1700000001.000002"}},
	}
	b, err := json.Marshal(p)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// sign returns Slack's v0 signature of body at ts.
func sign(secret string, ts int64, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%d:%s", ts, body)
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}

// post sends body to the interactions endpoint with the given timestamp
// and signature and returns the status and body of the answer.
func (e *env) post(body string, ts int64, sig string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+InteractionsPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("X-Slack-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// send signs and posts an interaction body, as Slack does, and returns
// the status and body of the answer.
func (e *env) send(body string) (int, string) {
	e.t.Helper()
	ts := time.Now().Unix()
	return e.post(body, ts, sign(signingSecret, ts, body))
}

// submit sends the submission of the denial form of request id by
// slackUser with reason, as Slack does.
func (e *env) submit(slackUser, id, reason string) (int, string) {
	e.t.Helper()
	p := map[string]any{
		"type":       "view_submission",
		"team":       map[string]any{"id": "T0TEAM", "domain": "example"},
		"user":       map[string]any{"id": slackUser, "team_id": "T0TEAM"},
		"api_app_id": "A0MAYFLY",
		"trigger_id": "12345.98765.efgh",
		"view": map[string]any{"id": "V0DENY", "type": "modal", "callback_id": "mayfly_deny", "private_metadata": id,
			"state": map[string]any{"values": map[string]any{"reason": map[string]any{"reason": map[string]any{"type": "plain_text_input", "value": reason}}}}},
	}
	b, _ := json.Marshal(p)
	return e.send("payload=" + url.QueryEscape(string(b)))
}

// click signs and posts a click, as Slack does, and returns the private
// reply the clicker got.
func (e *env) click(slackUser, action, id string) string {
	e.t.Helper()
	before := len(e.fake.callsOf("response_url"))
	body := e.payload(slackUser, action, id)
	ts := time.Now().Unix()
	if status, out := e.post(body, ts, sign(signingSecret, ts, body)); status != http.StatusOK {
		e.t.Fatalf("signed click by %s: status %d: %s", slackUser, status, out)
	}
	cs := e.fake.waitCalls("response_url", before+1)
	reply := cs[len(cs)-1].JSON
	if reply["response_type"] != "ephemeral" || reply["replace_original"] != false {
		e.t.Errorf("reply to %s = %v; want an ephemeral message that leaves the original", slackUser, reply)
	}
	text, _ := reply["text"].(string)
	return text
}

var reqIDRE = regexp.MustCompile(`req_[a-z0-9]+`)

// goldenJSON compares v, indented, with testdata/name.golden.
func goldenJSON(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	compareGolden(t, name, got)
}

// golden compares a recorded chat call (channel, text and Block Kit
// blocks, request ids replaced by REQ) with testdata/name.golden.
func golden(t *testing.T, name string, c call) {
	t.Helper()
	var blocks any
	if err := json.Unmarshal([]byte(c.Form.Get("blocks")), &blocks); err != nil {
		t.Fatalf("%s: blocks are not JSON: %v: %q", name, err, c.Form.Get("blocks"))
	}
	got, err := json.MarshalIndent(map[string]any{"method": c.Method, "channel": c.Form.Get("channel"), "ts": c.Form.Get("ts"),
		"text": c.Form.Get("text"), "blocks": blocks}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	compareGolden(t, name, got)
}

func compareGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	got = append(reqIDRE.ReplaceAll(got, []byte("REQ")), '\n')
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}
