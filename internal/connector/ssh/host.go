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
	"github.com/mayflyhq/mayfly/internal/connector/mark"
)

// The host side of host-user mode. Mayfly logs in as the admin and feeds a
// fixed script to "sh -s" on standard input ("sudo -n sh -s" for an admin
// other than root). The only values in a script are names that passed
// validName and dates Mayfly formats, each single-quoted, so no input
// reaches the shell unquoted and the command line itself is constant.

const (
	// managedComment marks the users Mayfly creates (the GECOS field), so it
	// never changes or deletes a user it did not create. With an
	// installation key the field is "mayfly <mark>", which tells this
	// installation's users from those of another broker.
	managedComment = "mayfly"
	// maxHostSessions bounds concurrent sessions on the admin connection,
	// below sshd's default MaxSessions of 10.
	maxHostSessions  = 8
	handshakeTimeout = 15 * time.Second
	batchTimeout     = 2 * time.Minute
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
	key    mark.Key        // marks the users this installation creates
	pin    gossh.PublicKey // nil: trust on first use, recorded in knownFile
	// knownFile records the host key seen first when there is no pin.
	knownFile string
	// known, when set, is a store replicas share that records the key
	// seen first instead (knownSetting), so that every replica trusts the
	// key the first one saw; knownFile's key, when there is one, is copied
	// into it.
	known mayfly.Store
	// inspect: a diagnosis run, which accepts the host key on first
	// contact without recording it (see Inspect).
	inspect bool

	keyMu sync.Mutex // guards knownFile

	mu     sync.Mutex // guards client
	client *gossh.Client

	sessions chan struct{} // bounds concurrent sessions

	// Account changes wait in queue; the holder of turn runs them.
	turn  chan struct{}
	qmu   sync.Mutex
	queue []*hostOp
}

func newHostAdmin(t mayfly.Target, key mark.Key, passphrase, knownFile string) (*hostAdmin, error) {
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
		target: t.Name, addr: t.Address, user: t.AdminUser, signer: signer, key: key, knownFile: knownFile,
		sessions: make(chan struct{}, maxHostSessions), turn: make(chan struct{}, 1),
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
	if h.known != nil {
		return h.checkKnownInStore(key)
	}
	b, err := os.ReadFile(h.knownFile)
	if errors.Is(err, fs.ErrNotExist) {
		if h.inspect {
			return nil // the server records it at its first contact
		}
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

// userFuncs are the shell functions account changes call. Each returns 0
// on success, exitNotManaged for a user Mayfly did not create, or the
// failing command's status.
//
// mf_create NAME EXPIREDATE GROUPS COMMENT creates the user with COMMENT in
// its GECOS field, or refreshes one Mayfly created before: account expiry (the field counts whole days; the
// certificate ends access at the exact time), password field "*" (no
// password login, yet not locked, which sshd without PAM refuses even for
// certificates), supplementary groups.
//
// mf_remove NAME blocks new logins (locked, expired), kills the user's
// processes until none is left, deletes the user with home directory and
// mail spool, and checks that it is gone. An absent user is success.
var userFuncs = `mf_managed() {
  case "$(getent passwd "$1" | cut -d: -f5)" in
  ` + sq(managedComment) + `|` + sq(managedComment+" ") + `*) return 0 ;;
  esac
  echo "user $1 exists and was not created by mayfly" >&2
  return ` + strconv.Itoa(exitNotManaged) + `
}
mf_create() {
  if getent passwd "$1" >/dev/null; then
    mf_managed "$1" || return
    if [ -n "$3" ]; then
      usermod --expiredate "$2" --password '*' --groups "$3" "$1" || return
    else
      usermod --expiredate "$2" --password '*' "$1" || return
    fi
  else
    shell=/bin/sh
    [ -x /bin/bash ] && shell=/bin/bash
    if [ -n "$3" ]; then
      useradd --create-home --shell "$shell" --comment "$4" --password '*' --expiredate "$2" --groups "$3" "$1" || return
    else
      useradd --create-home --shell "$shell" --comment "$4" --password '*' --expiredate "$2" "$1" || return
    fi
  fi
  getent passwd "$1" >/dev/null
}
mf_remove() {
  if getent passwd "$1" >/dev/null; then
    mf_managed "$1" || return
    usermod --lock --expiredate 1 "$1" >/dev/null 2>&1
    command -v loginctl >/dev/null 2>&1 && loginctl terminate-user "$1" >/dev/null 2>&1
    # Kill until no live process is left (zombies wait for their parent).
    i=0
    while pkill -KILL -u "$1" 2>/dev/null && [ "$i" -lt 50 ] &&
      ps -u "$1" -o stat= 2>/dev/null | grep -qv '^Z'; do
      i=$((i+1))
      sleep 0.1
    done
    userdel --force --remove "$1" >/dev/null 2>&1 || userdel --force "$1" >/dev/null 2>&1
  fi
  if getent passwd "$1" >/dev/null; then
    echo "user $1 is still present" >&2
    return ` + strconv.Itoa(exitStillThere) + `
  fi
}
`

// hostOp is one account change waiting for a batch.
type hostOp struct {
	call string // shell call with quoted arguments
	name string
	what string
	done chan error // buffered; receives exactly one result
}

// createUser creates the local user name (see mf_create).
func (h *hostAdmin) createUser(ctx context.Context, name string, expires time.Time, groups []string) error {
	exp := expires.UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	call := "mf_create " + sq(name) + " " + sq(exp) + " " + sq(strings.Join(groups, ",")) + " " + sq(h.comment(name))
	return h.change(ctx, &hostOp{call: call, name: name, what: "create host user"})
}

// comment is the GECOS field of the user name: managedComment, followed by
// the mark of name when the installation has a key.
func (h *hostAdmin) comment(name string) string {
	if tag := h.key.Tag(name); tag != "" {
		return managedComment + " " + tag
	}
	return managedComment
}

// removeUser kills the processes of the local user name and deletes it
// (see mf_remove).
func (h *hostAdmin) removeUser(ctx context.Context, name string) error {
	return h.change(ctx, &hostOp{call: "mf_remove " + sq(name), name: name, what: "remove host user"})
}

// change queues op and waits for its result. Changes run one batch at a
// time (useradd and userdel lock the account files): whoever takes the
// turn runs every queued change in one script, so many concurrent changes
// cost a few round trips instead of one each.
func (h *hostAdmin) change(ctx context.Context, op *hostOp) error {
	op.done = make(chan error, 1)
	h.qmu.Lock()
	h.queue = append(h.queue, op)
	h.qmu.Unlock()
	for {
		select {
		case err := <-op.done:
			return err
		default:
		}
		select {
		case err := <-op.done:
			return err
		case h.turn <- struct{}{}:
		case <-ctx.Done():
			// A batch may still run op; the changes are idempotent.
			return ctx.Err()
		}
		h.qmu.Lock()
		batch := h.queue
		h.queue = nil
		h.qmu.Unlock()
		if len(batch) > 0 {
			// The batch carries other callers' changes: one caller's
			// cancellation must not fail them.
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
			h.runBatch(bctx, batch)
			cancel()
		}
		<-h.turn
	}
}

// runBatch runs the calls of batch in one script and delivers each result.
func (h *hostAdmin) runBatch(ctx context.Context, batch []*hostOp) {
	var b strings.Builder
	b.WriteString(userFuncs)
	for i, op := range batch {
		// Each call's standard error is captured for its own result line.
		fmt.Fprintf(&b, "err=$( { %s; } 2>&1 >/dev/null ); rc=$?\n", op.call)
		fmt.Fprintf(&b, `printf 'R %d %%s %%s\n' "$rc" "$(printf '%%s' "$err" | tr '\n' ' ' | cut -c1-300)"`+"\n", i)
	}
	out, err := h.run(ctx, b.String())
	results := map[int]error{}
	if err == nil {
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			f := strings.SplitN(sc.Text(), " ", 4)
			if len(f) < 3 || f[0] != "R" {
				continue
			}
			i, err1 := strconv.Atoi(f[1])
			rc, err2 := strconv.Atoi(f[2])
			if err1 != nil || err2 != nil || i < 0 || i >= len(batch) {
				continue
			}
			if rc == 0 {
				results[i] = nil
				continue
			}
			msg := ""
			if len(f) == 4 {
				msg = strings.TrimSpace(f[3])
			}
			results[i] = &exitError{status: rc, stderr: msg}
		}
	}
	for i, op := range batch {
		res, ok := results[i]
		switch {
		case err != nil:
			res = err
		case !ok:
			res = errors.New("no result from the host")
		}
		if res != nil {
			res = h.scriptError(op.what, op.name, res)
		}
		op.done <- res
	}
}

func (h *hostAdmin) scriptError(what, name string, err error) error {
	var ee *exitError
	if errors.As(err, &ee) && ee.status == exitNotManaged {
		return mayfly.Errorf(mayfly.ECONFLICT, "ssh target %q: user %q exists on the host and was not created by Mayfly", h.target, name)
	}
	if mayfly.ErrorCode(err) != mayfly.EINTERNAL {
		return err
	}
	return fmt.Errorf("ssh target %q: %s %s: %w", h.target, what, name, err)
}

// listUsers returns the local users whose name starts with prefix, with
// Sessions counting their sshd processes (one per connection). Marked is
// set on those whose GECOS field carries this installation's mark; users
// Mayfly did not create are listed too, so they can be reported.
func (h *hostAdmin) listUsers(ctx context.Context, prefix string) ([]mayfly.Account, error) {
	script := `p=` + sq(prefix) + `
getent passwd | while IFS=: read -r name _ uid _ gecos _; do
  case "$name" in
  "$p"*)
    case "$gecos" in
    ` + sq(managedComment+" ") + `*) m=${gecos#` + sq(managedComment+" ") + `} ;;
    *) m=- ;;
    esac
    printf 'U %s %s %s\n' "$name" "$uid" "$m" ;;
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
		case len(f) == 4 && f[0] == "U" && strings.HasPrefix(f[1], prefix):
			byUID[f[2]] = append(byUID[f[2]], len(users))
			users = append(users, mayfly.Account{Name: f[1], CanLogin: true, Marked: h.key.Valid(f[1], f[3])})
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

// knownSetting records, in a store replicas share, the host key of target
// seen first.
func knownSetting(target string) string { return "ssh_target.host_key." + target }

// checkKnownInStore accepts key when it is the one the store records for
// the target, recording it when there is none yet (or the legacy file's).
func (h *hostAdmin) checkKnownInStore(key gossh.PublicKey) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	run := h.known.Update
	if h.inspect {
		run = h.known.View
	}
	return run(ctx, func(tx mayfly.Tx) error {
		v, err := tx.GetSetting(knownSetting(h.target))
		switch {
		case mayfly.ErrorCode(err) == mayfly.ENOTFOUND:
			line := gossh.MarshalAuthorizedKey(key)
			if b, err := os.ReadFile(h.knownFile); err == nil {
				line = b // recorded by this replica before the store kept it
			} else if h.inspect {
				return nil // the server records it at its first contact
			}
			if !h.inspect {
				if err := tx.PutSetting(knownSetting(h.target), string(line)); err != nil {
					return err
				}
			}
			v = string(line)
		case err != nil:
			return err
		}
		known, _, _, _, err := gossh.ParseAuthorizedKey([]byte(v))
		if err != nil {
			return fmt.Errorf("recorded host key of %s in the store: %w", h.addr, err)
		}
		if !bytes.Equal(key.Marshal(), known.Marshal()) {
			return fmt.Errorf("host key of %s changed since first contact (recorded in the store, setting %s)", h.addr, knownSetting(h.target))
		}
		return nil
	})
}
