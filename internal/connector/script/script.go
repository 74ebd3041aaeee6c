// Package script is the connector for scripted targets (kind "script"):
// systems Mayfly has no built-in connector for (network gear, PLCs, LDAP,
// appliances) are driven by admin-written commands. Each call runs one
// command with a JSON request on stdin and reads a JSON answer from stdout;
// the protocol is described in docs/connectors/script.md.
package script

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/acctname"
	"github.com/mayflyhq/mayfly/internal/connector/kindcheck"
	"github.com/mayflyhq/mayfly/internal/connector/mark"
)

// MaxNameLen is the longest account name the connector passes to a
// command; 32 suits most devices and directories.
const MaxNameLen = 32

// DefaultTimeout bounds one command when the target sets no timeout.
const DefaultTimeout = 30 * time.Second

// Limits on what a command may print.
const (
	maxStderr = 4 << 10  // kept for error messages
	maxStdout = 16 << 20 // an accounts listing of a large directory fits
)

// Operations, as sent in the request's "operation" field.
const (
	OpProvision = "provision"
	OpRevoke    = "revoke"
	OpAccounts  = "accounts"
	OpCheck     = "check"
)

// Request is the JSON document a command reads on stdin. Fields that do not
// apply to an operation are omitted.
type Request struct {
	Operation string            `json:"operation"`
	Target    string            `json:"target"`
	LeaseID   string            `json:"lease_id,omitempty"`
	Username  string            `json:"username,omitempty"`
	Password  string            `json:"password,omitempty"`
	Grant     string            `json:"grant,omitempty"`
	Params    map[string]string `json:"params,omitempty"`
	ExpiresAt string            `json:"expires_at,omitempty"`
	Prefix    *string           `json:"prefix,omitempty"`
	// Mark is this installation's mark of Username (provision, with an
	// installation key): the command keeps it with the account and reports
	// it back in the accounts listing, so Mayfly recognises its own
	// accounts even after its store was lost.
	Mark string `json:"mark,omitempty"`
}

// ProvisionOutput is what a provision command may print on stdout to
// override parts of the credential; every field is optional and empty
// output keeps the defaults.
type ProvisionOutput struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Database string `json:"database"`
}

// AccountOutput is one element of the JSON array an accounts command
// prints.
type AccountOutput struct {
	Name         string    `json:"name"`
	LastActivity time.Time `json:"last_activity"`
	Sessions     int       `json:"sessions"`
	CanLogin     bool      `json:"can_login"`
	Superuser    bool      `json:"superuser"`
	Privileges   []string  `json:"privileges"`
	// Mark is the mark the provision request carried for this account;
	// empty for accounts Mayfly did not create.
	Mark string `json:"mark"`
}

// Connector runs a scripted target's commands.
type Connector struct {
	name    string
	cmds    mayfly.ScriptCommands
	timeout time.Duration
	prefix  string
	host    string
	port    int
	grants  map[string]mayfly.Grant
	key     mark.Key // marks the accounts this installation creates
}

// New validates the target's commands, timeout and grants. Relative
// command paths are taken as given. getenv resolves only the installation
// key: commands receive no secrets through the environment.
func New(t mayfly.Target, getenv func(string) string) (*Connector, error) {
	if t.Kind != "" && t.Kind != mayfly.KindScript {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: kind %q is not %q", t.Name, t.Kind, mayfly.KindScript)
	}
	if err := rejectUnused(t); err != nil {
		return nil, err
	}
	for _, cmd := range []struct {
		key      string
		argv     []string
		required bool
	}{
		{"commands.provision", t.Commands.Provision, true},
		{"commands.revoke", t.Commands.Revoke, true},
		{"commands.accounts", t.Commands.Accounts, true},
		{"commands.check", t.Commands.Check, false},
	} {
		if len(cmd.argv) == 0 {
			if cmd.required {
				return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: %s is required", t.Name, cmd.key)
			}
			continue
		}
		if cmd.argv[0] == "" {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: %s: the executable is empty", t.Name, cmd.key)
		}
		if slices.ContainsFunc(cmd.argv, func(a string) bool { return strings.ContainsRune(a, 0) }) {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: %s: an argument contains a NUL byte", t.Name, cmd.key)
		}
	}
	if t.Timeout < 0 {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: timeout must not be negative", t.Name)
	}
	key, err := mark.FromTarget(t, getenv)
	if err != nil {
		return nil, err
	}
	c := &Connector{
		key:     key,
		name:    t.Name,
		cmds:    t.Commands,
		timeout: t.Timeout,
		prefix:  t.Prefix,
		host:    t.PublicHost,
		port:    t.PublicPort,
		grants:  make(map[string]mayfly.Grant, len(t.Grants)),
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.prefix == "" {
		c.prefix = mayfly.DefaultPrefix
	}
	if err := acctname.ValidName(c.prefix, MaxNameLen, true); err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: prefix: %s", t.Name, mayfly.ErrorMessage(err))
	}
	for name, g := range t.Grants {
		if err := validGrant(g); err != nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: grant %q: %s", t.Name, name, mayfly.ErrorMessage(err))
		}
		c.grants[name] = g
	}
	return c, nil
}

// rejectUnused refuses settings that belong to other kinds.
func rejectUnused(t mayfly.Target) error {
	return kindcheck.Target(t, mayfly.KindScript, "commands", "timeout")
}

// validGrant checks that g uses only params, with printable keys.
func validGrant(g mayfly.Grant) error {
	if err := kindcheck.Grant(g, mayfly.KindScript, "params"); err != nil {
		return err
	}
	for k := range g.Params {
		if k == "" || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return mayfly.Errorf(mayfly.EINVALID, "param name %q must be non-empty without spaces or control characters", k)
		}
	}
	return nil
}

// checkName validates a requested account name: well formed and under the
// target's prefix.
func (c *Connector) checkName(name string) error {
	return acctname.CheckName(name, c.prefix, MaxNameLen)
}

// newPassword returns 32 random bytes, URL-safe base64 encoded.
func newPassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// Provision runs the provision command with a generated password. The
// command may override the username, password, host, port and database by
// printing a JSON object.
func (c *Connector) Provision(ctx context.Context, req mayfly.ProvisionRequest) (mayfly.ProvisionResponse, error) {
	if err := c.checkName(req.Username); err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	if err := validGrant(req.Grant); err != nil {
		return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "grant %q: %s", req.Grant.Name, mayfly.ErrorMessage(err))
	}
	pw, err := newPassword()
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	out, err := c.run(ctx, OpProvision, c.cmds.Provision, Request{
		LeaseID:   req.LeaseID,
		Username:  req.Username,
		Password:  pw,
		Grant:     req.Grant.Name,
		Params:    req.Grant.Params,
		ExpiresAt: formatTime(req.ExpiresAt),
		Mark:      c.key.Tag(req.Username),
	}, pw)
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	cred := mayfly.Credential{Username: req.Username, Password: pw, Host: c.host, Port: c.port}
	if len(bytes.TrimSpace(out)) == 0 {
		return mayfly.ProvisionResponse{Credential: cred}, nil
	}
	var o ProvisionOutput
	if err := json.Unmarshal(out, &o); err != nil {
		return mayfly.ProvisionResponse{}, fmt.Errorf("%s command of target %s printed malformed output: %s", OpProvision, c.name, scrub(err.Error(), pw))
	}
	if o.Username != "" {
		if strings.ContainsFunc(o.Username, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return mayfly.ProvisionResponse{}, fmt.Errorf("%s command of target %s returned a username with control characters", OpProvision, c.name)
		}
		cred.Username = o.Username
	}
	var account string
	if cred.Username != req.Username {
		account = cred.Username
	}
	if o.Password != "" {
		cred.Password = o.Password
	}
	if o.Host != "" {
		cred.Host = o.Host
	}
	if o.Port != 0 {
		if o.Port < 0 || o.Port > 65535 {
			return mayfly.ProvisionResponse{}, fmt.Errorf("%s command of target %s returned invalid port %d", OpProvision, c.name, o.Port)
		}
		cred.Port = o.Port
	}
	if o.Database != "" {
		cred.Database = o.Database
	}
	return mayfly.ProvisionResponse{Credential: cred, Account: account}, nil
}

// Revoke runs the revoke command. The command must succeed when the account
// does not exist.
func (c *Connector) Revoke(ctx context.Context, req mayfly.RevokeRequest) error {
	if err := c.checkName(req.Username); err != nil {
		return err
	}
	_, err := c.run(ctx, OpRevoke, c.cmds.Revoke, Request{
		LeaseID:   req.LeaseID,
		Username:  req.Username,
		ExpiresAt: formatTime(req.ExpiresAt),
	}, "")
	return err
}

// Accounts runs the accounts command, which must print a JSON array, and
// keeps the accounts whose name starts with req.Prefix.
func (c *Connector) Accounts(ctx context.Context, req mayfly.AccountsRequest) ([]mayfly.Account, error) {
	prefix := req.Prefix
	out, err := c.run(ctx, OpAccounts, c.cmds.Accounts, Request{Prefix: &prefix}, "")
	if err != nil {
		return nil, err
	}
	// An empty answer is an error, not an empty list: a broken command must
	// not make every account look gone.
	var list []AccountOutput
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, fmt.Errorf("%s command of target %s printed nothing; want a JSON array", OpAccounts, c.name)
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("%s command of target %s printed malformed output: %w", OpAccounts, c.name, err)
	}
	if list == nil {
		return nil, fmt.Errorf("%s command of target %s printed null; want a JSON array", OpAccounts, c.name)
	}
	accts := make([]mayfly.Account, 0, len(list))
	for _, a := range list {
		if a.Name == "" || !strings.HasPrefix(a.Name, req.Prefix) {
			continue
		}
		accts = append(accts, mayfly.Account{
			Name:         a.Name,
			LastActivity: a.LastActivity,
			Sessions:     a.Sessions,
			CanLogin:     a.CanLogin,
			Superuser:    a.Superuser,
			Privileges:   a.Privileges,
			Marked:       c.key.Valid(a.Name, a.Mark),
		})
	}
	return accts, nil
}

// Check finds every command's executable, then runs the check command,
// if the target has one: a missing or non-executable command makes the
// target unhealthy before a request needs it.
func (c *Connector) Check(ctx context.Context) error {
	for _, cmd := range []struct {
		key  string
		argv []string
	}{
		{"commands.provision", c.cmds.Provision},
		{"commands.revoke", c.cmds.Revoke},
		{"commands.accounts", c.cmds.Accounts},
		{"commands.check", c.cmds.Check},
	} {
		if len(cmd.argv) == 0 {
			continue
		}
		if _, err := exec.LookPath(cmd.argv[0]); err != nil {
			return mayfly.Errorf(mayfly.EUNAVAILABLE, "scripted target %s: %s: %s is missing or not executable (%v)", c.name, cmd.key, cmd.argv[0], unwrapExec(err))
		}
	}
	if len(c.cmds.Check) == 0 {
		return nil
	}
	if _, err := c.run(ctx, OpCheck, c.cmds.Check, Request{}, ""); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "scripted target %s: %s", c.name, err.Error())
	}
	return nil
}

// unwrapExec returns the cause of a LookPath error without repeating the
// name.
func unwrapExec(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Close does nothing: no command outlives its call.
func (c *Connector) Close() error { return nil }

// scrub replaces every secret in s.
func scrub(s string, secrets ...string) string {
	for _, v := range secrets {
		if v != "" {
			s = strings.ReplaceAll(s, v, "[REDACTED]")
		}
	}
	return s
}

// boundedBuffer keeps the first max bytes written and notes whether more
// came; it never fails a write, so the command is not killed by SIGPIPE.
type boundedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		b.overflow = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

// commandEnv is the whole environment of a command: enough to find
// programs and a home directory, and none of the broker's own variables,
// which may hold secrets.
func commandEnv() []string {
	env := []string{"LC_ALL=C"}
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// run executes argv with req as JSON on stdin, within the timeout, and
// returns its stdout. On failure the error carries the command's stderr,
// bounded, with secret replaced.
func (c *Connector) run(ctx context.Context, op string, argv []string, req Request, secret string) ([]byte, error) {
	req.Operation = op
	req.Target = c.name
	in, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s request: %w", op, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = commandEnv()
	cmd.Stdin = bytes.NewReader(in)
	stdout := &boundedBuffer{max: maxStdout}
	stderr := &boundedBuffer{max: maxStderr}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	killGroupOnCancel(cmd)
	// Children that keep stdout open must not hold the call past the kill.
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Run()
	detail := strings.TrimSpace(scrub(stderr.buf.String(), secret))
	if stderr.overflow {
		detail += " [stderr truncated]"
	}
	if detail != "" {
		detail = ": " + detail
	}
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, fmt.Errorf("%s command of target %s timed out after %s%s", op, c.name, c.timeout, detail)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s command of target %s: %w", op, c.name, ctx.Err())
	case err != nil:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil, fmt.Errorf("%s command of target %s failed (%s)%s", op, c.name, exit.ProcessState, detail)
		}
		return nil, fmt.Errorf("%s command of target %s could not run: %s", op, c.name, scrub(err.Error(), secret))
	}
	if stdout.overflow {
		return nil, fmt.Errorf("%s command of target %s printed more than %d bytes", op, c.name, maxStdout)
	}
	return stdout.buf.Bytes(), nil
}

var _ mayfly.Connector = (*Connector)(nil)
