package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/oidctest"
)

// ssoWorld is a broker whose users log in at a real OpenID provider on
// loopback. erin and frank are not in the configuration: the provider
// vouches for them; erin is in group eng, frank in none.
type ssoWorld struct {
	*world
	p    *oidctest.Provider
	home string
}

func startSSOWorld(t *testing.T, sessionTTL string) *ssoWorld {
	t.Helper()
	p := oidctest.Start(t,
		oidctest.User{Name: "erin", Email: "erin@example.com", Groups: []string{"eng"}},
		oidctest.User{Name: "frank", Email: "frank@example.com"})
	w := startWorld(t, worldOpts{extraYAML: fmt.Sprintf("auth: {oidc: {issuer: %q, client_id: %s}, session_ttl: %s}\n",
		p.Issuer, oidctest.PublicClient, sessionTTL)})
	return &ssoWorld{world: w, p: p, home: t.TempDir()}
}

// env is the CLI environment of user: no MAYFLY_TOKEN, a config
// directory of their own.
func (s *ssoWorld) env(user string) func(string) string {
	return func(k string) string {
		switch k {
		case "MAYFLY_ADDR":
			return "http://" + s.addr
		case "XDG_CONFIG_HOME":
			return filepath.Join(s.home, user)
		}
		return ""
	}
}

// as runs a CLI command as user, with their saved session.
func (s *ssoWorld) as(user string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, args, s.env(user), strings.NewReader(""), &out, &errb)
	return out.String(), err
}

func (s *ssoWorld) asOK(user string, v any, args ...string) {
	s.t.Helper()
	out, err := s.as(user, args...)
	if err != nil {
		s.t.Fatalf("mayfly %s (as %s): %v\nserver log:\n%s", strings.Join(args, " "), user, err, tail(s.stderr.String(), 3000))
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			s.t.Fatalf("mayfly %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// watcher is a writer that hands over the first match of re in what is
// written to it.
type watcher struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	re    *regexp.Regexp
	found chan string
}

func newWatcher(re string) *watcher {
	return &watcher{re: regexp.MustCompile(re), found: make(chan string, 1)}
}

func (w *watcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	before := w.re.FindStringSubmatch(w.buf.String())
	w.buf.Write(p)
	if m := w.re.FindStringSubmatch(w.buf.String()); before == nil && m != nil {
		w.found <- m[len(m)-1]
	}
	return len(p), nil
}

// login runs mayfly login as user with args; act does what the person
// does with what the CLI printed (re's last group). It returns the
// command's output and error.
func (s *ssoWorld) login(user, re string, act func(printed string), args ...string) (loginOut, error) {
	s.t.Helper()
	w := newWatcher(re)
	var out bytes.Buffer
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		done <- run(ctx, append([]string{"login", "--no-browser", "-o", "json"}, args...), s.env(user), strings.NewReader(""), &out, w)
	}()
	select {
	case printed := <-w.found:
		act(printed)
	case err := <-done:
		return loginOut{}, err
	}
	err := <-done
	var lo loginOut
	if err == nil {
		if jerr := json.Unmarshal(out.Bytes(), &lo); jerr != nil {
			s.t.Fatalf("login output is not JSON: %v\n%s", jerr, out.String())
		}
	}
	return lo, err
}

type loginOut struct {
	User        string    `json:"user"`
	Groups      []string  `json:"groups"`
	Method      string    `json:"method"`
	ExpiresAt   time.Time `json:"expires_at"`
	SessionFile string    `json:"session_file"`
}

const authURLRE = `(http://127\.0\.0\.1:\d+/authorize\?\S+)`

// browserLogin logs user in with the loopback flow, the test's HTTP client
// playing the browser: it follows the authorization URL through the
// provider's login (which signs user in) back to the CLI's listener.
func (s *ssoWorld) browserLogin(user string) (loginOut, error) {
	s.t.Helper()
	s.p.SetUser(user)
	return s.login(user, authURLRE, func(u string) {
		resp, err := http.Get(u)
		if err != nil {
			s.t.Errorf("browser: GET %s: %v", u, err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	})
}

type whoOut struct {
	Name      string    `json:"name"`
	Groups    []string  `json:"groups"`
	Admin     bool      `json:"admin"`
	Method    string    `json:"method"`
	ExpiresAt time.Time `json:"expires_at"`
}

// TestSSOLoginCLI: mayfly login (code flow with PKCE on a loopback
// redirect) against a real provider opens a session for a user the
// configuration does not list; the session file is private; groups from
// the claims decide policy; logout ends access.
func TestSSOLoginCLI(t *testing.T) {
	s := startSSOWorld(t, "12h")
	lo, err := s.browserLogin("erin")
	if err != nil {
		t.Fatalf("login: %v\n%s", err, tail(s.stderr.String(), 3000))
	}
	if lo.User != "erin" || strings.Join(lo.Groups, ",") != "eng" || lo.Method != "oidc" {
		t.Errorf("login = %+v; want erin in eng by oidc", lo)
	}
	if d := time.Until(lo.ExpiresAt); d < 11*time.Hour || d > 12*time.Hour {
		t.Errorf("session expires in %s; want 12h", d)
	}
	fi, err := os.Stat(lo.SessionFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file %s: %v, mode %v; want 0600", lo.SessionFile, err, fi.Mode())
	}
	if di, err := os.Stat(filepath.Dir(lo.SessionFile)); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("session directory mode %v; want 0700", di.Mode())
	}
	if want := filepath.Join(s.home, "erin", "mayfly", "sessions"); filepath.Dir(lo.SessionFile) != want {
		t.Errorf("session file in %s; want %s", filepath.Dir(lo.SessionFile), want)
	}
	var who whoOut
	s.asOK("erin", &who, "whoami", "-o", "json")
	if who.Name != "erin" || strings.Join(who.Groups, ",") != "eng" || who.Admin || who.Method != "oidc" || !who.ExpiresAt.Equal(lo.ExpiresAt) {
		t.Errorf("whoami = %+v; want erin, eng, oidc, expiring at %s", who, lo.ExpiresAt)
	}
	// eng from the claims: eng-read approves automatically.
	var r reqOut
	s.asOK("erin", &r, "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-42 check replication", "-o", "json")
	if r.State != "approved" || r.Requester != "erin" {
		t.Errorf("erin's request = %+v; want approved", r)
	}

	// frank is vouched for too, but in no group: no policy matches.
	if _, err := s.browserLogin("frank"); err != nil {
		t.Fatalf("frank's login: %v", err)
	}
	_, err = s.as("frank", "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-42 check replication", "-o", "json")
	if mayfly.ErrorCode(err) != mayfly.EFORBIDDEN {
		t.Errorf("frank's request: %v; want forbidden by policy", err)
	}
	// The same person gains eng at the provider: a new login carries it.
	s.p.SetGroups("frank", "eng")
	if lo, err := s.browserLogin("frank"); err != nil || strings.Join(lo.Groups, ",") != "eng" {
		t.Fatalf("frank's second login: %+v %v", lo, err)
	}
	s.asOK("frank", &r, "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-42 check replication", "-o", "json")
	if r.State != "approved" {
		t.Errorf("frank's request in eng = %s; want approved", r.State)
	}

	// Logout revokes the session on the server and forgets it.
	tokBytes, _ := os.ReadFile(lo.SessionFile)
	var saved savedSession
	json.Unmarshal(tokBytes, &saved)
	if _, err := s.as("erin", "logout"); err != nil {
		t.Fatalf("logout: %v", err)
	}
	if _, err := os.Stat(lo.SessionFile); !os.IsNotExist(err) {
		t.Errorf("session file after logout: %v; want it gone", err)
	}
	if _, err := s.as("erin", "whoami"); mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED || !strings.Contains(err.Error(), "mayfly login") {
		t.Errorf("whoami after logout: %v; want unauthorized, pointing at mayfly login", err)
	}
	// The token itself no longer works, wherever it was copied.
	s.tokens["erin-old"] = saved.Token
	if msg := s.fails("erin-old", "whoami"); !strings.Contains(msg, "unknown or revoked") {
		t.Errorf("revoked session token: %q; want refused", msg)
	}
	if _, err := s.as("erin", "logout"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Errorf("second logout: %v; want not found (not logged in)", err)
	}
	// The audit trail names the logins.
	var evs []eventOut
	s.ok("carol", &evs, "audit", "-o", "json", "--actor", "erin")
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action)
	}
	for _, want := range []string{"session.create", "session.revoke"} {
		if !strings.Contains(strings.Join(actions, " "), want) {
			t.Errorf("erin's audit %v; want %s", actions, want)
		}
	}
}

// TestSSODeviceLogin: mayfly login --device (device authorization grant)
// against the provider: the CLI prints a code, the person approves it
// elsewhere, the CLI's polling gets the ID token and the session.
func TestSSODeviceLogin(t *testing.T) {
	s := startSSOWorld(t, "12h")
	lo, err := s.login("erin", `enter the code:\s+(\S+)\s`, func(code string) {
		if err := s.p.ApproveDevice(code, "erin"); err != nil {
			t.Errorf("approve device: %v", err)
		}
	}, "--device")
	if err != nil {
		t.Fatalf("device login: %v\n%s", err, tail(s.stderr.String(), 3000))
	}
	if lo.User != "erin" || lo.Method != "oidc-device" {
		t.Errorf("device login = %+v; want erin by oidc-device", lo)
	}
	var who whoOut
	s.asOK("erin", &who, "whoami", "-o", "json")
	if who.Name != "erin" || who.Method != "oidc-device" || strings.Join(who.Groups, ",") != "eng" {
		t.Errorf("whoami = %+v; want erin by oidc-device in eng", who)
	}
}

// TestSSOBrowserLogin: the browser flow run by the server ends with an
// HttpOnly, Secure, SameSite=Lax session cookie the API accepts; a change
// through the cookie needs the CSRF header; a replayed state is refused.
func TestSSOBrowserLogin(t *testing.T) {
	s := startSSOWorld(t, "12h")
	s.p.SetUser("erin")
	base := "http://" + s.addr
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u := base + "/v1/auth/login"
	var callback string
	var resp *http.Response
	for i := 0; ; i++ {
		if i == 10 {
			t.Fatalf("no session cookie after 10 redirects")
		}
		var err error
		if resp, err = c.Get(u); err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.HasPrefix(u, base+"/v1/auth/callback") {
			callback = u
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("callback: %s %s", resp.Status, body)
			}
			break
		}
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("GET %s: %s %s", u, resp.Status, body)
		}
		loc, _ := resp.Request.URL.Parse(resp.Header.Get("Location"))
		u = loc.String()
	}
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == "mayfly_session" {
			ck = k
		}
	}
	if ck == nil || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || !strings.HasPrefix(ck.Value, "mfs_") {
		t.Fatalf("cookie = %+v; want mayfly_session with a session token, HttpOnly, Secure, SameSite=Lax, Path=/", ck)
	}
	call := func(method, path, body string, csrf bool) (int, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.AddCookie(&http.Cookie{Name: "mayfly_session", Value: ck.Value})
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if csrf {
			req.Header.Set("X-Mayfly-CSRF", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := call("GET", "/v1/whoami", "", false); code != 200 || !strings.Contains(body, `"name":"erin"`) || !strings.Contains(body, `"method":"oidc-browser"`) {
		t.Errorf("whoami with the cookie: %d %s", code, body)
	}
	req := `{"target":"local-pg","grant":"readonly","duration":"10m","reason":"INC-9 look at locks"}`
	if code, body := call("POST", "/v1/requests", req, false); code != http.StatusForbidden || !strings.Contains(body, "X-Mayfly-CSRF") {
		t.Errorf("change with the cookie, no CSRF header: %d %s; want 403", code, body)
	}
	if code, body := call("POST", "/v1/requests", req, true); code != http.StatusCreated && code != http.StatusOK {
		t.Errorf("change with the cookie and the CSRF header: %d %s", code, body)
	}
	// The callback again: its state was used.
	resp, err := c.Get(callback)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "state") {
		t.Errorf("replayed callback: %s %s; want 401 for the state", resp.Status, body)
	}
	// Logging out through the cookie needs the header too, then ends it.
	if code, _ := call("POST", "/v1/auth/logout", "", false); code != http.StatusForbidden {
		t.Errorf("logout with the cookie, no CSRF header: %d; want 403", code)
	}
	if code, body := call("POST", "/v1/auth/logout", "", true); code != http.StatusNoContent {
		t.Errorf("logout: %d %s", code, body)
	}
	if code, _ := call("GET", "/v1/whoami", "", false); code != http.StatusUnauthorized {
		t.Errorf("whoami after logout: %d; want 401", code)
	}
}

// TestSSOSuspendedUser: suspending a user (SCIM status, here by an admin)
// ends their live session at once and refuses their next login.
func TestSSOSuspendedUser(t *testing.T) {
	s := startSSOWorld(t, "12h")
	if _, err := s.browserLogin("erin"); err != nil {
		t.Fatalf("login: %v", err)
	}
	s.asOK("erin", nil, "whoami")
	s.ok("carol", nil, "users", "suspend", "erin", "--reason", "left the company")
	if _, err := s.as("erin", "whoami"); mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED {
		t.Errorf("whoami after suspension: %v; want unauthorized", err)
	}
	_, err := s.browserLogin("erin")
	if mayfly.ErrorCode(err) != mayfly.EFORBIDDEN || !strings.Contains(err.Error(), "suspended") {
		t.Errorf("login while suspended: %v; want forbidden, suspended", err)
	}
	s.ok("carol", nil, "users", "resume", "erin")
	if _, err := s.browserLogin("erin"); err != nil {
		t.Errorf("login after resume: %v", err)
	}
}

// TestSSOSessionExpiry: a session ends at session_ttl.
func TestSSOSessionExpiry(t *testing.T) {
	s := startSSOWorld(t, "3s")
	lo, err := s.browserLogin("erin")
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	if d := time.Until(lo.ExpiresAt); d <= 0 || d > 3*time.Second {
		t.Fatalf("session expires in %s; want within 3s", d)
	}
	s.asOK("erin", nil, "whoami")
	// Past expiry the server refuses the token (the CLI, which would stop
	// sending it, is bypassed by sending it as MAYFLY_TOKEN).
	tokBytes, _ := os.ReadFile(lo.SessionFile)
	var saved savedSession
	if err := json.Unmarshal(tokBytes, &saved); err != nil {
		t.Fatal(err)
	}
	s.tokens["erin-session"] = saved.Token
	s.ok("erin-session", nil, "whoami")
	waitFor(t, "the session to expire", 10*time.Second, func() bool {
		_, err := s.try("erin-session", "whoami")
		return err != nil
	})
	if time.Now().Before(lo.ExpiresAt) {
		t.Errorf("session refused before its expiry %s", lo.ExpiresAt)
	}
	if _, err := s.as("erin", "whoami"); mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED {
		t.Errorf("whoami with the expired session: %v; want unauthorized", err)
	}
}

// TestSSORefusesBadIDTokens: the running server refuses, at
// POST /v1/auth/oidc/session, ID tokens that are expired, signed by
// another key, for another audience or from another issuer, and a nonce
// used twice; a good token signed by the provider opens a session.
func TestSSORefusesBadIDTokens(t *testing.T) {
	s := startSSOWorld(t, "12h")
	base := "http://" + s.addr
	post := func(path string, body any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		resp, err := http.Post(base+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": s.p.Issuer, "aud": oidctest.PublicClient, "sub": "erin", "preferred_username": "erin",
			"groups": []string{"eng"}, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	for name, tok := range map[string]string{
		"expired":        s.p.Sign(t, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })),
		"wrongly signed": oidctest.SignWith(t, other, s.p.KeyID, claims(nil)),
		"wrong audience": s.p.Sign(t, claims(func(c map[string]any) { c["aud"] = "another-app" })),
		"wrong issuer":   s.p.Sign(t, claims(func(c map[string]any) { c["iss"] = "https://idp.evil.example" })),
	} {
		if code, out := post("/v1/auth/oidc/session", map[string]string{"id_token": tok}); code != http.StatusUnauthorized {
			t.Errorf("%s ID token: %d %v; want 401", name, code, out)
		}
	}
	// A nonce the server issued works once.
	_, start := post("/v1/auth/oidc/start", nil)
	nonce, _ := start["nonce"].(string)
	if nonce == "" {
		t.Fatalf("start: %v", start)
	}
	tok := s.p.Sign(t, claims(func(c map[string]any) { c["nonce"] = nonce }))
	code, out := post("/v1/auth/oidc/session", map[string]string{"id_token": tok, "nonce": nonce})
	if code != http.StatusOK || out["user"] != "erin" {
		t.Fatalf("good token with its nonce: %d %v", code, out)
	}
	if code, out := post("/v1/auth/oidc/session", map[string]string{"id_token": tok, "nonce": nonce}); code != http.StatusUnauthorized {
		t.Errorf("replayed nonce: %d %v; want 401", code, out)
	}
	// The session works, as erin with eng from the claims.
	s.tokens["erin-sso"], _ = out["token"].(string)
	var who whoOut
	s.ok("erin-sso", &who, "whoami", "-o", "json")
	if who.Name != "erin" || strings.Join(who.Groups, ",") != "eng" {
		t.Errorf("whoami = %+v", who)
	}
}

// TestSSOServerCallbackLogin: mayfly login --server-callback, for a CLI
// that cannot listen: the browser comes back to the server, whose page
// shows a code the person types into the CLI; a wrong code ends the login.
func TestSSOServerCallbackLogin(t *testing.T) {
	s := startSSOWorld(t, "12h")
	s.p.SetUser("erin")
	codeRE := regexp.MustCompile(`<code id="mayfly-code">([A-Z0-9-]+)</code>`)
	attempt := func(typed func(shown string) string) (loginOut, error) {
		stdin, typeIn := io.Pipe()
		defer typeIn.Close()
		w := newWatcher(authURLRE)
		var out bytes.Buffer
		done := make(chan error, 1)
		go func() {
			done <- run(context.Background(), []string{"login", "--server-callback", "--no-browser", "-o", "json"}, s.env("erin"), stdin, &out, w)
		}()
		select {
		case u := <-w.found:
			resp, err := http.Get(u) // the browser, through the provider, back to the server
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			m := codeRE.FindSubmatch(page)
			if resp.StatusCode != http.StatusOK || m == nil {
				t.Fatalf("callback page: %s %s; want a code", resp.Status, page)
			}
			if !strings.HasPrefix(resp.Request.URL.String(), "http://"+s.addr+"/v1/auth/callback") {
				t.Errorf("the browser ended at %s; want the server's callback", resp.Request.URL)
			}
			io.WriteString(typeIn, typed(string(m[1]))+"\n")
		case err := <-done:
			return loginOut{}, err
		}
		err := <-done
		var lo loginOut
		if err == nil {
			json.Unmarshal(out.Bytes(), &lo)
		}
		return lo, err
	}
	if _, err := attempt(func(string) string { return "BBBB-BBBB" }); mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED || !strings.Contains(err.Error(), "wrong code") {
		t.Errorf("wrong code: %v; want refused", err)
	}
	if _, err := s.as("erin", "whoami"); err == nil {
		t.Errorf("whoami after a refused login succeeded")
	}
	lo, err := attempt(func(shown string) string { return strings.ToLower(shown) })
	if err != nil || lo.User != "erin" || lo.Method != "oidc" {
		t.Fatalf("login with the shown code: %+v %v", lo, err)
	}
	var who whoOut
	s.asOK("erin", &who, "whoami", "-o", "json")
	if who.Name != "erin" || strings.Join(who.Groups, ",") != "eng" {
		t.Errorf("whoami = %+v", who)
	}
}
