package sink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// decodeBatch reads a webhook body and returns its sequence numbers.
func decodeBatch(t *testing.T, req *http.Request) []int64 {
	t.Helper()
	var body struct {
		Events []*mayfly.AuditEvent `json:"events"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		t.Errorf("decode webhook body: %v", err)
		return nil
	}
	return seqs(body.Events)
}

// TestWebhook delivers through an outage: the receiver answers 500 for a
// while, also after taking a batch in, and every batch is signed.
func TestWebhook(t *testing.T) {
	db := openStore(t)
	const secret = "s3cret-key"
	const n = 530
	var (
		mu       sync.Mutex
		accepted []int64 // seqs of batches answered 2xx
		failed   int     // batches answered 500
		failing  atomic.Bool
	)
	failing.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
			return
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if got := req.Header.Get("X-Mayfly-Signature"); got != want {
			t.Errorf("signature = %q; want %q", got, want)
		}
		if got, want := req.Header.Get("Content-Type"), "application/json"; got != want {
			t.Errorf("Content-Type = %q; want %q", got, want)
		}
		if req.Method != http.MethodPost {
			t.Errorf("method = %s; want POST", req.Method)
		}
		var b struct {
			Events []*mayfly.AuditEvent `json:"events"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			t.Errorf("decode body: %v", err)
		}
		if len(b.Events) == 0 || len(b.Events) > 100 {
			t.Errorf("batch of %d events; want 1 to 100", len(b.Events))
		}
		mu.Lock()
		defer mu.Unlock()
		if failing.Load() {
			failed++
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		accepted = append(accepted, seqs(b.Events)...)
		if len(accepted) == 200 {
			// Took the batch in but could not confirm it: it must come
			// again, and nothing else may.
			failing.Store(true)
			retriesBefore := failed
			go func() {
				for range 1000 {
					time.Sleep(5 * time.Millisecond)
					mu.Lock()
					retried := failed >= retriesBefore+2
					mu.Unlock()
					if retried {
						break
					}
				}
				failing.Store(false)
			}()
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	appendEvents(t, db, n-30)
	r := newRunner(t, db, func(k string) string {
		if k == "HOOK_KEY" {
			return secret
		}
		return ""
	}, Config{Name: "hook", Type: "webhook", URL: srv.URL + "/ingest?token=abc", SecretEnv: "HOOK_KEY", BatchSize: 100})
	start(t, r)
	waitFor(t, "failures", func() bool { mu.Lock(); defer mu.Unlock(); return failed >= 2 })
	appendEvents(t, db, 30)
	r.Notify()
	if got := storedCursor(t, db, "hook"); got != "" {
		t.Fatalf("cursor while the webhook fails = %q; want none", got)
	}
	failing.Store(false)
	waitFor(t, "cursor n", func() bool { return storedCursor(t, db, "hook") == "530" })

	mu.Lock()
	defer mu.Unlock()
	if repeats := checkAtLeastOnceInOrder(t, accepted, n); repeats != 100 {
		t.Errorf("%d events delivered twice; want 100 (the one unconfirmed batch)", repeats)
	}
}

// TestStopFinishesDelivery: a runner stopped while the receiver has taken
// a batch but not yet answered finishes that delivery and keeps its
// cursor past it, so the next run does not send the batch again.
func TestStopFinishesDelivery(t *testing.T) {
	db := openStore(t)
	var (
		mu   sync.Mutex
		got  []int64
		slow atomic.Bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		batch := decodeBatch(t, req)
		mu.Lock()
		got = append(got, batch...)
		mu.Unlock()
		if slow.Load() {
			time.Sleep(300 * time.Millisecond) // taken in, answered late
		}
	}))
	t.Cleanup(srv.Close)
	cfg := Config{Name: "hook", Type: "webhook", URL: srv.URL}
	received := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	slow.Store(true)
	appendEvents(t, db, 5)
	stop := start(t, newRunner(t, db, nil, cfg))
	waitFor(t, "the batch taken", func() bool { return received() == 5 })
	stop() // while the receiver has not answered
	slow.Store(false)

	appendEvents(t, db, 3)
	start(t, newRunner(t, db, nil, cfg))
	waitFor(t, "cursor 8", func() bool { return storedCursor(t, db, "hook") == "8" })
	mu.Lock()
	defer mu.Unlock()
	if want := seqs(allEvents(t, db)); !reflect.DeepEqual(got, want) {
		t.Errorf("receiver got %v; want %v, each once", got, want)
	}
}

func TestSign(t *testing.T) {
	// HMAC-SHA256 test case 2 of RFC 4231.
	got := Sign([]byte("Jefe"), []byte("what do ya want for nothing?"))
	want := "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
	if got != want {
		t.Errorf("Sign = %s; want %s", got, want)
	}
}

// TestWebhookErrorHidesURL checks that a failed delivery does not repeat
// the URL's path or query, which may carry a token.
func TestWebhookErrorHidesURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, "/elsewhere", http.StatusFound)
	}))
	defer srv.Close()
	for _, url := range []string{srv.URL + "/hook/T0KEN?key=S3CRET", "http://127.0.0.1:1/hook/T0KEN?key=S3CRET"} {
		s := newWebhookSink(Config{URL: url, Timeout: DefaultTimeout}, nil)
		err := s.deliver(t.Context(), []*mayfly.AuditEvent{testEvent(1)})
		if err == nil {
			t.Fatalf("deliver to %s = nil; want an error", url)
		}
		for _, secret := range []string{"T0KEN", "S3CRET"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains %q", err, secret)
			}
		}
	}
}
