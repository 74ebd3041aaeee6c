package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

const (
	sshdPath = "/usr/sbin/sshd"
	// testPrincipal is the local user certificate-mode tests log in as.
	testPrincipal = "mfsshtest"
)

// testServer is a private sshd on a loopback port, trusting a CA and
// consulting a revocation list, with root authorized by an admin key.
type testServer struct {
	Addr         string
	HostKey      string // authorized_keys line
	hostKey      gossh.PublicKey
	KRLFile      string
	AdminKeyFile string
	dir          string
	log          *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// needSSHD stops the test unless this machine can run a private sshd and
// create local users, as scripts/sshd.sh sets it up.
func needSSHD(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		testenv.Unavailable(t, "sshd (run scripts/sshd.sh)", err)
	}
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root (sshd and useradd)", errors.New("not running as root"))
	}
	for _, tool := range []string{"useradd", "userdel", "getent", "pkill"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, tool, err)
		}
	}
}

// ensurePrincipalUser creates the local user certificate-mode tests log in
// as, when it is missing.
func ensurePrincipalUser(t testing.TB) {
	t.Helper()
	if exec.Command("getent", "passwd", testPrincipal).Run() == nil {
		return
	}
	out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", testPrincipal).CombinedOutput()
	if err != nil && exec.Command("getent", "passwd", testPrincipal).Run() != nil {
		t.Fatalf("useradd %s: %v: %s", testPrincipal, err, out)
	}
}

// startSSHD starts sshd -D on a free loopback port, trusting ca, and stops
// it when the test ends.
func startSSHD(t *testing.T, ca *CA) *testServer {
	t.Helper()
	needSSHD(t)
	ensurePrincipalUser(t)
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("privilege separation directory: %v", err)
	}
	dir := t.TempDir()
	s := &testServer{dir: dir, KRLFile: filepath.Join(dir, "revoked.krl"), AdminKeyFile: filepath.Join(dir, "admin_key"), log: &syncBuffer{}}

	hostPub, hostPEM := newKeyPair(t)
	writeFile(t, filepath.Join(dir, "host_key"), hostPEM, 0o600)
	s.hostKey = hostPub
	s.HostKey = authorizedLine(hostPub)

	adminPub, adminPEM := newKeyPair(t)
	writeFile(t, s.AdminKeyFile, adminPEM, 0o600)
	if err := os.MkdirAll(filepath.Join(dir, "authorized_keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "authorized_keys", "root"), []byte(authorizedLine(adminPub)+"\n"), 0o600)
	s.Trust(t, ca)
	// An empty list until a connector writes one: sshd refuses every key
	// when the file is missing.
	writeFile(t, s.KRLFile, (&krl{Generated: time.Now()}).marshal(), 0o644)

	port := freePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	config := fmt.Sprintf(`ListenAddress %s
HostKey %s
PidFile %s
TrustedUserCAKeys %s
RevokedKeys %s
AuthorizedKeysFile %s/%%u
AuthorizedPrincipalsFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 20
LogLevel VERBOSE
`, s.Addr, filepath.Join(dir, "host_key"), filepath.Join(dir, "sshd.pid"), filepath.Join(dir, "trusted_ca"),
		s.KRLFile, filepath.Join(dir, "authorized_keys"))
	writeFile(t, filepath.Join(dir, "sshd_config"), []byte(config), 0o644)

	cmd := exec.Command(sshdPath, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if banner(s.Addr) {
			return s
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not come up on %s: %s", s.Addr, s.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Trust writes ca's current public keys to the server's TrustedUserCAKeys
// file, which sshd reads at every login.
func (s *testServer) Trust(t testing.TB, ca *CA) {
	t.Helper()
	writeFile(t, filepath.Join(s.dir, "trusted_ca"), []byte(strings.Join(ca.PublicKeys(), "\n")+"\n"), 0o644)
}

func banner(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	b := make([]byte, 8)
	n, _ := c.Read(b)
	return strings.HasPrefix(string(b[:n]), "SSH-")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newKeyPair(t testing.TB) (gossh.PublicKey, []byte) {
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

func writeFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := writeFileAtomic(path, data, perm); err != nil {
		t.Fatal(err)
	}
}

// login opens an SSH connection with an issued credential: its private key
// (or key, when the user brought their own) and its certificate.
func (s *testServer) login(ctx context.Context, cred mayfly.Credential, key gossh.Signer) (*gossh.Client, error) {
	if key == nil {
		var err error
		if key, err = gossh.ParsePrivateKey([]byte(cred.PrivateKey)); err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
	}
	pub, _, _, _, err := gossh.ParseAuthorizedKey([]byte(cred.Certificate))
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	cert, ok := pub.(*gossh.Certificate)
	if !ok {
		return nil, fmt.Errorf("certificate: got a %s", pub.Type())
	}
	signer, err := gossh.NewCertSigner(cert, key)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(cred.Host, strconv.Itoa(cred.Port))
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, chans, reqs, err := gossh.NewClientConn(conn, addr, &gossh.ClientConfig{
		User:            cred.Username,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.FixedHostKey(s.hostKey),
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return gossh.NewClient(c, chans, reqs), nil
}

// output runs cmd in a new session on c.
func output(ctx context.Context, c *gossh.Client, cmd string) (string, error) {
	sess, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := sess.CombinedOutput(cmd)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return strings.TrimSpace(string(r.out)), r.err
	case <-ctx.Done():
		sess.Close()
		return "", ctx.Err()
	}
}

// session is a connectortest.Session over an SSH connection.
type session struct {
	c    *gossh.Client
	user string
	// forwardTo is an address the grant does not allow forwarding to.
	forwardTo string
}

// Allowed runs id -un and checks it reports the login user.
func (s *session) Allowed(ctx context.Context) error {
	out, err := output(ctx, s.c, "id -un")
	if err != nil {
		return err
	}
	if out != s.user {
		return fmt.Errorf("id -un = %q; want %q", out, s.user)
	}
	return nil
}

// Forbidden opens a port forward, which certificates without
// permit-port-forwarding may not.
func (s *session) Forbidden(ctx context.Context) error {
	conn, err := s.c.Dial("tcp", s.forwardTo)
	if err != nil {
		return err
	}
	conn.Close()
	return nil
}

func (s *session) Ping(ctx context.Context) error {
	_, _, err := s.c.SendRequest("keepalive@openssh.com", true, nil)
	return err
}

func (s *session) Close() error { return s.c.Close() }

// Opening a CA derives a key from its passphrase on purpose slowly, so the
// tests that do not rotate share two authorities.
var (
	caOnce              sync.Once
	caDir               string
	testCA, testOtherCA *CA
	caErr               error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if caDir != "" {
		os.RemoveAll(caDir)
	}
	os.Exit(code)
}

func openSharedCAs() {
	if caDir, caErr = os.MkdirTemp("", "mayfly-ssh-ca"); caErr != nil {
		return
	}
	if testCA, caErr = OpenCA(filepath.Join(caDir, "ca"), []byte("test passphrase")); caErr != nil {
		return
	}
	testOtherCA, caErr = OpenCA(filepath.Join(caDir, "other"), []byte("test passphrase"))
}

// sharedCA is the package's test CA; tests must not rotate it.
func sharedCA(t testing.TB) *CA {
	t.Helper()
	caOnce.Do(openSharedCAs)
	if caErr != nil {
		t.Fatalf("OpenCA: %v", caErr)
	}
	return testCA
}

// sharedOtherCA is an authority the test servers do not trust.
func sharedOtherCA(t testing.TB) *CA {
	t.Helper()
	sharedCA(t)
	return testOtherCA
}

// openTestCA opens a CA in a fresh directory.
func openTestCA(t testing.TB) *CA {
	t.Helper()
	ca, err := OpenCA(t.TempDir(), []byte("test passphrase"))
	if err != nil {
		t.Fatalf("OpenCA: %v", err)
	}
	return ca
}
