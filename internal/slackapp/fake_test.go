package slackapp

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeSlack is a fake Slack Web API: it records every call (method and
// form values, or JSON body) and answers as Slack does.
type fakeSlack struct {
	t        *testing.T
	srv      *httptest.Server
	botToken string
	appToken string

	mu    sync.Mutex
	calls []call
	// seq counts the calls of each method: a posted message's ts is its
	// method's count, whatever other calls came before it.
	seq map[string]int
	// users answers users.info and users.lookupByEmail.
	users map[string]fakeUser
	// fail makes the next calls of a method answer ok:false with the error.
	fail map[string]string
	// slow holds the answers of a method this long after recording the
	// call, as a Slack that acts before its answer arrives.
	slow map[string]time.Duration
	// ws, when set, serves the Socket Mode websocket.
	ws func(c *websocket.Conn)
}

type fakeUser struct {
	ID        string
	Email     string
	Confirmed bool
}

// call is one recorded Web API call or response_url post.
type call struct {
	Method string
	Form   url.Values
	JSON   map[string]any
}

func newFakeSlack(t *testing.T) *fakeSlack {
	f := &fakeSlack{t: t, botToken: "xoxb-test-bot-token-0000", appToken: "xapp-test-app-token-0000",
		users: map[string]fakeUser{}, fail: map[string]string{}, slow: map[string]time.Duration{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSlack) apiURL() string { return f.srv.URL + "/api/" }

func (f *fakeSlack) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ws" {
		up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if f.ws != nil {
			f.ws(c)
		}
		return
	}
	if strings.HasPrefix(r.URL.Path, "/response/") {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		f.record(call{Method: "response_url" + strings.TrimPrefix(r.URL.Path, "/response"), JSON: m})
		io.WriteString(w, "ok")
		return
	}
	method, ok := strings.CutPrefix(r.URL.Path, "/api/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	c := call{Method: method}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		json.NewDecoder(r.Body).Decode(&c.JSON)
	} else {
		r.ParseForm()
		c.Form = r.Form
		if tk := r.Form.Get("token"); tk != "" {
			token = tk
		}
	}
	want := f.botToken
	if method == "apps.connections.open" {
		want = f.appToken
	}
	w.Header().Set("Content-Type", "application/json")
	if token != want {
		json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	f.mu.Lock()
	failWith, slow := f.fail[method], f.slow[method]
	f.mu.Unlock()
	if failWith != "" {
		json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": failWith})
		return
	}
	n := f.record(c)
	time.Sleep(slow)
	ts := fmt.Sprintf("1700000000.%06d", n)
	var out map[string]any
	switch method {
	case "chat.postMessage":
		ch := r.Form.Get("channel")
		if strings.HasPrefix(ch, "#") {
			ch = "C0" + strings.ToUpper(strings.NewReplacer("#", "", "-", "").Replace(ch))
		}
		out = map[string]any{"ok": true, "channel": ch, "ts": ts}
	case "chat.update":
		out = map[string]any{"ok": true, "channel": r.Form.Get("channel"), "ts": r.Form.Get("ts")}
	case "conversations.open":
		out = map[string]any{"ok": true, "channel": map[string]any{"id": "D" + strings.TrimPrefix(r.Form.Get("users"), "U")}}
	case "users.info":
		u, ok := f.users[r.Form.Get("user")]
		if !ok {
			out = map[string]any{"ok": false, "error": "user_not_found"}
			break
		}
		out = map[string]any{"ok": true, "user": map[string]any{"id": u.ID, "is_email_confirmed": u.Confirmed,
			"profile": map[string]any{"email": u.Email}}}
	case "users.lookupByEmail":
		out = map[string]any{"ok": false, "error": "users_not_found"}
		for _, u := range f.users {
			if u.Email == r.Form.Get("email") {
				out = map[string]any{"ok": true, "user": map[string]any{"id": u.ID, "profile": map[string]any{"email": u.Email}}}
			}
		}
	case "views.open":
		out = map[string]any{"ok": true, "view": map[string]any{"id": "V0DENY"}}
	case "apps.connections.open":
		out = map[string]any{"ok": true, "url": "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/ws"}
	default:
		out = map[string]any{"ok": false, "error": "unknown_method"}
	}
	json.NewEncoder(w).Encode(out)
}

func (f *fakeSlack) record(c call) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seq == nil {
		f.seq = map[string]int{}
	}
	f.seq[c.Method]++
	f.calls = append(f.calls, c)
	return f.seq[c.Method]
}

// callsOf returns the recorded calls of method.
func (f *fakeSlack) callsOf(method string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if c.Method == method || (method == "response_url" && strings.HasPrefix(c.Method, "response_url")) {
			out = append(out, c)
		}
	}
	return out
}

// waitCalls waits until method was called at least n times and returns
// the calls.
func (f *fakeSlack) waitCalls(method string, n int) []call {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cs := f.callsOf(method)
		if len(cs) >= n {
			return cs
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("waited 10s for %d %s calls; got %d: %+v", n, method, len(cs), cs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
