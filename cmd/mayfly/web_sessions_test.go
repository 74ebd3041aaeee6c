package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// tokenSignIn signs user in on the sign-in page with their API token.
func (tb *tab) tokenSignIn(base, token string) {
	tb.t.Helper()
	tb.do("sign in with a token", chromedp.Navigate(base+"/app/signin"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Submit(chromedp.ID("token")), chromedp.WaitVisible(chromedp.CSS("nav .who")))
}

// TestWebSessionPlayer: an SSH session through the gateway is listed in
// the web app, linked from the audit trail and the access review, and its
// terminal recording plays in the browser showing what the user saw; the
// session is not shown to another user.
func TestWebSessionPlayer(t *testing.T) {
	alloc, cancelAlloc := chromiumAllocator(t)
	defer cancelAlloc()
	g := startSSHGatewayWorld(t)
	base := "http://" + g.addr
	dir := webShots(t)

	c, opts := g.issue("tunnel") // the grant that permits a pty
	script := `printf '\033[1;32mgreen-%s\033[0m\n' light; for i in 1 2 3; do echo "line-$i of the recording"; done; echo finished-$((40+2))`
	out, err := exec.Command("ssh", append(append([]string{"-tt"}, opts...), c.Username+"@"+c.Host, script)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "finished-42") {
		t.Fatalf("ssh -tt: %v\n%s", err, out)
	}
	id, _ := g.endedSession(c.LeaseID)

	browser, cancel := chromedp.NewContext(alloc)
	defer cancel()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	alice := newTab(t, browser, "alice", dir)
	alice.tokenSignIn(base, g.tokens["alice"])
	alice.do("open her sessions", chromedp.Navigate(base+"/app/sessions"), chromedp.WaitVisible(chromedp.ID("sessions")))
	if got := alice.eval(`document.getElementById("sessions").innerText`); !strings.Contains(got, id) || !strings.Contains(got, c.LeaseID) {
		t.Fatalf("sessions page %q; want session %s of lease %s", got, id, c.LeaseID)
	}
	alice.do("open the session", chromedp.Click(chromedp.CSS(`#sessions a[href="/app/sessions/`+id+`"]`)), chromedp.WaitVisible(chromedp.ID("channel-0")))
	if got := alice.eval(`document.getElementById("chain").innerText`); !strings.Contains(got, "Log verified") || !strings.Contains(got, "anchored") {
		t.Errorf("chain status %q; want verified and anchored", got)
	}
	if got := alice.eval(`document.getElementById("channel-0").innerText`); !strings.Contains(got, "exit status 0") || !strings.Contains(got, "finished-") {
		t.Errorf("channel 0 shows %q; want the command and its exit status", got)
	}
	// The player (asciinema-player, WebAssembly under the page's CSP)
	// plays the recording to its end.
	alice.waitJS("the player loads", `!!document.querySelector(".player .ap-player")`)
	alice.eval(`document.querySelector(".player").player.play(); "ok"`)
	alice.waitJS("the recording plays to its end", `(document.querySelector(".player .ap-term") || {innerText: ""}).innerText.includes("finished-42")`)
	shown := alice.eval(`document.querySelector(".player .ap-term").innerText`)
	for _, want := range []string{"green-light", "line-3 of the recording"} {
		if !strings.Contains(shown, want) {
			t.Errorf("player shows %q; want %q", shown, want)
		}
	}
	if strings.Contains(shown, "[1;32m") {
		t.Errorf("player shows raw escape sequences: %q", shown)
	}
	if got := alice.eval(`getComputedStyle(document.querySelector(".player .ap-term .ap-fg-2, .player .ap-term [class*=fg-2]") || document.body).color`); got == "" {
		t.Errorf("no colour for the green text")
	}
	alice.shot("15-session-player")
	alice.noDialogs()

	// bob may not see alice's session: the same answer as a missing one.
	bob := newTab(t, browser, "bob", dir)
	bob.tokenSignIn(base, g.tokens["bob"])
	bob.do("open alice's session", chromedp.Navigate(base+"/app/sessions/"+id), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if got := bob.eval(`document.querySelector("main").innerText`); !strings.Contains(got, "not found") {
		t.Errorf("bob sees %q at alice's session; want not found", got)
	}
	if got := bob.eval(`fetch("/app/sessions/` + id + `/cast?channel=0").then(r => String(r.status))`); got != "404" {
		t.Errorf("bob fetching alice's recording: %s; want 404", got)
	}

	// carol (admin): the audit trail and the access review link to it.
	carol := newTab(t, browser, "carol", dir)
	carol.tokenSignIn(base, g.tokens["carol"])
	carol.do("open the audit trail", chromedp.Navigate(base+"/app/admin/audit?action=session.start"), chromedp.WaitVisible(chromedp.ID("chain")))
	if n := carol.eval(`String(document.querySelectorAll('a[href="/app/sessions/` + id + `"]').length)`); n != "1" {
		t.Errorf("audit trail has %s links to the session; want 1", n)
	}
	carol.do("open the access review", chromedp.Navigate(base+"/app/admin/review"), chromedp.WaitVisible(chromedp.CSS("table")))
	carol.do("follow the review's link", chromedp.Click(chromedp.CSS(`a[href="/app/sessions/`+id+`"]`)), chromedp.WaitVisible(chromedp.ID("channel-0")))
	carol.shot("16-review-to-session")
}
