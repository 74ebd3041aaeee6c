package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// slackFake is a small fake of Slack's Web API recording the messages the
// server posts and updates, and the private replies to clicks.
type slackFake struct {
	mu    sync.Mutex
	calls []url.Values // with "method" set
	srv   *httptest.Server
}

func newSlackFake(t *testing.T) *slackFake {
	f := &slackFake{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := strings.TrimPrefix(r.URL.Path, "/api/")
		var v url.Values
		if strings.HasPrefix(r.URL.Path, "/response/") {
			b, _ := io.ReadAll(r.Body)
			v = url.Values{"method": {"response_url"}, "body": {string(b)}}
		} else {
			r.ParseForm()
			v = r.Form
			v.Set("method", method)
			if r.Header.Get("Authorization") != "Bearer xoxb-e2e" && r.Form.Get("token") != "xoxb-e2e" {
				json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "invalid_auth"})
				return
			}
		}
		f.mu.Lock()
		f.calls = append(f.calls, v)
		n := len(f.calls)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch method {
		case "chat.postMessage", "chat.update":
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": "C0DBA", "ts": fmt.Sprintf("1700000000.%06d", n)})
		case "conversations.open":
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": map[string]any{"id": "D0ALICE"}})
		default:
			io.WriteString(w, `{"ok":true}`)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *slackFake) wait(t *testing.T, method string, n int) []url.Values {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		f.mu.Lock()
		var out []url.Values
		for _, c := range f.calls {
			if c.Get("method") == method {
				out = append(out, c)
			}
		}
		f.mu.Unlock()
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited for %d %s calls; got %d", n, method, len(out))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSlackApprovalThroughServer runs the server with Slack configured:
// a request made with the CLI gets its approval message in the policy's
// channel; a click signed as Slack signs it, sent to the server's
// interactions endpoint without any bearer token, approves it; an
// unsigned one is refused.
func TestSlackApprovalThroughServer(t *testing.T) {
	requirePG(t)
	fake := newSlackFake(t)
	const secret = "e2e-signing-secret"
	t.Setenv("MAYFLY_E2E_SLACK_BOT", "xoxb-e2e")
	t.Setenv("MAYFLY_E2E_SLACK_SIGNING", secret)
	w := &world{t: t, dir: t.TempDir(), addr: freeAddr(t), tokens: newTokens(), stderr: &syncBuffer{}}
	w.cfg = writeConfig(t, w.dir, w.addr, w.tokens, worldOpts{extraYAML: `slack:
  bot_token_env: MAYFLY_E2E_SLACK_BOT
  signing_secret_env: MAYFLY_E2E_SLACK_SIGNING
  api_url: ` + fake.srv.URL + `/api/
  poll_interval: 100ms
`})
	b, err := os.ReadFile(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(string(b), "{name: bob, groups: [dba],", "{name: bob, slack_id: U0BOB, groups: [dba],", 1)
	y = strings.Replace(y, "{name: alice, groups: [eng],", "{name: alice, slack_id: U0ALICE, groups: [eng],", 1)
	y = strings.Replace(y, "approvals: 1, approver_groups: [dba]}", "approvals: 1, approver_groups: [dba], slack_channel: \"#dba\"}", 1)
	if err := os.WriteFile(w.cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	w.startInProcess()
	t.Cleanup(w.stop)

	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2h", "--reason", "INC-7", "-o", "json")
	if r.State != "pending" {
		t.Fatalf("request is %s; want pending", r.State)
	}
	posted := fake.wait(t, "chat.postMessage", 1)[0]
	if posted.Get("channel") != "#dba" || !strings.Contains(posted.Get("blocks"), r.ID) {
		t.Fatalf("approval message to %q: %s; want one in #dba naming %s", posted.Get("channel"), posted.Get("blocks"), r.ID)
	}

	payload, _ := json.Marshal(map[string]any{"type": "block_actions", "user": map[string]any{"id": "U0BOB"},
		"response_url": fake.srv.URL + "/response/1",
		"actions":      []any{map[string]any{"action_id": "mayfly_approve", "block_id": "mayfly_actions", "value": r.ID, "type": "button"}}})
	body := "payload=" + url.QueryEscape(string(payload))
	send := func(sig string, ts int64) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+w.addr+"/v1/integrations/slack/interactions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Slack-Request-Timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("X-Slack-Signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	now := time.Now().Unix()
	if got := send("v0=00", now); got != http.StatusUnauthorized {
		t.Errorf("unsigned click: status %d; want 401", got)
	}
	if got := w.request("alice", r.ID)["state"]; got != "pending" {
		t.Fatalf("after an unsigned click the request is %v; want pending", got)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%d:%s", now, body)
	if got := send("v0="+hex.EncodeToString(mac.Sum(nil)), now); got != http.StatusOK {
		t.Fatalf("signed click: status %d; want 200\n%s", got, tail(w.stderr.String(), 3000))
	}
	reply := fake.wait(t, "response_url", 1)[0].Get("body")
	if !strings.Contains(reply, "You approved request") || !strings.Contains(reply, `"response_type":"ephemeral"`) {
		t.Errorf("private reply to bob: %s", reply)
	}
	if got := w.request("alice", r.ID)["state"]; got != "approved" {
		t.Errorf("after bob's click the request is %v; want approved", got)
	}
	upd := fake.wait(t, "chat.update", 1)[0]
	if !strings.Contains(upd.Get("blocks"), "Approved* by bob") {
		t.Errorf("updated message: %s; want it approved by bob", upd.Get("blocks"))
	}
	fake.wait(t, "conversations.open", 1)
	if strings.Contains(w.stderr.String(), "xoxb-e2e") || strings.Contains(w.stderr.String(), secret) {
		t.Error("the server log holds the bot token or the signing secret")
	}
}
