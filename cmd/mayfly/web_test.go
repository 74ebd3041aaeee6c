package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly/internal/oidctest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// webShots is where the browser tests save their screenshots: the
// directory in MAYFLY_WEB_SHOTS, else a temporary one.
func webShots(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MAYFLY_WEB_SHOTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// chromiumFlags are the flags every browser test runs Chromium with.
func chromiumAllocator(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Unavailable(t, "chromium (scripts/chromium.sh installs it)", err)
	}
	return chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin), chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
}

// tab is one person's browser: a browser context of its own (cookies
// apart), one tab.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context
	dir  string

	mu      sync.Mutex
	dialogs []string // JavaScript dialogs that opened (there must be none)
	bytes   float64  // bytes received while counting
	count   bool
}

func newTab(t *testing.T, browser context.Context, name, dir string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	tb := &tab{t: t, name: name, ctx: ctx, dir: dir}
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{})
		return err
	})); err != nil {
		t.Fatalf("%s: start tab: %v", name, err)
	}
	dialogs := make(chan struct{}, 8)
	if err := chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			tb.mu.Lock()
			tb.dialogs = append(tb.dialogs, string(e.Type)+": "+e.Message)
			tb.mu.Unlock()
			select {
			case dialogs <- struct{}{}:
			default:
			}
		case *network.EventLoadingFinished:
			tb.mu.Lock()
			if tb.count {
				tb.bytes += e.EncodedDataLength
			}
			tb.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	// A dialog would block the page: dismiss it (it is recorded).
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-dialogs:
				chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
					_, err := cdp.Call(ctx, tg, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{})
					return err
				}))
			}
		}
	}()
	return tb
}

// do runs steps with a bound on time, failing the test with what the page
// showed.
func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.viewShot("failed-" + tb.name)
		body, _ := evalIn[string](tb, `document.location.href + "\n" + document.body.innerText`)
		tb.t.Fatalf("%s: %s: %v\npage: %s", tb.name, what, err, body)
	}
}

func evalIn[T any](tb *tab, js string) (T, error) {
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

func (tb *tab) eval(js string) string {
	tb.t.Helper()
	v, err := evalIn[string](tb, js)
	if err != nil {
		tb.t.Fatalf("%s: evaluate %s: %v", tb.name, js, err)
	}
	return v
}

// waitJS waits until the expression is true.
func (tb *tab) waitJS(what, js string) {
	tb.t.Helper()
	// Evaluated afresh each time, not with a poll inside the page: a poll
	// does not survive the page moving to another document (a form's
	// answer), which is often what is being waited for.
	deadline := time.Now().Add(20 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := evalIn[bool](tb, js)
		if err == nil && ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	tb.viewShot("failed-" + tb.name)
	body, _ := evalIn[string](tb, `document.location.href + "\n" + document.body.innerText`)
	tb.t.Fatalf("%s: %s: not so within 20s (last error %v)\npage: %s", tb.name, what, lastErr, body)
}

// waitNotice waits until the page's notice (the message shown after an
// action) holds text. A page can still show an earlier action's notice
// while the next one's answer loads, so waiting for any notice is not
// enough.
func (tb *tab) waitNotice(what, text string) {
	tb.t.Helper()
	js, _ := json.Marshal(text)
	tb.waitJS(what, `(() => { const n = document.querySelector("p.notice"); return !!n && n.textContent.includes(`+string(js)+`); })()`)
}

// shot saves a screenshot of the whole page as NAME.png.
func (tb *tab) shot(name string) {
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	// A page that is between documents (a form's answer loading, a live
	// region replaced) is briefly not attached: wait for the document to
	// settle and try again.
	var png []byte
	var err error
	for try := 0; try < 5; try++ {
		if try > 0 {
			time.Sleep(300 * time.Millisecond)
		}
		_, _ = chromedp.Run(ctx, chromedp.Poll[bool](`document.readyState === "complete"`, chromedp.WithPollingInterval(50*time.Millisecond)))
		if png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			break
		}
	}
	if err != nil {
		tb.t.Errorf("%s: screenshot %s: %v", tb.name, name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(tb.dir, name+".png"), png, 0o644); err != nil {
		tb.t.Error(err)
	}
}

// viewShot saves a screenshot of what the window shows as NAME.png.
func (tb *tab) viewShot(name string) {
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		os.WriteFile(filepath.Join(tb.dir, name+".png"), png, 0o644)
	}
}

func (tb *tab) noDialogs() {
	tb.t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.dialogs) > 0 {
		tb.t.Errorf("%s: JavaScript dialogs opened: %q", tb.name, tb.dialogs)
	}
}

func (tb *tab) location() string {
	tb.t.Helper()
	return tb.eval(`document.location.href`)
}

// signIn signs user in through the identity provider from the server's
// root URL, as a person would: / leads to the sign-in page, whose
// single sign-on button goes to the provider and back.
func (tb *tab) signIn(p *oidctest.Provider, base, user, shot string) {
	tb.t.Helper()
	p.SetUser(user)
	tb.do("open the root URL", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("sso")))
	if shot != "" {
		tb.shot(shot)
	}
	tb.do("sign in with single sign-on", chromedp.Click(chromedp.ID("sso")), chromedp.WaitVisible(chromedp.CSS("nav .who")))
	if got := tb.eval(`document.querySelector("nav .who").textContent`); got != user {
		tb.t.Fatalf("%s: signed in as %q; want %q", tb.name, got, user)
	}
}

// pgLogin logs in to PostgreSQL as user with password and returns who the
// server says we are.
func webPGLogin(user, password string) (string, error) {
	u, err := url.Parse(testenv.PostgresDSN())
	if err != nil {
		return "", err
	}
	u.User = url.UserPassword(user, password)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, u.String())
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	var who string
	var write bool
	err = c.QueryRow(ctx, `SELECT current_user, pg_has_role(current_user, 'pg_write_all_data', 'member')`).Scan(&who, &write)
	if err == nil && !write {
		err = fmt.Errorf("%s cannot write", who)
	}
	return who, err
}

// webWorldYAML adds a target with a write grant, a policy that needs a
// dba's approval and a reason naming an incident, break-glass for eng,
// and single sign-on at the provider.
func webWorld(t *testing.T) (*world, *oidctest.Provider) {
	t.Helper()
	p := oidctest.Start(t,
		oidctest.User{Name: "alice", Email: "alice@example.com", Groups: []string{"eng"}},
		oidctest.User{Name: "bob", Email: "bob@example.com", Groups: []string{"dba"}},
		oidctest.User{Name: "carol", Email: "carol@example.com", Groups: []string{"dba", "admin"}})
	targets := fmt.Sprintf(`  - name: orders-db
    kind: postgres
    prefix: mfw_
    dsn: %q
    grants:
      write: {roles: [pg_write_all_data, pg_read_all_data]}
`, testenv.PostgresDSN())
	extra := fmt.Sprintf(`  - {name: eng-write, groups: [eng], targets: [orders-db], grants: [write], max_duration: 1h, approvals: 1, approver_groups: [dba], reason_pattern: '^INC-[0-9]+'}
  - {name: eng-emergency, targets: [orders-db], grants: [write], max_duration: 1h, break_glass: {groups: [eng], max_duration: 15m}}
auth: {oidc: {issuer: %q, client_id: %s}, session_ttl: 12h}
`, p.Issuer, oidctest.PublicClient)
	w := startWorld(t, worldOpts{targets: targets, extraYAML: extra})
	return w, p
}

// TestWebJourney drives the web app in headless Chromium against a real
// broker, PostgreSQL and identity provider: alice asks for write access
// and sees that a dba must approve; bob's open inbox shows it live and he
// approves; alice reveals the credential once, logs in with it (psql and
// pgx; a wrong password is refused), watches the countdown and ends the
// lease; the account is gone. Then: a hostile reason stays text, a forged
// cross-origin POST is refused, a second reveal is refused, a non-admin is
// refused the admin pages.
func TestWebJourney(t *testing.T) {
	alloc, cancelAlloc := chromiumAllocator(t)
	defer cancelAlloc()
	w, p := webWorld(t)
	base := "http://" + w.addr
	dir := webShots(t)
	t.Logf("screenshots in %s", dir)

	browser, cancel := chromedp.NewContext(alloc)
	defer cancel()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	alice := newTab(t, browser, "alice", dir)
	bob := newTab(t, browser, "bob", dir)

	// First load: the sign-in page and everything it loads.
	alice.mu.Lock()
	alice.count = true
	alice.mu.Unlock()
	alice.signIn(p, base, "alice", "01-signin")
	alice.mu.Lock()
	alice.count = false
	weight := alice.bytes
	alice.mu.Unlock()
	t.Logf("first load (/, the sign-in page, its script and styles, through single sign-on to the app): %.0f bytes transferred", weight)
	if weight <= 0 || weight > 200*1024 {
		t.Errorf("first load transferred %.0f bytes; want some, under 200 KB", weight)
	}

	// Bob opens his inbox before anything arrives.
	bob.signIn(p, base, "bob", "")
	bob.do("open the inbox", chromedp.Navigate(base+"/app/approvals"), chromedp.WaitVisible(chromedp.ID("inbox-count")))
	bob.eval(`window.mayflyNoReload = "still here"; "ok"`)
	bob.waitJS("live updates connect", `document.documentElement.dataset.live === "open"`)

	// Alice drafts a request and sees the decision before sending.
	alice.do("open the request form", chromedp.Navigate(base+"/app/request"), chromedp.WaitVisible(chromedp.ID("offer")))
	alice.eval(`(() => { const s = document.getElementById("offer"); s.value = "orders-db/write"; s.dispatchEvent(new Event("change", {bubbles: true})); return s.value; })()`)
	alice.do("fill the form", chromedp.SendKeys(chromedp.ID("duration"), "30m"), chromedp.SendKeys(chromedp.ID("reason"), "INC-4711 fix stuck orders"))
	alice.waitJS("the live decision names the approvers",
		`(document.getElementById("decision-outcome") || {dataset: {}}).dataset.decision === "approval" && document.getElementById("decision").textContent.includes("matches")`)
	dec := alice.eval(`document.getElementById("decision").innerText`)
	for _, want := range []string{"Needs approval", "1 approval from dba", "eng-write", "1h0m0s", "^INC-[0-9]+", "matches"} {
		if !strings.Contains(dec, want) {
			t.Errorf("decision preview %q lacks %q", dec, want)
		}
	}
	if bg := alice.eval(`document.querySelector("label[for=break_glass]").textContent`); !strings.Contains(bg, "Break-glass") {
		t.Errorf("break-glass is not offered: %q", bg)
	}
	alice.shot("02-request-preview")
	alice.do("send the request", chromedp.Click(chromedp.ID("submit-request")), chromedp.WaitVisible(chromedp.CSS("article.request.fresh")))
	loc, _ := url.Parse(alice.location())
	id := loc.Query().Get("created")
	if id == "" {
		t.Fatalf("after sending, at %s; want /app/access?created=ID", loc)
	}
	if got := alice.eval(`document.getElementById("req-` + id + `").innerText`); !strings.Contains(got, "Waiting for approval: 0 of 1 approvals from dba") {
		t.Errorf("alice's request shows %q; want it waiting for a dba", got)
	}
	alice.shot("03-request-pending")

	// It arrives in bob's open inbox without a reload.
	start := time.Now()
	bob.do("the request arrives live", chromedp.WaitVisible(chromedp.ID("inbox-"+id)))
	t.Logf("request %s appeared in bob's open inbox %s after alice's page showed it", id, time.Since(start).Round(time.Millisecond))
	if got := bob.eval(`String(window.mayflyNoReload)`); got != "still here" {
		t.Errorf("bob's inbox reloaded the page (marker %q); want a live update", got)
	}
	row := bob.eval(`document.getElementById("inbox-` + id + `").innerText`)
	for _, want := range []string{"alice wants orders-db / write for 30m0s", "INC-4711 fix stuck orders", "eng-write", "0 of 1 approvals from dba"} {
		if !strings.Contains(row, want) {
			t.Errorf("inbox row %q lacks %q", row, want)
		}
	}
	bob.shot("04-inbox-live")
	bob.do("approve", chromedp.SendKeys(chromedp.ID("ar-"+id), "go ahead"), chromedp.Click(chromedp.ID("approve-"+id)),
		chromedp.WaitVisible(chromedp.CSS("p.notice")))
	if got := bob.eval(`document.querySelector("p.notice").textContent`); !strings.Contains(got, "approved") {
		t.Errorf("after approving, bob sees %q", got)
	}

	// Alice's page turns live to offer the credential.
	alice.do("approval arrives live", chromedp.WaitVisible(chromedp.ID("activate-"+id)))
	alice.shot("05-approved")
	alice.do("activate", chromedp.Click(chromedp.ID("activate-"+id)), chromedp.WaitVisible(chromedp.ID("c-pass")))
	user, pass, cmd := alice.eval(`document.getElementById("c-user").textContent`), alice.eval(`document.getElementById("c-pass").textContent`),
		alice.eval(`document.getElementById("c-cmd").textContent`)
	leaseID := alice.eval(`document.getElementById("creds").dataset.leaseId`)
	if !strings.HasPrefix(user, "mfw_alice_") || len(pass) < 16 || !strings.Contains(cmd, "psql") {
		t.Fatalf("credential: user %q, password of %d characters, command %q", user, len(pass), cmd)
	}
	alice.do("copy the command", chromedp.Click(chromedp.CSS(`button[data-copy="c-cmd"]`)))
	alice.waitJS("the copy is announced", `document.getElementById("live-status").textContent !== ""`)
	alice.shot("06-credential-once")

	// The credential logs in; a wrong password does not.
	if who, err := webPGLogin(user, pass); err != nil || who != user {
		t.Fatalf("pgx login as %s: %q, %v", user, who, err)
	}
	if _, err := webPGLogin(user, pass+"x"); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("wrong password: %v; want password authentication failed", err)
	}
	if psql, err := exec.LookPath("psql"); err == nil {
		out, err := exec.Command("sh", "-c", cmd+" -tAc 'select current_user'").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != user {
			t.Errorf("the copied command (%s): %q, %v; want %s", psql, out, err, user)
		}
	} else {
		testenv.Unavailable(t, "psql", err)
	}

	// Never shown again: a second activation is refused, and no page has it.
	second := alice.eval(`fetch("/app/requests/` + id + `/activate", {method: "POST", headers: {"X-Mayfly-CSRF": document.querySelector('meta[name="mayfly-csrf"]').content}})
		.then(r => r.status + " " + r.statusText + " " + r.headers.get("content-type")).then(s => s)`)
	if !strings.HasPrefix(second, "409") {
		t.Errorf("second reveal answered %q; want 409", second)
	}
	alice.do("back to my access", chromedp.Navigate(base+"/app/access"), chromedp.WaitVisible(chromedp.ID("lease-"+leaseID)))
	if html := alice.eval(`document.documentElement.outerHTML`); strings.Contains(html, pass) {
		t.Errorf("my access shows the password again")
	}
	// The countdown runs.
	c1 := alice.eval(`document.querySelector("#lease-` + leaseID + ` .countdown").textContent`)
	time.Sleep(1100 * time.Millisecond)
	c2 := alice.eval(`document.querySelector("#lease-` + leaseID + ` .countdown").textContent`)
	if m := regexp.MustCompile(`^(\d+)m \d+s left$`).FindStringSubmatch(c1); m == nil || len(m[1]) != 2 || m[1] < "20" || m[1] > "30" || c1 == c2 {
		t.Errorf("countdown %q then %q; want it ticking down from under 30m", c1, c2)
	}
	alice.shot("07-countdown")

	// Extend: eng-write needs one approval for an extension too, so it waits
	// for bob; he approves it from his open inbox, and the lease's end on
	// alice's open page moves 10 minutes on.
	expiresOf := func() time.Time {
		v := alice.eval(`document.querySelector("#lease-` + leaseID + ` .countdown").dataset.expires`)
		at, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t.Fatalf("lease end %q: %v", v, err)
		}
		return at
	}
	exp1 := expiresOf()
	alice.do("extend", chromedp.SendKeys(chromedp.ID("ext-d-"+leaseID), "10m"), chromedp.SendKeys(chromedp.ID("ext-r-"+leaseID), "INC-4711 more time"),
		chromedp.Click(chromedp.CSS(`#lease-`+leaseID+` form.extend button`)))
	alice.waitNotice("the extension is asked for", "Extension requested")
	note := alice.eval(`document.querySelector("p.notice").textContent`)
	m := regexp.MustCompile(`Extension requested \((req_[a-z0-9]+)\)`).FindStringSubmatch(note)
	if m == nil {
		t.Fatalf("after asking to extend, alice sees %q; want the extension waiting for approval", note)
	}
	ext := m[1]
	bob.do("the extension arrives live", chromedp.WaitVisible(chromedp.ID("inbox-"+ext)))
	if row := bob.eval(`document.getElementById("inbox-` + ext + `").innerText`); !strings.Contains(row, "extension of "+leaseID) || !strings.Contains(row, "INC-4711 more time") {
		t.Errorf("inbox row of the extension %q; want it marked as extending %s, with its reason", row, leaseID)
	}
	bob.do("approve the extension", chromedp.Click(chromedp.ID("approve-"+ext)))
	bob.waitNotice("the extension's approval is confirmed", "Request "+ext+" approved")
	alice.waitJS("the lease's end moves on", `document.querySelector("#lease-`+leaseID+` .countdown").dataset.expires !== "`+exp1.UTC().Format(time.RFC3339)+`"`)
	if d := expiresOf().Sub(exp1); d < 10*time.Minute-time.Second || d > 10*time.Minute+time.Second {
		t.Errorf("the extension moved the lease's end by %s; want 10m", d)
	}
	alice.shot("07b-extended")

	// End now: the account is gone.
	alice.do("end the lease", chromedp.Click(chromedp.ID("end-"+leaseID)))
	alice.waitNotice("the lease's end is confirmed", "Lease "+leaseID+" ended")
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := webPGLogin(user, pass)
		if err != nil && strings.Contains(err.Error(), "password authentication failed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("login as %s after ending the lease: %v; want refused", user, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	alice.shot("08-ended")

	// A hostile reason is shown as text, and runs nothing.
	hostile := `INC-666 <img src=x onerror=alert(1)><script>alert(2)</script>`
	alice.do("open the request form", chromedp.Navigate(base+"/app/request"), chromedp.WaitVisible(chromedp.ID("offer")))
	alice.eval(`(() => { const s = document.getElementById("offer"); s.value = "orders-db/write"; s.dispatchEvent(new Event("change", {bubbles: true})); return s.value; })()`)
	alice.do("send a hostile reason", chromedp.SendKeys(chromedp.ID("duration"), "10m"), chromedp.SendKeys(chromedp.ID("reason"), hostile),
		chromedp.Click(chromedp.ID("submit-request")), chromedp.WaitVisible(chromedp.CSS("article.request.fresh")))
	loc, _ = url.Parse(alice.location())
	hid := loc.Query().Get("created")
	bob.do("open the inbox", chromedp.Navigate(base+"/app/approvals"), chromedp.WaitVisible(chromedp.ID("inbox-"+hid)))
	if got := bob.eval(`document.querySelector("#inbox-` + hid + ` .reason .text").textContent`); got != hostile {
		t.Errorf("hostile reason shows as %q; want the text %q", got, hostile)
	}
	if n := bob.eval(`String(document.querySelectorAll("main img, main script").length)`); n != "0" {
		t.Errorf("the hostile reason made %s elements", n)
	}
	time.Sleep(300 * time.Millisecond)
	bob.shot("09-hostile-reason-inert")
	alice.noDialogs()
	bob.noDialogs()

	// A forged POST from a page of another origin (same site, so the
	// session cookie goes along) is refused and changes nothing.
	evil := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(rw, `<!doctype html><title>win a prize</title><form id="f" method="post" action="%s/app/requests/%s/approve"><input name="reason" value="forged"></form><script>document.getElementById("f").submit()</script>`, base, hid)
	}))
	defer evil.Close()
	bob.do("visit the hostile page", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.ID("error-message")))
	if got := bob.eval(`document.getElementById("error-message").textContent`); !strings.Contains(got, "CSRF") {
		t.Errorf("forged POST answered %q; want a CSRF refusal", got)
	}
	bob.shot("10-forged-post-refused")
	// The request as the API gives it to an admin.
	type requestOut struct {
		State     string   `json:"state"`
		Approvers []string `json:"approvers"`
	}
	request := func(id string) requestOut {
		var req requestOut
		hr, _ := http.NewRequest("GET", base+"/v1/requests/"+id, nil)
		hr.Header.Set("Authorization", "Bearer "+w.tokens["carol"])
		r, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Fatalf("GET /v1/requests/%s: %v", id, err)
		}
		return req
	}
	if req := request(hid); req.State != "pending" || len(req.Approvers) != 0 {
		t.Errorf("after the forged POST the request is %s, approved by %v; want pending, no approvals", req.State, req.Approvers)
	}

	// A non-admin is refused the admin pages.
	resp := func(tb *tab, u string) int64 {
		ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
		defer cancel()
		r, err := chromedp.Run(ctx, chromedp.NavigateResponse(u))
		if err != nil {
			t.Fatalf("%s: open %s: %v", tb.name, u, err)
		}
		return r.Status
	}
	for _, pg := range []string{"/app/admin/audit", "/app/admin/users", "/app/admin/leases"} {
		if st := resp(alice, base+pg); st != http.StatusForbidden {
			t.Errorf("alice opens %s: %d; want 403", pg, st)
		}
	}
	if got := alice.eval(`document.getElementById("error-message").textContent`); !strings.Contains(got, "need an admin") {
		t.Errorf("alice sees %q on an admin page", got)
	}
	if got := alice.eval(`String(document.querySelectorAll('nav a[href^="/app/admin"]').length)`); got != "0" {
		t.Errorf("alice's navigation links the admin pages")
	}
	alice.shot("11-admin-refused")

	// An admin sees them.
	carol := newTab(t, browser, "carol", dir)
	carol.signIn(p, base, "carol", "")
	if st := resp(carol, base+"/app/admin/audit"); st != http.StatusOK {
		t.Fatalf("carol opens the audit trail: %d", st)
	}
	if got := carol.eval(`document.getElementById("chain").textContent`); !strings.Contains(got, "Chain verified") {
		t.Errorf("audit page chain status %q", got)
	}
	carol.shot("12-admin-audit")
	carol.do("users", chromedp.Navigate(base+"/app/admin/users"), chromedp.WaitVisible(chromedp.ID("user-alice")))
	carol.shot("13-admin-users")

	// On a phone, bob's inbox fits the screen.
	bob.do("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)), chromedp.Navigate(base+"/app/approvals"), chromedp.WaitVisible(chromedp.ID("inbox-"+hid)))
	if got := bob.eval(`String(document.documentElement.scrollWidth <= window.innerWidth)`); got != "true" {
		t.Errorf("on a phone the inbox scrolls sideways (%s wide in %s)", bob.eval(`String(document.documentElement.scrollWidth)`), bob.eval(`String(window.innerWidth)`))
	}
	bob.shot("14-phone-inbox")

	// Alice withdraws the request she no longer needs: it leaves her open
	// requests and bob's inbox, and is cancelled in the API.
	alice.do("open my access", chromedp.Navigate(base+"/app/access"), chromedp.WaitVisible(chromedp.ID("req-"+hid)))
	alice.do("cancel the request", chromedp.Click(chromedp.CSS(`#req-`+hid+` form[action$="/cancel"] button`)))
	alice.waitNotice("the cancellation is confirmed", "Request "+hid+" cancelled.")
	if n := alice.eval(`String(document.querySelectorAll("article#req-` + hid + `").length)`); n != "0" {
		t.Errorf("the cancelled request is still among alice's open requests")
	}
	if got := alice.eval(`(document.querySelector("tr#req-` + hid + `") || {}).innerText || ""`); !strings.Contains(got, "cancelled") {
		t.Errorf("alice's past requests show %q for the cancelled one; want it cancelled", got)
	}
	alice.shot("17-request-cancelled")
	if st := request(hid).State; st != "cancelled" {
		t.Errorf("after alice cancelled it the request is %s; want cancelled", st)
	}
	bob.do("open the inbox again", chromedp.Navigate(base+"/app/approvals"), chromedp.WaitVisible(chromedp.ID("inbox-count")))
	if n := bob.eval(`String(document.querySelectorAll("#inbox-` + hid + `").length)`); n != "0" {
		t.Errorf("the cancelled request is still in bob's inbox")
	}
	alice.noDialogs()
	bob.noDialogs()
}
