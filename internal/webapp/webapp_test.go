package webapp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// tokens authenticates "<name>-token" as name.
type tokens map[string]httpapi.Identity

func (ts tokens) Authenticate(sum string) (httpapi.Identity, bool) {
	id, ok := ts[sum]
	return id, ok
}

// appWorld is the app over the real API, broker and a SQLite store.
type appWorld struct {
	t      *testing.T
	b      *broker.Broker
	srv    *httptest.Server
	policy *policy.Set
}

func newAppWorld(t *testing.T) *appWorld {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "mayfly.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	targets := map[string]mayfly.Target{"db": {Name: "db", Kind: "postgres", Grants: map[string]mayfly.Grant{"write": {Name: "write"}, "read": {Name: "read"}}}}
	ps, err := policy.Compile([]policy.Policy{
		{Name: "eng-read", Groups: []string{"eng"}, Targets: []string{"db"}, Grants: []string{"read"}, MaxDuration: time.Hour},
		{Name: "eng-write", Groups: []string{"eng"}, Targets: []string{"db"}, Grants: []string{"write"}, MaxDuration: 2 * time.Hour,
			Approvals: 1, ApproverGroups: []string{"dba"}, ReasonPattern: `^INC-[0-9]+`},
		{Name: "oncall", Targets: []string{"db"}, Grants: []string{"write"}, MaxDuration: time.Hour,
			BreakGlass: &policy.BreakGlass{Groups: []string{"oncall"}, MaxDuration: 30 * time.Minute}},
	}, []policy.TargetInfo{{Name: "db", Kind: "postgres", Grants: []string{"read", "write"}}})
	if err != nil {
		t.Fatal(err)
	}
	b := broker.New(&broker.Config{Targets: targets, Policies: ps, Users: map[string][]string{"alice": {"eng", "oncall"}, "bob": {"dba"}},
		UserOrder: []string{"alice", "bob"}},
		broker.Options{Store: db, HMACKey: []byte("k")})
	auth := tokens{}
	for _, id := range []httpapi.Identity{{Name: "alice", Groups: []string{"eng", "oncall"}}, {Name: "bob", Groups: []string{"dba"}}, {Name: "root", Admin: true}} {
		sum := sha256.Sum256([]byte(id.Name + "-token"))
		auth[hex.EncodeToString(sum[:])] = id
	}
	api := httpapi.NewServer(httpapi.Deps{Broker: b, Auth: auth})
	app, err := New(Options{API: api, Changed: b.Changed})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app.Mount(api))
	t.Cleanup(srv.Close)
	return &appWorld{t: t, b: b, srv: srv, policy: ps}
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	w *appWorld
	c *http.Client
}

func (w *appWorld) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{w: w, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	b.w.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.w.srv.URL+path, body)
	if err != nil {
		b.w.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.w.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func field(t *testing.T, html string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(html)
	if m == nil {
		t.Fatalf("no csrf field in page:\n%s", html)
	}
	return m[1]
}

// signIn signs in with user's API token through the form; it returns the
// session's CSRF token.
func (b *browser) signIn(user string) string {
	t := b.w.t
	t.Helper()
	_, page := b.do("GET", "/app/signin", nil, nil)
	resp, _ := b.do("POST", "/app/signin", url.Values{"csrf": {field(t, page)}, "token": {user + "-token"}, "return": {"/app/request"}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/app/request" {
		t.Fatalf("sign in as %s: %d to %q; want 303 to /app/request", user, resp.StatusCode, resp.Header.Get("Location"))
	}
	_, page = b.do("GET", "/app/request", nil, nil)
	return field(t, page)
}

func checkHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") ||
		!strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("%s: Content-Security-Policy %q; want script-src 'self' without unsafe-*, frame-ancestors 'none'", what, csp)
	}
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %s = %q; want %q", what, k, got, want)
		}
	}
}

// TestRootContract: / redirects to the app, which answers with HTML and
// the security headers on every page, signed in or not.
func TestRootContract(t *testing.T) {
	w := newAppWorld(t)
	b := w.browser()
	resp, _ := b.do("GET", "/", nil, nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/app/" {
		t.Fatalf("GET / = %d to %q; want 302 to /app/", resp.StatusCode, resp.Header.Get("Location"))
	}
	checkHeaders(t, "GET /", resp.Header)
	resp, _ = b.do("GET", "/app/", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/app/signin?return=") {
		t.Fatalf("GET /app/ signed out = %d to %q; want 303 to the sign-in page", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := b.do("GET", "/app/signin", nil, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(page, "API token") {
		t.Fatalf("sign-in page: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), page)
	}
	checkHeaders(t, "sign-in page", resp.Header)
	if strings.Contains(page, "<script>") || regexp.MustCompile(`\son[a-z]+=`).MatchString(page) {
		t.Errorf("sign-in page has inline script:\n%s", page)
	}
	b.signIn("alice")
	for _, p := range []string{"/app/", "/app/request", "/app/access", "/app/approvals", "/app/static/app.js", "/app/nope"} {
		resp, _ := b.do("GET", p, nil, nil)
		checkHeaders(t, p, resp.Header)
	}
	// The API keeps its own answers.
	resp, _ = b.do("GET", "/healthz", nil, nil)
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz = %d; want 200", resp.StatusCode)
	}
}

// TestSignInCookie: a pasted token becomes an HttpOnly, SameSite=Lax
// session cookie (Secure over TLS); a wrong token is refused; a sign-in
// form without its double-submitted token is refused.
func TestSignInCookie(t *testing.T) {
	w := newAppWorld(t)
	b := w.browser()
	_, page := b.do("GET", "/app/signin", nil, nil)
	resp, page2 := b.do("POST", "/app/signin", url.Values{"csrf": {field(t, page)}, "token": {"wrong-token"}}, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page2, "That token was refused") {
		t.Errorf("wrong token: %d\n%s", resp.StatusCode, page2)
	}
	resp, _ = b.do("POST", "/app/signin", url.Values{"csrf": {"forged"}, "token": {"alice-token"}}, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in with a forged form token: %d; want 403", resp.StatusCode)
	}
	_, page = b.do("GET", "/app/signin", nil, nil)
	resp, _ = b.do("POST", "/app/signin", url.Values{"csrf": {field(t, page)}, "token": {"alice-token"}}, nil)
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == SessionCookie {
			sess = c
		}
	}
	if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode || sess.Secure || sess.Path != "/" {
		t.Fatalf("session cookie = %+v; want HttpOnly, SameSite=Lax, not Secure over plain HTTP, path /", sess)
	}
	_, page = b.do("GET", "/app/access", nil, nil)
	if !strings.Contains(page, `<span class="who">alice</span>`) {
		t.Errorf("signed-in page does not name alice:\n%s", page)
	}
	// Sign out forgets the cookie.
	resp, _ = b.do("POST", "/app/signout", url.Values{"csrf": {field(t, page)}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign out: %d", resp.StatusCode)
	}
	resp, _ = b.do("GET", "/app/access", nil, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after sign out, GET /app/access = %d; want a redirect to sign in", resp.StatusCode)
	}
}

func (w *appWorld) requests(user string) []*mayfly.Request {
	rs, err := w.b.ListRequests(context.Background(), broker.Caller{User: user, Admin: true}, mayfly.RequestFilter{})
	if err != nil {
		w.t.Fatal(err)
	}
	return rs
}

// TestCSRF: a state-changing form without the session's CSRF token, with
// a wrong one, or that the browser marks cross-site, changes nothing.
func TestCSRF(t *testing.T) {
	w := newAppWorld(t)
	b := w.browser()
	tok := b.signIn("alice")
	form := func(csrf string) url.Values {
		return url.Values{"csrf": {csrf}, "offer": {"db/write"}, "duration": {"30m"}, "reason": {"INC-1 fix"}}
	}
	for _, c := range []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no token", url.Values{"offer": {"db/write"}, "duration": {"30m"}, "reason": {"INC-1"}}, nil},
		{"wrong token", form("AAAA"), nil},
		{"another session's token", form(csrfToken("bob-token")), nil},
		{"cross-site", form(tok), map[string]string{"Sec-Fetch-Site": "cross-site"}},
	} {
		resp, page := b.do("POST", "/app/request", c.form, c.hdr)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d; want 403\n%s", c.name, resp.StatusCode, page)
		}
	}
	if n := len(w.requests("alice")); n != 0 {
		t.Fatalf("forged forms created %d requests; want none", n)
	}
	resp, _ := b.do("POST", "/app/request", form(tok), map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/app/access?created=") {
		t.Fatalf("request with the right token: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if rs := w.requests("alice"); len(rs) != 1 || rs[0].State != mayfly.RequestPending {
		t.Fatalf("requests = %v; want one pending", rs)
	}
}

// TestHostileTextInert: a reason full of markup reaches the approver's
// inbox as text.
func TestHostileTextInert(t *testing.T) {
	w := newAppWorld(t)
	alice, bob := w.browser(), w.browser()
	tok := alice.signIn("alice")
	hostile := `INC-7 <img src=x onerror=alert(1)><script>alert(2)</script>"'`
	resp, _ := alice.do("POST", "/app/request", url.Values{"csrf": {tok}, "offer": {"db/write"}, "duration": {"30m"}, "reason": {hostile}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("request: %d", resp.StatusCode)
	}
	bob.signIn("bob")
	_, page := bob.do("GET", "/app/approvals", nil, nil)
	if !strings.Contains(page, "INC-7 &lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;&#34;&#39;") {
		t.Errorf("inbox does not show the reason escaped:\n%s", page)
	}
	if strings.Contains(page, "<img") || strings.Contains(page, "<script>") {
		t.Errorf("inbox renders markup from the reason:\n%s", page)
	}
	_, page = alice.do("GET", "/app/access", nil, nil)
	if strings.Contains(page, "<img") {
		t.Errorf("my access renders markup from the reason:\n%s", page)
	}
}

// TestAdminPagesRefused: non-admins get 403 on every admin page; an
// admin gets them.
func TestAdminPagesRefused(t *testing.T) {
	w := newAppWorld(t)
	alice, root := w.browser(), w.browser()
	alice.signIn("alice")
	root.signIn("root")
	for _, p := range []string{"/app/admin/", "/app/admin/audit", "/app/admin/users", "/app/admin/review", "/app/admin/standing", "/app/admin/leases"} {
		resp, page := alice.do("GET", p, nil, nil)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "need an admin") {
			t.Errorf("alice GET %s = %d; want 403\n%s", p, resp.StatusCode, page)
		}
		resp, page = root.do("GET", p, nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("root GET %s = %d; want 200\n%s", p, resp.StatusCode, page)
		}
	}
	resp, page := root.do("GET", "/app/admin/audit", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(page, "Chain verified") {
		t.Errorf("audit page does not show the chain verified:\n%s", page)
	}
	// A non-admin's forged suspend goes through the API's check too.
	_, page = alice.do("GET", "/app/access", nil, nil)
	resp, _ = alice.do("POST", "/app/admin/users/bob/suspend", url.Values{"csrf": {field(t, page)}}, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("alice suspends bob: %d; want 403", resp.StatusCode)
	}
	if st := w.b.UserStatus("bob"); st != "active" {
		t.Errorf("bob is %s; want active", st)
	}
}

// TestPreview: the live decision before sending names the approvers, the
// maximum and whether the reason matches the pattern.
func TestPreview(t *testing.T) {
	w := newAppWorld(t)
	b := w.browser()
	tok := b.signIn("alice")
	for _, c := range []struct {
		form url.Values
		want []string
	}{
		{url.Values{"offer": {"db/read"}, "duration": {"30m"}}, []string{`"decision":"auto"`, `"policy":"eng-read"`, `"max_duration":"1h0m0s"`}},
		{url.Values{"offer": {"db/write"}, "duration": {"30m"}, "reason": {"INC-9 hotfix"}}, []string{`"decision":"approval"`, `"approver_groups":["dba"]`, `"reason_matches":true`}},
		{url.Values{"offer": {"db/write"}, "duration": {"30m"}, "reason": {"because"}}, []string{`"decision":"deny"`, `"reason_pattern":"^INC-[0-9]+"`, `"reason_matches":false`}},
		{url.Values{"offer": {"db/write"}, "duration": {"3h"}, "reason": {"INC-9"}}, []string{`"decision":"deny"`, `max_duration`}},
		{url.Values{"offer": {"db/write"}, "duration": {"10m"}, "reason": {"outage"}, "break_glass": {"1"}}, []string{`"decision":"break_glass"`, `"max_duration":"30m0s"`}},
	} {
		resp, body := b.do("POST", "/app/preview", c.form, map[string]string{CSRFHeader: tok})
		if resp.StatusCode != 200 {
			t.Errorf("preview %v: %d %s", c.form, resp.StatusCode, body)
			continue
		}
		for _, s := range c.want {
			if !strings.Contains(body, s) {
				t.Errorf("preview %v = %s; want it to contain %s", c.form, body, s)
			}
		}
	}
	resp, _ := b.do("POST", "/app/preview", url.Values{"offer": {"db/read"}}, map[string]string{CSRFHeader: "forged"})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("preview with a forged header: %d; want 403", resp.StatusCode)
	}
	_, page := b.do("GET", "/app/request", nil, nil)
	if !strings.Contains(page, "break-glass") || !strings.Contains(page, "1 from dba") {
		t.Errorf("request page lacks the catalog's terms:\n%s", page)
	}
}

// FuzzSafeReturn: a post-sign-in destination always stays on the app.
func FuzzSafeReturn(f *testing.F) {
	for _, s := range []string{"/app/access", "//evil.example/app/", "/app/\\evil", "https://evil.example/app/", "/app/x\r\nSet-Cookie: a=b", "", "/v1/whoami"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := safeReturn(s)
		u, err := url.Parse(got)
		if !strings.HasPrefix(got, Prefix) || err != nil || u.Host != "" || u.Scheme != "" || strings.ContainsAny(got, "\\\r\n") {
			t.Errorf("safeReturn(%q) = %q; want a path under %s", s, got, Prefix)
		}
	})
}

// TestShellQuote: the connection command survives any password a shell
// would otherwise interpret.
func TestShellQuote(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, s := range []string{"plain", "it's", `a"b$c` + "`d`", "x'; rm -rf / #", "", "multi\nline"} {
		out, err := exec.Command(sh, "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh printf %s = %q, %v; want %q", shellQuote(s), out, err, s)
		}
	}
}

// TestAdminSuspendResume: an admin suspends and resumes a user from the
// users page, through the API's own suspend and resume.
func TestAdminSuspendResume(t *testing.T) {
	w := newAppWorld(t)
	root, bob := w.browser(), w.browser()
	tok := root.signIn("root")
	bob.signIn("bob")
	resp, page := root.do("GET", "/app/admin/users", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `id="user-bob"`) {
		t.Fatalf("users page: %d\n%s", resp.StatusCode, page)
	}
	resp, _ = root.do("POST", "/app/admin/users/bob/suspend", url.Values{"csrf": {tok}, "reason": {"left the team"}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("suspend: %d", resp.StatusCode)
	}
	if st := w.b.UserStatus("bob"); st != "suspended" {
		t.Fatalf("bob is %s; want suspended", st)
	}
	_, page = root.do("GET", "/app/admin/users?user=bob&status=suspended", nil, nil)
	if !strings.Contains(page, "User bob is now suspended.") || !strings.Contains(page, `action="/app/admin/users/bob/resume"`) {
		t.Errorf("users page after suspending:\n%s", page)
	}
	resp, _ = root.do("POST", "/app/admin/users/bob/resume", url.Values{"csrf": {tok}}, nil)
	if resp.StatusCode != http.StatusSeeOther || w.b.UserStatus("bob") != "active" {
		t.Errorf("resume: %d, bob %s", resp.StatusCode, w.b.UserStatus("bob"))
	}
	resp, _ = root.do("POST", "/app/admin/users/bob/delete", url.Values{"csrf": {tok}}, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown action: %d; want 404", resp.StatusCode)
	}
}

// TestConnectCommand: the ready-to-paste commands quote what they carry.
func TestConnectCommand(t *testing.T) {
	for _, c := range []struct {
		cv   httpapi.CredsView
		want string
	}{
		{httpapi.CredsView{Kind: "postgres", Credential: mayfly.Credential{Username: "mf_a", Password: "p'w", Host: "db", Port: 5433, Database: "app"}},
			`PGPASSWORD='p'\''w' psql -h 'db' -p 5433 -U 'mf_a' 'app'`},
		{httpapi.CredsView{Kind: "mysql", Credential: mayfly.Credential{Username: "mf_a", Password: "pw", Host: "db"}},
			`MYSQL_PWD='pw' mysql -h 'db' -P 3306 -u 'mf_a'`},
		{httpapi.CredsView{Kind: "redis", Credential: mayfly.Credential{Username: "mf_a", Password: "pw", Host: "cache", Port: 6380}},
			`REDISCLI_AUTH='pw' redis-cli -h 'cache' -p 6380 --user 'mf_a'`},
		{httpapi.CredsView{Kind: "ssh", Credential: mayfly.Credential{Username: "alice", Host: "web1", Certificate: "ssh-ed25519-cert-v01@openssh.com AAAA\n"}},
			`printf '%s\n' 'ssh-ed25519-cert-v01@openssh.com AAAA' > mayfly-cert.pub && ssh -o CertificateFile=mayfly-cert.pub -p 22 'alice'@'web1'`},
		{httpapi.CredsView{Kind: "script"}, ``},
	} {
		if got := connectCommand(c.cv); got != c.want {
			t.Errorf("connectCommand(%s) =\n%s\nwant\n%s", c.cv.Kind, got, c.want)
		}
	}
}
