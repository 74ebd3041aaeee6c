package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAuditSinksStreamNotificationsAndHash(t *testing.T) {
	t.Setenv("MAYFLY_TEST_HOOK_SECRET", "s3cret-for-signing")
	var mu sync.Mutex
	var hooks []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte("s3cret-for-signing"))
		m.Write(body)
		if r.Header.Get("X-Mayfly-Signature") != "sha256="+hex.EncodeToString(m.Sum(nil)) {
			t.Errorf("webhook signature does not verify")
		}
		var v map[string]any
		json.Unmarshal(body, &v)
		mu.Lock()
		hooks = append(hooks, v)
		mu.Unlock()
	}))
	defer srv.Close()
	dir := t.TempDir()
	sinkPath := filepath.Join(dir, "audit.jsonl")
	extra := fmt.Sprintf(`audit:
  sinks:
    - {name: file, type: file, path: %s}
notifications:
  poll_interval: 200ms
  channels:
    - {name: hook, type: webhook, url: %q, secret_env: MAYFLY_TEST_HOOK_SECRET}
`, sinkPath, srv.URL)
	w := startWorld(t, worldOpts{extraYAML: extra})

	// Live stream from the start.
	resp, err := http.NewRequest("GET", "http://"+w.addr+"/v1/audit/stream?after=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Set("Authorization", "Bearer "+w.tokens["carol"])
	stream, err := http.DefaultClient.Do(resp)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != 200 || stream.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream = %d %s", stream.StatusCode, stream.Header.Get("Content-Type"))
	}
	seqs := make(chan int64, 100)
	go func() {
		sc := bufio.NewScanner(stream.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var ev struct{ Seq int64 }
				json.Unmarshal([]byte(d), &ev)
				seqs <- ev.Seq
			}
		}
	}()

	var r reqOut
	var c credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2h", "--reason", "INC-77", "-o", "json")
	w.ok("bob", nil, "approve", r.ID)
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	w.ok("alice", nil, "done", r.ID)

	// The stream delivers every event in order.
	var got []int64
	deadline := time.After(5 * time.Second)
	for len(got) < 7 {
		select {
		case s := <-seqs:
			got = append(got, s)
		case <-deadline:
			t.Fatalf("stream delivered %v; want 7+ events", got)
		}
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("stream seqs = %v; want 1, 2, 3, ...", got)
		}
	}
	// The file sink has every event, in order, exactly once.
	var evs []eventOut
	w.ok("carol", &evs, "audit", "-o", "json")
	waitFor(t, "the file sink to catch up", 5*time.Second, func() bool {
		b, _ := os.ReadFile(sinkPath)
		return bytes.Count(b, []byte("\n")) >= len(evs)
	})
	b, _ := os.ReadFile(sinkPath)
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ev eventOut
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Seq != int64(i+1) || ev.Hash != evs[i].Hash {
			t.Fatalf("sink line %d = %q; want event %d", i, line, i+1)
		}
	}
	// Approvers heard about the request; alice about the approval.
	waitFor(t, "notifications", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(hooks) >= 2
	})
	mu.Lock()
	text, _ := json.Marshal(hooks)
	mu.Unlock()
	for _, want := range []string{"mayfly approve " + r.ID, `"bob"`, `"alice"`} {
		if !bytes.Contains(text, []byte(want)) {
			t.Errorf("notifications lack %s:\n%s", want, text)
		}
	}
	// A leaked password can be traced to its lease without Mayfly keeping it.
	var h struct {
		HMAC   string   `json:"hmac"`
		Leases []string `json:"leases"`
	}
	// As an argument after "--" (a password may start with "-"), and from
	// standard input, which keeps it out of shell history.
	w.ok("carol", &h, "audit", "hash", "-o", "json", "--", c.Password)
	if len(h.Leases) != 1 || h.Leases[0] != c.LeaseID {
		t.Errorf("audit hash = %+v; want lease %s", h, c.LeaseID)
	}
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		return map[string]string{"MAYFLY_ADDR": "http://" + w.addr, "MAYFLY_TOKEN": w.tokens["carol"]}[k]
	}
	if err := run(context.Background(), []string{"audit", "hash", "-o", "json"}, getenv, strings.NewReader(c.Password+"\n"), &out, &errb); err != nil {
		t.Fatalf("audit hash from standard input: %v (%s)", err, errb.String())
	}
	var hs struct {
		HMAC   string   `json:"hmac"`
		Leases []string `json:"leases"`
	}
	if err := json.Unmarshal(out.Bytes(), &hs); err != nil || hs.HMAC != h.HMAC || len(hs.Leases) != 1 {
		t.Errorf("audit hash from standard input = %s, %v; want %+v", out.String(), err, h)
	}
	// The password is nowhere: not in the store, the log, the sink or the notifications.
	for _, p := range []string{filepath.Join(w.dir, "mayfly.db"), filepath.Join(w.dir, "mayfly.db-wal"), sinkPath} {
		data, _ := os.ReadFile(p)
		if bytes.Contains(data, []byte(c.Password)) {
			t.Errorf("the issued password is in %s", p)
		}
	}
	if strings.Contains(w.stderr.String(), c.Password) || bytes.Contains(text, []byte(c.Password)) {
		t.Errorf("the issued password is in the log or a notification")
	}
	// Tampering with the store is detected and named.
	w.stop()
	tamper(t, filepath.Join(w.dir, "mayfly.db"), "UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 3")
	w.startInProcess()
	if msg := w.fails("carol", "audit", "verify"); !strings.Contains(msg, "event 3") {
		t.Errorf("verify after tampering: %q; want event 3 named", msg)
	}
}
