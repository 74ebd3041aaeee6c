package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/sshdtest"
)

// TestConnectSSHNaturalForms: without a terminal, `mayfly connect
// host/grant -- ssh LOGIN@HOST CMD` gets the lease's key, certificate and
// pinned host key, and `ssh -F "$MAYFLY_SSH_CONFIG" mayfly` works from a
// script; the files live in a private runtime directory, a killed connect's
// files are removed by the next run.
func TestConnectSSHNaturalForms(t *testing.T) {
	g := startSSHGatewayWorld(t)
	bin := buildBinary(t)
	rt := t.TempDir()
	connect := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, append([]string{"connect", "web/shell", "--for", "10m", "--reason", "INC-17 connect"}, args...)...)
		cmd.Env = append(os.Environ(), "MAYFLY_ADDR=http://"+g.addr, "MAYFLY_TOKEN="+g.tokens["alice"], "XDG_RUNTIME_DIR="+rt)
		return cmd
	}
	// The gateway's address, as the credential names it.
	c, _ := g.issue("shell")
	g.ok("alice", nil, "done", c.LeaseID)
	target := sshdtest.Login + "@" + c.Host

	out, err := connect("--", "ssh", "-p", strconv.Itoa(c.Port), "-o", "BatchMode=yes", target, "echo natural-$((6*7))").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "natural-42") {
		t.Fatalf("connect -- ssh %s: %v\n%s", target, err, out)
	}
	out, err = connect("--", "sh", "-c", `ssh -F "$MAYFLY_SSH_CONFIG" -o BatchMode=yes mayfly 'echo via-config'; ls -ld "$(dirname "$MAYFLY_SSH_KEY")"`).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "via-config") {
		t.Fatalf("ssh -F $MAYFLY_SSH_CONFIG mayfly: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), filepath.Join(rt, "mayfly")) {
		t.Errorf("session files not in the private runtime directory %s:\n%s", filepath.Join(rt, "mayfly"), out)
	}
	fi, err := os.Stat(filepath.Join(rt, "mayfly"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("runtime directory: %v %v; want 0700", err, fi)
	}

	// A connect killed with SIGKILL leaves its files; the next run clears them.
	killed := connect("--", "sleep", "60")
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	var left string
	waitFor(t, "the killed connect's session files", 20*time.Second, func() bool {
		m, _ := filepath.Glob(filepath.Join(rt, "mayfly", "connect-*", "id_mayfly"))
		if len(m) == 1 {
			left = filepath.Dir(m[0])
		}
		return left != ""
	})
	killed.Process.Signal(syscall.SIGKILL)
	killed.Wait()
	if _, err := os.Stat(filepath.Join(left, "id_mayfly")); err != nil {
		t.Fatalf("after SIGKILL the key is gone already (%v); the test proves nothing", err)
	}
	if out, err := connect("--", "true").CombinedOutput(); err != nil {
		t.Fatalf("connect -- true: %v\n%s", err, out)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("the killed connect's files %s are still there after the next run (%v)", left, err)
	}
	if m, _ := filepath.Glob(filepath.Join(rt, "mayfly", "connect-*")); len(m) != 0 {
		t.Errorf("session directories left: %v", m)
	}
}
