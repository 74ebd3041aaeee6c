package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

func TestConnectRunsClientAndRevokesOnExit(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		testenv.Unavailable(t, "psql (postgresql-client)", err)
	}
	w := startWorld(t, worldOpts{})
	out := filepath.Join(t.TempDir(), "out")
	script := `psql -Atc "select current_user" > ` + out + ` && env > ` + out + `.env; exit 7`
	_, err := w.try("alice", "connect", "local-pg/readonly", "--for", "5m", "--reason", "INC-3", "--", "sh", "-c", script)
	var ce *childExit
	if !errors.As(err, &ce) || ce.code != 7 {
		t.Fatalf("connect = %v; want the command's exit status 7", err)
	}
	user, _ := os.ReadFile(out)
	name := strings.TrimSpace(string(user))
	if !strings.HasPrefix(name, "mf_alice_") {
		t.Fatalf("psql ran as %q; want the lease's account", name)
	}
	envText, _ := os.ReadFile(out + ".env")
	if !strings.Contains(string(envText), "PGUSER="+name) || !strings.Contains(string(envText), "PGPASSWORD=") {
		t.Errorf("the command's environment lacks PGUSER/PGPASSWORD")
	}
	if roleExists(t, name) {
		t.Errorf("role %s still exists after the command exited", name)
	}
	var ls []leaseOut
	w.ok("alice", &ls, "leases", "-o", "json")
	if len(ls) != 1 || ls[0].State != "revoked" || ls[0].EndReason != "done" {
		t.Errorf("leases = %+v; want one revoked with end_reason done", ls)
	}
	// Reconnecting is a new account, never a reuse.
	w.try("alice", "connect", "local-pg/readonly", "--for", "5m", "--reason", "INC-3", "--", "sh", "-c", `psql -Atc "select current_user" > `+out)
	again, _ := os.ReadFile(out)
	if strings.TrimSpace(string(again)) == name {
		t.Errorf("reconnect reused account %s", name)
	}
}

func TestConnectClientKilledLosesSession(t *testing.T) {
	w := newProcessWorld(t, worldOpts{})
	srv := w.startProcess()
	defer srv.Process.Kill()
	cmd := exec.Command(buildBinary(t), "connect", "local-pg/readonly", "--for", "10m", "--reason", "INC-4", "--heartbeat", "5s", "--", "sleep", "120")
	cmd.Env = append(os.Environ(), "MAYFLY_ADDR=http://"+w.addr, "MAYFLY_TOKEN="+w.tokens["alice"])
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	var ls []leaseOut
	waitFor(t, "the session's lease to be active", 15*time.Second, func() bool {
		w.ok("alice", &ls, "leases", "-o", "json")
		return len(ls) == 1 && ls[0].State == "active"
	})
	time.Sleep(6 * time.Second) // heartbeats keep it alive past one timeout
	if l := w.lease(ls[0].ID); l.State != "active" {
		t.Fatalf("lease ended while the client was alive: %+v", l)
	}
	killed := time.Now()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the client and its command die without a word
	cmd.Wait()
	waitFor(t, "the lease of a dead client to be revoked", 10*time.Second, func() bool { return w.lease(ls[0].ID).State == "revoked" })
	t.Logf("client killed → lease revoked in %s (heartbeat timeout 5s)", time.Since(killed))
	if l := w.lease(ls[0].ID); l.EndReason != "session_lost" {
		t.Errorf("end_reason = %q; want session_lost", l.EndReason)
	}
	if roleExists(t, ls[0].Username) {
		t.Errorf("role %s survived its client", ls[0].Username)
	}
}

func TestConnectWaitsForApproval(t *testing.T) {
	w := startWorld(t, worldOpts{})
	out := filepath.Join(t.TempDir(), "out")
	done := make(chan error, 1)
	var stderr syncBuffer
	go func() {
		getenv := func(k string) string {
			switch k {
			case "MAYFLY_ADDR":
				return "http://" + w.addr
			case "MAYFLY_TOKEN":
				return w.tokens["alice"]
			}
			return ""
		}
		done <- run(context.Background(), []string{"connect", "local-pg/readonly", "--for", "2h", "--reason", "INC-5",
			"--", "sh", "-c", "echo $PGUSER > " + out}, getenv, strings.NewReader(""), io.Discard, &stderr)
	}()
	var pending []reqOut
	waitFor(t, "the connect request to be pending", 10*time.Second, func() bool {
		w.ok("bob", &pending, "requests", "--pending", "-o", "json")
		return len(pending) == 1
	})
	waitFor(t, "the status line", 5*time.Second, func() bool {
		return strings.Contains(stderr.String(), "waiting for 1 more approval(s) from dba")
	})
	w.ok("bob", nil, "approve", pending[0].ID)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("connect = %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("connect did not finish after the approval\n%s", stderr.String())
	}
	user, _ := os.ReadFile(out)
	name := strings.TrimSpace(string(user))
	if !strings.HasPrefix(name, "mf_alice_") {
		t.Fatalf("command ran with PGUSER %q", name)
	}
	if roleExists(t, name) {
		t.Errorf("role %s left after the command exited", name)
	}
	if !strings.Contains(stderr.String(), "approved by bob") {
		t.Errorf("status output lacks the approval:\n%s", stderr.String())
	}
}
