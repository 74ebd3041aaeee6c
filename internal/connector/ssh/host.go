package ssh

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
)

// The host side of host-user mode. Mayfly logs in as the admin and feeds a
// fixed script to "sh -s" on standard input ("sudo -n sh -s" for an admin
// other than root). The only values in a script are names that passed
// validName and dates Mayfly formats, each single-quoted, so no input
// reaches the shell unquoted and the command line itself is constant.

const (
	// managedComment marks the users Mayfly creates (the GECOS field), so it
	// never changes or deletes a user it did not create.
	managedComment = "mayfly"
	// maxHostSessions bounds concurrent sessions on the admin connection,
	// below sshd's default MaxSessions of 10.
	maxHostSessions  = 8
	handshakeTimeout = 15 * time.Second
	maxOutput        = 1 << 20
)

// Exit codes of the scripts.
const (
	exitNotManaged = 3
	exitStillThere = 4
)

type hostAdmin struct {
	target string
	addr   string
	user   string
	signer gossh.Signer
	pin    gossh.PublicKey // nil: trust on first use, recorded in knownFile
	// knownFile records the host key seen first when there is no pin.
	knownFile string

	keyMu sync.Mutex // guards knownFile

	mu     sync.Mutex // guards client
	client *gossh.Client

	sessions chan struct{} // bounds concurrent sessions
	write    sync.Mutex    // serializes account changes (useradd locks /etc/passwd)
}

func newHostAdmin(t mayfly.Target, passphrase, knownFile string) (*hostAdmin, error) {
	pemBytes, err := os.ReadFile(t.AdminKeyFile)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: admin_key_file: %v", t.Name, errors.Unwrap(err))
	}
	signer, err := signerFromPEM(pemBytes, passphrase)
	if err != nil {
		var missing *gossh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: admin_key_file is encrypted: set admin_password_env", t.Name)
		}
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: admin_key_file is not a readable private key", t.Name)
	}
	h := &hostAdmin{
		target: t.Name, addr: t.Address, user: t.AdminUser, signer: signer, knownFile: knownFile,
		sessions: make(chan struct{}, maxHostSessions),
	}
	if t.HostKey != "" {
		pin, _, _, _, err := gossh.ParseAuthorizedKey([]byte(t.HostKey))
		if err != nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: host_key is not a public key in authorized_keys format", t.Name)
		}
		h.pin = pin
	}
	return h, nil
}

// checkHostKey accepts the pinned key or, without a pin, the key recorded on
// first contact.
func (h *hostAdmin) checkHostKey(_ string, _ net.Addr, key gossh.PublicKey) error {
	if h.pin != nil {
		if !bytes.Equal(key.Marshal(), h.pin.Marshal()) {
			return fmt.Errorf("host key of %s does not match host_key", h.addr)
		}
		return nil
	}
	h.keyMu.Lock()
	defer h.keyMu.Unlock()
	b, err := os.ReadFile(h.knownFile)
	if errors.Is(err, fs.ErrNotExist) {
		return writeFileAtomic(h.knownFile, gossh.MarshalAuthorizedKey(key), 0o600)
	}
	if err != nil {
		return err
	}
	known, _, _, _, err := gossh.ParseAuthorizedKey(b)
	if err != nil {
		return fmt.Errorf("recorded host key %s: %w", h.knownFile, err)
	}
	if !bytes.Equal(key.Marshal(), known.Marshal()) {
		return fmt.Errorf("host key of %s changed since first contact (recorded in %s)", h.addr, h.knownFile)
	}
	return nil
}

func (h *hostAdmin) dial(ctx context.Context) (*gossh.Client, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "ssh target %q: cannot reach %s: %v", h.target, h.addr, err)
	}
	deadline := time.Now().Add(handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	cfg := &gossh.ClientConfig{
		User:            h.user,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(h.signer)},
		HostKeyCallback: h.checkHostKey,
		Timeout:         handshakeTimeout,
	}
	c, chans, reqs, err := gossh.NewClientConn(conn, h.addr, cfg)
	if err != nil {
		conn.Close()
		return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "ssh target %q: admin login to %s: %v", h.target, h.addr, err)
	}
	conn.SetDeadline(time.Time{})
	return gossh.NewClient(c, chans, reqs), nil
}

// conn returns the shared admin connection, dialling it when needed.
func (h *hostAdmin) conn(ctx context.Context) (*gossh.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.client != nil {
		return h.client, nil
	}
	c, err := h.dial(ctx)
	if err != nil {
		return nil, err
	}
	h.client = c
	return c, nil
}

// drop forgets a broken connection.
func (h *hostAdmin) drop(c *gossh.Client) {
	h.mu.Lock()
	if h.client == c {
		h.client = nil
	}
	h.mu.Unlock()
	c.Close()
}

func (h *hostAdmin) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.client == nil {
		return nil
	}
	err := h.client.Close()
	h.client = nil
	return err
}

// exitError is a script that ran and failed.
type exitError struct {
	status int
	stderr string
}

func (e *exitError) Error() string {
	if e.stderr == "" {
		return fmt.Sprintf("exit status %d", e.status)
	}
	return fmt.Sprintf("exit status %d: %s", e.status, e.stderr)
}

// run executes script on the host and returns its standard output. The
// scripts are idempotent, so a connection that broke is redialled and the
// script run again, once.
func (h *hostAdmin) run(ctx context.Context, script string) (string, error) {
	select {
	case h.sessions <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-h.sessions }()
	cmd := "sh -s"
	if h.user != "root" {
		cmd = "sudo -n sh -s"
	}
	// Braces make the shell read the whole script before running any of it.
	script = "{\n" + script + "\n} </dev/null\n"
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		c, err := h.conn(ctx)
		if err != nil {
			return "", err
		}
		out, err := runSession(ctx, c, cmd, script)
		var ee *exitError
		if err == nil || errors.As(err, &ee) || ctx.Err() != nil {
			return out, err
		}
		h.drop(c)
		lastErr = err
	}
	return "", mayfly.Errorf(mayfly.EUNAVAILABLE, "ssh target %q: admin session on %s: %v", h.target, h.addr, lastErr)
}

func runSession(ctx context.Context, c *gossh.Client, cmd, script string) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	var stdout, stderr limitedBuffer
	s.Stdin = strings.NewReader(script)
	s.Stdout, s.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Close()
		<-done
		return "", ctx.Err()
	}
	var ee *gossh.ExitError
	if errors.As(err, &ee) {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 512 {
			msg = msg[:512]
		}
		return stdout.String(), &exitError{status: ee.ExitStatus(), stderr: msg}
	}
	if err != nil {
		return "", err
	}
	return stdout.String(), nil
}

// limitedBuffer keeps the first maxOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// sq single-quotes s for the shell.
func sq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// createUser creates the local user name, or refreshes one Mayfly created
// before: account expiry the day after expires (the field counts whole
// days; the certificate ends access at the exact time), password field
// "*" (no password login, yet not locked, which sshd without PAM refuses
// even for certificates), and the given supplementary groups.
func (h *hostAdmin) createUser(ctx context.Context, name string, expires time.Time, groups []string) error {
	expireDate := expires.UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	groupOpt := ""
	if len(groups) > 0 {
		groupOpt = " --groups " + sq(strings.Join(groups, ","))
	}
	script := `set -u
n=` + sq(name) + `
exp=` + sq(expireDate) + `
if ent=$(getent passwd "$n"); then
  if [ "$(printf '%s\n' "$ent" | cut -d: -f5)" != ` + sq(managedComment) + ` ]; then
    echo "user $n exists and was not created by mayfly" >&2
    exit ` + strconv.Itoa(exitNotManaged) + `
  fi
  usermod --expiredate "$exp" --password '*'` + groupOpt + ` "$n"
else
  shell=/bin/sh
  [ -x /bin/bash ] && shell=/bin/bash
  useradd --create-home --shell "$shell" --comment ` + sq(managedComment) + ` --password '*' --expiredate "$exp"` + groupOpt + ` "$n"
fi
getent passwd "$n" >/dev/null`
	h.write.Lock()
	defer h.write.Unlock()
	if _, err := h.run(ctx, script); err != nil {
		return h.scriptError("create host user", name, err)
	}
	return nil
}

// removeUser blocks new logins of name (locked password, expired account),
// kills its processes, deletes it with its home directory and mail spool,
// and checks that it is gone. An absent user is success.
func (h *hostAdmin) removeUser(ctx context.Context, name string) error {
	script := `set -u
n=` + sq(name) + `
if ent=$(getent passwd "$n"); then
  if [ "$(printf '%s\n' "$ent" | cut -d: -f5)" != ` + sq(managedComment) + ` ]; then
    echo "user $n exists and was not created by mayfly" >&2
    exit ` + strconv.Itoa(exitNotManaged) + `
  fi
  usermod --lock --expiredate 1 "$n" >/dev/null 2>&1 || true
  command -v loginctl >/dev/null 2>&1 && loginctl terminate-user "$n" >/dev/null 2>&1
  # Kill until no live process is left (zombies wait for their parent).
  i=0
  while pkill -KILL -u "$n" 2>/dev/null && [ "$i" -lt 50 ] &&
    ps -u "$n" -o stat= 2>/dev/null | grep -qv '^Z'; do
    i=$((i+1))
    sleep 0.1
  done
  userdel --force --remove "$n" >/dev/null 2>&1 || userdel --force "$n" >/dev/null 2>&1 || true
fi
if getent passwd "$n" >/dev/null; then
  echo "user $n is still present" >&2
  exit ` + strconv.Itoa(exitStillThere) + `
fi`
	h.write.Lock()
	defer h.write.Unlock()
	if _, err := h.run(ctx, script); err != nil {
		return h.scriptError("remove host user", name, err)
	}
	return nil
}

func (h *hostAdmin) scriptError(what, name string, err error) error {
	var ee *exitError
	if errors.As(err, &ee) && ee.status == exitNotManaged {
		return mayfly.Errorf(mayfly.ECONFLICT, "ssh target %q: user %q exists on the host and was not created by Mayfly", h.target, name)
	}
	return fmt.Errorf("ssh target %q: %s %s: %w", h.target, what, name, err)
}

// listUsers returns the users Mayfly created whose name starts with
// prefix, with Sessions counting their sshd processes (one per connection).
func (h *hostAdmin) listUsers(ctx context.Context, prefix string) ([]mayfly.Account, error) {
	script := `p=` + sq(prefix) + `
getent passwd | while IFS=: read -r name _ uid _ gecos _; do
  case "$name" in
  "$p"*) [ "$gecos" = ` + sq(managedComment) + ` ] && printf 'U %s %s\n' "$name" "$uid" ;;
  esac
done
if command -v ps >/dev/null 2>&1; then
  ps -e -o uid=,stat=,comm= | while read -r uid stat comm; do
    case "$stat" in Z*) continue ;; esac
    [ "$comm" = sshd ] && printf 'P %s\n' "$uid"
  done
fi
true`
	out, err := h.run(ctx, script)
	if err != nil {
		return nil, fmt.Errorf("ssh target %q: list host users: %w", h.target, err)
	}
	var users []mayfly.Account
	byUID := map[string][]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "U" && strings.HasPrefix(f[1], prefix):
			byUID[f[2]] = append(byUID[f[2]], len(users))
			users = append(users, mayfly.Account{Name: f[1], CanLogin: true})
		case len(f) == 2 && f[0] == "P":
			for _, i := range byUID[f[1]] {
				users[i].Sessions++
			}
		}
	}
	return users, nil
}

// check logs in as the admin on a fresh connection and runs true.
func (h *hostAdmin) check(ctx context.Context) error {
	c, err := h.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := runSession(ctx, c, "true", ""); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "ssh target %q: admin command on %s: %v", h.target, h.addr, err)
	}
	return nil
}
