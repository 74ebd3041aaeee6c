package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOneServerPerSQLiteStore starts a second server on the SQLite file a
// first one serves: it waits for the first to stop, then gives up with a
// clear error naming the first, never having touched the store, and the
// first goes on serving. A server started while the first one stops (a
// restart) waits for it and serves once it is gone. (A SIGKILLed server
// holds nothing: every crash test restarts one on its file.)
func TestOneServerPerSQLiteStore(t *testing.T) {
	w := newProcessWorld(t, worldOpts{})
	first := w.startProcess()
	t.Cleanup(func() { first.Process.Kill() })

	body, err := os.ReadFile(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr2 := freeAddr(t)
	cfg2 := w.cfg + ".second.yaml"
	if !strings.Contains(string(body), "listen: "+w.addr+"\n") {
		t.Fatalf("the test configuration does not listen on %s", w.addr)
	}
	if err := os.WriteFile(cfg2, []byte(strings.Replace(string(body), "listen: "+w.addr, "listen: "+addr2, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, buildBinary(t), "server", "--config", cfg2).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 4 {
		t.Fatalf("a second server on the same SQLite file: %v (want exit status 4, a conflict): %s", err, out)
	}
	for _, want := range []string{"waiting for it to stop", "in use by a mayfly server", fmt.Sprintf("process %d", first.Process.Pid), "store.postgres"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the refusal does not say %q: %s", want, out)
		}
	}
	if strings.Contains(string(out), "mayfly ready") {
		t.Errorf("the second server got as far as serving: %s", out)
	}

	// The first one still serves, its audit chain intact.
	var r struct {
		Credentials *credsOut `json:"credentials"`
	}
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "1m", "--reason", "INC-7 one owner", "--creds", "-o", "json")
	if r.Credentials == nil {
		t.Fatal("request --creds returned no credential")
	}
	c := *r.Credentials
	if !roleExists(t, c.Username) {
		t.Fatalf("no role %s after a one-call issue", c.Username)
	}
	var v verifyOut
	w.ok("carol", &v, "audit", "verify", "-o", "json")
	if !v.OK {
		t.Errorf("audit verify = %+v; want an intact chain", v)
	}

	// A restart: the next server starts as the first is told to stop,
	// waits for it, then serves and takes over the lease.
	firstDone := w.done
	if err := first.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	w.cfg, w.addr = cfg2, addr2
	second := w.startProcess()
	t.Cleanup(func() { second.Process.Kill() })
	if err := <-firstDone; err != nil {
		t.Errorf("the first server's stop: %v", err)
	}
	w.ok("alice", nil, "done", c.LeaseID)
	waitFor(t, "the lease's role to be dropped by the second server", 10*time.Second, func() bool { return !roleExists(t, c.Username) })
	w.ok("carol", &v, "audit", "verify", "-o", "json")
	if !v.OK {
		t.Errorf("audit verify through the second server = %+v; want an intact chain", v)
	}
}

// TestRestartAfterCrashFreesTheDeadServersWork kills a server on a SQLite
// store while it leads the work that runs once, and restarts it: the new
// process, the store's only server by its lock, frees the dead one's
// leader leases and replica record at once, so it leads every singleton
// within a couple of seconds (not after the dead leases' 10 s) and
// `mayfly cluster` lists it alone.
func TestRestartAfterCrashFreesTheDeadServersWork(t *testing.T) {
	w := newProcessWorld(t, worldOpts{})
	first := w.startProcess()
	t.Cleanup(func() { first.Process.Kill() })
	before, _ := waitLeaders(t, w, 1)

	first.Process.Kill()
	w.waitKilled()
	restarted := time.Now()
	second := w.startProcess()
	t.Cleanup(func() { second.Process.Kill() })
	st, _ := waitLeaders(t, w, 1)
	took := time.Since(restarted)
	if took > 4*time.Second {
		t.Errorf("the restarted server led every singleton %s after its start; want within a couple of seconds, not when the dead server's leases lapse", took.Round(time.Millisecond))
	}
	if st.Self == before.Self || st.Replicas[0].ID != st.Self {
		t.Errorf("after the restart the one replica listed is %s (self %s, the dead one %s); want the new one", st.Replicas[0].ID, st.Self, before.Self)
	}
	if !strings.Contains(w.stderr.String(), "freed what the previous server left") {
		t.Error("the restarted server did not log what it freed")
	}
	t.Logf("every singleton led by the restarted server %s after its start", took.Round(10*time.Millisecond))
}
