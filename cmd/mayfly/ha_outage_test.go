package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// readyz returns the status and body of GET /readyz at addr.
func readyz(t *testing.T, addr string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// TestStoreOutageUnderLoad cuts the server's connections to its PostgreSQL
// store (through a proxy that drops them and refuses new ones) while four
// workers issue leases and end some early. While the store is gone, calls
// fail with exit code 5 and a message naming the store, which leaks
// neither its address nor credentials, the API answers 503 and /readyz is
// 503. Once it is back: every lease whose creation was answered with a
// credential is recorded and ends revoked with exactly one lease.revoked
// event, no account is left on the target, and the audit chain verifies.
// It runs about 15 s.
func TestStoreOutageUnderLoad(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	requirePG(t)
	proxy, u := testenv.ProxyTo(t, dsn)
	u.Host = proxy.Addr()
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()

	b := make([]byte, 3)
	rand.Read(b)
	prefix := "mf_out" + hex.EncodeToString(b) + "_"
	w := &world{t: t, dir: t.TempDir(), addr: freeAddr(t), tokens: newTokens(), stderr: &syncBuffer{}}
	w.cfg = writeConfig(t, w.dir, w.addr, w.tokens, worldOpts{prefix: prefix})
	w.usePostgresStore(u.String(), w.addr)
	w.startInProcess()
	t.Cleanup(w.stop)
	t.Cleanup(func() {
		if t.Failed() {
			dropRolesLike(t, prefix)
		}
	})

	type failure struct {
		cmd  string
		code int
		msg  string
	}
	var (
		mu       sync.Mutex
		issued   []string // leases answered with a credential
		failures []failure
		nIssued  atomic.Int64
		nFailed  atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	fail := func(cmd string, err error) {
		mu.Lock()
		failures = append(failures, failure{cmd, exitCode(err), err.Error()})
		mu.Unlock()
		nFailed.Add(1)
	}
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				out, err := w.try("alice", "request", "local-pg/readonly", "--for", "3s", "--reason", fmt.Sprintf("OUT-%d-%d outage", i, n), "-o", "json")
				if err != nil {
					fail("request", err)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				var r reqOut
				if err := json.Unmarshal([]byte(out), &r); err != nil {
					fail("request", err)
					continue
				}
				out, err = w.try("alice", "creds", r.ID, "-o", "json")
				if err != nil {
					fail("creds", err)
					continue
				}
				var c credsOut
				if err := json.Unmarshal([]byte(out), &c); err != nil || c.LeaseID == "" {
					fail("creds", fmt.Errorf("output %q: %v", out, err))
					continue
				}
				mu.Lock()
				issued = append(issued, c.LeaseID)
				mu.Unlock()
				nIssued.Add(1)
				if n%3 == 0 {
					if _, err := w.try("alice", "done", c.LeaseID); err != nil {
						fail("done", err)
					}
				}
			}
		}()
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })

	waitFor(t, "leases to be issued under load", 30*time.Second, func() bool { return nIssued.Load() >= 20 })
	logAtCut := len(w.stderr.String())
	proxy.Cut()
	cutAt := time.Now()
	waitFor(t, "calls to fail while the store is cut off", 20*time.Second, func() bool { return nFailed.Load() >= 4 })
	waitFor(t, "/readyz to answer 503", 20*time.Second, func() bool {
		code, body := readyz(t, w.addr)
		if code == http.StatusServiceUnavailable && !strings.Contains(body["reason"], "store") {
			t.Errorf("/readyz while the store is cut off: %v; want a reason naming the store", body)
		}
		return code == http.StatusServiceUnavailable
	})
	req, _ := http.NewRequest("GET", "http://"+w.addr+"/v1/leases", nil)
	req.Header.Set("Authorization", "Bearer "+w.tokens["carol"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var apiErr struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&apiErr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || apiErr.Error.Code != "unavailable" || !strings.Contains(apiErr.Error.Message, "store") {
		t.Errorf("GET /v1/leases while the store is cut off: %d %+v; want 503 unavailable naming the store", resp.StatusCode, apiErr)
	}
	issuedAtCut := nIssued.Load()
	for time.Since(cutAt) < 6*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	proxy.Thaw()
	t.Logf("store cut off for %s; %d calls failed meanwhile", time.Since(cutAt).Round(time.Millisecond), nFailed.Load())
	waitFor(t, "/readyz to answer 200 once the store is back", 20*time.Second, func() bool {
		code, _ := readyz(t, w.addr)
		return code == http.StatusOK
	})
	waitFor(t, "leases to be issued after the store is back", 30*time.Second, func() bool { return nIssued.Load() >= issuedAtCut+20 })
	// The loops that read the store every second or so each logged the
	// outage as it began, not at every attempt, and then its end.
	waitFor(t, "the scheduler to log that the store works again", 10*time.Second, func() bool {
		return strings.Contains(w.stderr.String()[logAtCut:], `msg="scheduler: due leases: working again"`)
	})
	outageLog := w.stderr.String()[logAtCut:]
	for _, msg := range []string{"scheduler: due leases", "scheduler: next deadline", "count overdue leases", "cluster: heartbeat"} {
		if n := strings.Count(outageLog, `msg="`+msg+`"`); n > 1 {
			t.Errorf("%q logged %d times in a store outage of 6 s; want once, as it began", msg, n)
		}
	}
	stop.Store(true)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for _, f := range failures {
		if f.code != 5 || !strings.Contains(f.msg, "store unavailable") ||
			strings.Contains(f.msg, proxy.Addr()) || strings.Contains(f.msg, u.Host) || strings.Contains(f.msg, "postgres://") || strings.Contains(f.msg, "password") {
			t.Errorf("mayfly %s while the store was cut off: exit code %d, %q; want 5 and a message naming the store, without its address", f.cmd, f.code, f.msg)
		}
	}

	// An activation whose account was made while the store went away
	// could not be recorded either way: its lease stays provisioning, and
	// its account on the target, until the scheduler undoes it at its
	// provisioning deadline (2 minutes) or a lone server undoes it as it
	// starts (docs/ha.md). Take the second path: stop the server cleanly
	// and start it again.
	var ls []leaseOut
	w.ok("carol", &ls, "leases", "--all", "-o", "json")
	stuck := 0
	for _, l := range ls {
		if l.State == "provisioning" {
			stuck++
		}
	}
	if stuck > 0 {
		t.Logf("%d activations interrupted by the outage left provisioning; restarting the server to undo them", stuck)
		w.cancel()
		<-w.done
		w.startInProcess()
	}

	// Everything issued is recorded, and once expired, revoked once; no
	// account is left.
	for deadline := time.Now().Add(60 * time.Second); ; {
		ls = nil
		w.ok("carol", &ls, "leases", "--all", "-o", "json")
		var live []leaseOut
		for _, l := range ls {
			if l.State != "revoked" && l.State != "failed" {
				live = append(live, l)
			}
		}
		if len(live) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d leases not ended 60 s after the store came back: %+v", len(live), live)
		}
		time.Sleep(200 * time.Millisecond)
	}
	state := map[string]string{}
	for _, l := range ls {
		state[l.ID] = l.State
	}
	var es []struct {
		LeaseID string `json:"lease_id"`
	}
	w.ok("carol", &es, "audit", "--action", "lease.revoked", "--all", "-o", "json")
	count := map[string]int{}
	for _, e := range es {
		count[e.LeaseID]++
	}
	for _, id := range issued {
		if state[id] != "revoked" || count[id] != 1 {
			t.Errorf("lease %s answered with a credential: state %q, %d lease.revoked events; want revoked, once", id, state[id], count[id])
		}
	}
	for id, n := range count {
		if n > 1 {
			t.Errorf("lease %s: %d lease.revoked events; want at most 1", id, n)
		}
	}
	w.wantNothingLeft(t, prefix)
	t.Logf("%d leases issued, %d failed calls", len(issued), len(failures))
}
