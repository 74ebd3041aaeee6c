package main

import (
	"errors"
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
