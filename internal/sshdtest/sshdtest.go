// Package sshdtest starts a private OpenSSH server on loopback for tests:
// it trusts given user CA keys, consults a revocation list and lets a test
// user log in with a certificate; sftp and forwarding are on.
package sshdtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

const (
	sshdPath = "/usr/sbin/sshd"
	// Login is the local user certificates log in as.
	Login = "mfgwtest"
)

// Host is a private sshd on loopback that trusts Mayfly's CA.
type Host struct {
	Addr    string
	HostKey string // authorized_keys line
	log     *lockedBuffer
	dir     string
}

// Trust replaces the CA keys sshd trusts (it reads them at every login).
func (h *Host) Trust(t testing.TB, caKeys []string) {
	t.Helper()
	Write(t, filepath.Join(h.dir, "trusted_ca"), []byte(strings.Join(caKeys, "\n")+"\n"), 0o644)
}

// Port returns the port sshd listens on.
func (h *Host) Port() string { return h.Addr[strings.LastIndex(h.Addr, ":")+1:] }

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Need stops the test unless sshd, ssh, scp and root are available.
func Need(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		testenv.Unavailable(t, "sshd (run scripts/sshd.sh)", err)
	}
	for _, tool := range []string{"ssh", "scp", "useradd", "getent"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, tool, err)
		}
	}
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (sshd and useradd)", errors.New("not running as root"))
	}
}

// EnsureUser creates local user name when missing.
func EnsureUser(t testing.TB, name string) {
	t.Helper()
	if exec.Command("getent", "passwd", name).Run() == nil {
		return
	}
	out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name).CombinedOutput()
	if err != nil && exec.Command("getent", "passwd", name).Run() != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
}

// NewKey returns a fresh ed25519 key and its OpenSSH private key file.
func NewKey(t testing.TB) (gossh.PublicKey, []byte) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp, pem.EncodeToMemory(block)
}

// Authorized returns k in authorized_keys format.
func Authorized(k gossh.PublicKey) string {
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
}

// Start starts sshd trusting the CA keys caKeys (authorized_keys lines,
// also written later with Trust) and consulting the revocation list in
// krlFile, and stops it when the test ends.
func Start(t *testing.T, caKeys []string, krlFile string) *Host {
	t.Helper()
	Need(t)
	EnsureUser(t, Login)
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostPub, hostPEM := NewKey(t)
	Write(t, filepath.Join(dir, "host_key"), hostPEM, 0o600)
	Write(t, filepath.Join(dir, "trusted_ca"), []byte(strings.Join(caKeys, "\n")+"\n"), 0o644)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf(`ListenAddress %s
HostKey %s
PidFile %s
TrustedUserCAKeys %s
RevokedKeys %s
AuthorizedKeysFile none
AuthorizedPrincipalsFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
AllowTcpForwarding yes
AllowAgentForwarding yes
Subsystem sftp internal-sftp
MaxStartups 100:30:200
MaxSessions 20
LogLevel VERBOSE
`, addr, filepath.Join(dir, "host_key"), filepath.Join(dir, "sshd.pid"), filepath.Join(dir, "trusted_ca"), krlFile)
	Write(t, filepath.Join(dir, "sshd_config"), []byte(cfg), 0o644)
	h := &Host{Addr: addr, HostKey: Authorized(hostPub), log: &lockedBuffer{}, dir: dir}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.Stdout, cmd.Stderr = h.log, h.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", h.log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			b := make([]byte, 4)
			n, _ := c.Read(b)
			c.Close()
			if string(b[:n]) == "SSH-" {
				return h
			}
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", h.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not come up: %s", h.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Write writes a file or fails the test.
func Write(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}
