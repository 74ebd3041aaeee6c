package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestWebInboxAcrossReplicas: bob's approvals inbox, open in Chromium on
// one replica, shows each request created through another replica (they
// share a PostgreSQL store) without a reload, by the server-sent events
// that the store's notifications drive. It measures the time from sending
// each request to the inbox showing it; MAYFLY_WEB_BENCH_N sets how many
// (default 20). Bob signs in by pasting his API token (an installation
// without an identity provider).
func TestWebInboxAcrossReplicas(t *testing.T) {
	alloc, cancelAlloc := chromiumAllocator(t)
	defer cancelAlloc()
	n := 20
	if v := os.Getenv("MAYFLY_WEB_BENCH_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("MAYFLY_WEB_BENCH_N=%q: want a positive number", v)
		}
	}
	a, b, dsn := twoReplicas(t, worldOpts{})
	dir := webShots(t)

	browser, cancel := chromedp.NewContext(alloc)
	defer cancel()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	bob := newTab(t, browser, "bob", dir)
	base := "http://" + a.addr
	bob.do("sign in with a token", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), b.tokens["bob"]))
	bob.shot("20-signin-token")
	bob.do("submit", chromedp.Submit(chromedp.ID("token")), chromedp.WaitVisible(chromedp.CSS("nav .who")))
	bob.do("open the inbox", chromedp.Navigate(base+"/app/approvals"), chromedp.WaitVisible(chromedp.ID("inbox-count")))
	bob.waitJS("live updates connect", `document.documentElement.dataset.live === "open"`)
	// The open page's live updates make its replica, and only it, listen
	// for the others' commits.
	waitListening(t, dsn, 1, "with one live page open")
	// The page notes when each request first shows.
	bob.eval(`window.mayflySeen = {}; window.mayflyNoReload = "yes";
		new MutationObserver(() => {
			const now = Date.now();
			document.querySelectorAll('[id^="inbox-req_"]').forEach(e => { const id = e.id.slice(6); if (!(id in window.mayflySeen)) { window.mayflySeen[id] = now; } });
		}).observe(document.body, {childList: true, subtree: true}); "ok"`)

	// The raw path the page rides on, in the same run: the API's audit
	// stream on the same replica, read by a plain client.
	streamed := map[string]time.Time{}
	var smu sync.Mutex
	sreq, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/v1/audit/stream", nil)
	sreq.Header.Set("Authorization", "Bearer "+a.tokens["carol"])
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil || sresp.StatusCode != http.StatusOK {
		t.Fatalf("audit stream: %v %v", err, sresp)
	}
	defer sresp.Body.Close()
	go func() {
		sc := bufio.NewScanner(sresp.Body)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var e struct {
				Action    string `json:"action"`
				RequestID string `json:"request_id"`
			}
			if json.Unmarshal([]byte(line), &e) == nil && e.Action == "request.create" {
				smu.Lock()
				streamed[e.RequestID] = time.Now()
				smu.Unlock()
			}
		}
	}()

	create := func() (string, time.Time, time.Duration) {
		body, _ := json.Marshal(map[string]string{"target": "local-pg", "grant": "readonly", "duration": "2h", "reason": "INC-5 inbox across replicas"})
		req, _ := http.NewRequest("POST", "http://"+b.addr+"/v1/requests", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+b.tokens["alice"])
		req.Header.Set("Content-Type", "application/json")
		sent := time.Now()
		resp, err := http.DefaultClient.Do(req)
		took := time.Since(sent)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			ID    string `json:"id"`
			State string `json:"state"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != http.StatusCreated || out.State != "pending" {
			t.Fatalf("create a request through %s: %s, %+v", b.addr, resp.Status, out)
		}
		return out.ID, sent, took
	}
	var lat, api, raw []time.Duration
	for i := 0; i < n; i++ {
		id, sent, took := create()
		api = append(api, took)
		// Within 5 s, each: the replica's safety poll, every 10 s, could
		// not show them all in time; the store's notifications must.
		deadline := time.Now().Add(5 * time.Second)
		for {
			ms := bob.eval(`String(window.mayflySeen["` + id + `"] || "")`)
			if ms != "" {
				v, _ := strconv.ParseInt(ms, 10, 64)
				lat = append(lat, time.UnixMilli(v).Sub(sent))
				break
			}
			if time.Now().After(deadline) {
				bob.viewShot("failed-inbox-replicas")
				t.Fatalf("request %d (%s), created through %s, not in the inbox on %s after 5 s", i, id, b.addr, a.addr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Alice cancels it (through the other replica), so the inbox
		// stays as short as an approver's usually is.
		creq, _ := http.NewRequest("POST", "http://"+b.addr+"/v1/requests/"+id+"/cancel", nil)
		creq.Header.Set("Authorization", "Bearer "+b.tokens["alice"])
		if resp, err := http.DefaultClient.Do(creq); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("cancel %s: %v %v", id, err, resp)
		} else {
			resp.Body.Close()
		}
		smu.Lock()
		if at, ok := streamed[id]; ok {
			raw = append(raw, at.Sub(sent))
		}
		smu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	if got := bob.eval(`String(window.mayflyNoReload)`); got != "yes" {
		t.Errorf("the inbox reloaded; want live updates")
	}
	bob.waitJS("the cancelled requests leave the inbox", `document.querySelectorAll('[id^="inbox-req_"]').length === 0`)
	bob.shot("21-inbox-replicas")
	q := func(ds []time.Duration, p float64) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[min(len(s)-1, int(float64(len(s))*p))]
	}
	t.Logf("request created through one replica → shown in the approver's open inbox on another, n=%d: p50 %v, p95 %v, p99 %v, max %v",
		n, q(lat, .5), q(lat, .95), q(lat, .99), q(lat, 1))
	if len(raw) > 0 {
		t.Logf("the same through the API's audit stream on that replica (a plain client), n=%d: p50 %v, p95 %v, p99 %v, max %v",
			len(raw), q(raw, .5), q(raw, .95), q(raw, .99), q(raw, 1))
	}
	t.Logf("the create call alone (POST /v1/requests): p50 %v, p99 %v", q(api, .5), q(api, .99))
}
