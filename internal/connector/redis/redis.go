// Package redis is the connector for Redis targets (kind "redis"): it
// creates an ACL user per lease with the grant's ACL rules, and on
// revocation disables the user, disconnects its clients, deletes it and
// verifies it is gone. Redis cannot expire an ACL user by itself, so only
// the broker removes it.
package redis

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/acctname"
	"github.com/mayflyhq/mayfly/internal/connector/kindcheck"
	"github.com/mayflyhq/mayfly/internal/connector/mark"
)

// MaxNameLen is the longest account name the connector accepts. Redis
// itself has no practical limit; 64 keeps names readable in CLIENT LIST and
// logs.
const MaxNameLen = 64

// DefaultPort is the port used when Address has none.
const DefaultPort = 6379

// defaultMaxConns caps the admin connection pool when the target sets no
// max_conns.
const defaultMaxConns = 16

// Connector manages ACL users on one Redis server.
type Connector struct {
	rdb    *redis.Client
	key    mark.Key // marks the users this installation creates
	host   string
	port   int
	prefix string
	grants map[string]mayfly.Grant

	adminUser string // the ACL user Mayfly logs in as ("": default)

	mu      sync.Mutex
	aclFile *bool // whether the server persists ACLs to a file; nil until asked
}

// New validates the target's configuration and grants and returns a
// connector. It does not connect; the first call that needs the server does.
// getenv resolves AdminPasswordEnv.
func New(t mayfly.Target, getenv func(string) string) (*Connector, error) {
	if t.Kind != "" && t.Kind != mayfly.KindRedis {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: kind %q is not %q", t.Name, t.Kind, mayfly.KindRedis)
	}
	if err := rejectUnused(t); err != nil {
		return nil, err
	}
	if t.Address == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: address is required", t.Name)
	}
	addr, host, port, err := splitAddress(t.Address)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: address: %s", t.Name, mayfly.ErrorMessage(err))
	}
	password := t.AdminPassword
	switch {
	case t.AdminPassword != "" && t.AdminPasswordEnv != "":
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: set admin_password or admin_password_env, not both", t.Name)
	case t.AdminPasswordEnv != "":
		if getenv != nil {
			password = getenv(t.AdminPasswordEnv)
		}
		if password == "" {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: environment variable %q named by admin_password_env is empty", t.Name, t.AdminPasswordEnv)
		}
	}
	if t.AdminUser != "" && password == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: admin_user needs admin_password or admin_password_env", t.Name)
	}
	key, err := mark.FromTarget(t, getenv)
	if err != nil {
		return nil, err
	}
	c := &Connector{
		key:    key,
		host:   host,
		port:   port,
		prefix: t.Prefix,
		grants: make(map[string]mayfly.Grant, len(t.Grants)),

		adminUser: t.AdminUser,
	}
	if t.PublicHost != "" {
		c.host = t.PublicHost
	}
	if t.PublicPort != 0 {
		c.port = t.PublicPort
	}
	if c.prefix == "" {
		c.prefix = mayfly.DefaultPrefix
	}
	if err := acctname.ValidName(c.prefix, MaxNameLen, true); err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: prefix: %s", t.Name, mayfly.ErrorMessage(err))
	}
	for name, g := range t.Grants {
		if _, err := grantRules(g); err != nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: grant %q: %s", t.Name, name, mayfly.ErrorMessage(err))
		}
		c.grants[name] = g
	}
	maxConns := t.MaxConns
	if maxConns <= 0 {
		maxConns = defaultMaxConns
	}
	c.rdb = redis.NewClient(&redis.Options{
		Addr:            addr,
		Username:        t.AdminUser,
		Password:        password,
		PoolSize:        maxConns,
		DialTimeout:     10 * time.Second,
		DisableIdentity: true,
	})
	return c, nil
}

// rejectUnused refuses settings that belong to other kinds.
func rejectUnused(t mayfly.Target) error {
	return kindcheck.Target(t, mayfly.KindRedis, "address", "admin_user", "admin_password", "admin_password_env", "max_conns", "rotate_every")
}

// splitAddress returns the dial address and its host and port, adding the
// default port when the address has none.
func splitAddress(addr string) (dial, host string, port int, err error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		// No port (or a bare IPv6 address): use the default.
		h = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
		p = strconv.Itoa(DefaultPort)
	}
	if h == "" || strings.ContainsAny(h, " /@") {
		return "", "", 0, mayfly.Errorf(mayfly.EINVALID, "%q is not host:port", addr)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", "", 0, mayfly.Errorf(mayfly.EINVALID, "%q has an invalid port", addr)
	}
	return net.JoinHostPort(h, p), h, n, nil
}

// grantRules validates g for this kind and returns its ACL rules, one per
// element.
func grantRules(g mayfly.Grant) ([]string, error) {
	if err := kindcheck.Grant(g, mayfly.KindRedis, "acl"); err != nil {
		return nil, err
	}
	return ParseACL(g.ACL)
}

// ParseACL splits an ACL string on spaces and checks every rule against the
// forms a grant may use: key patterns (~pattern, %R~, %W~, %RW~pattern),
// channel patterns (&pattern), commands and categories (+cmd, -cmd,
// +cmd|sub, +@cat, -@cat) and the keywords allkeys, allchannels, resetkeys,
// resetchannels, allcommands and nocommands. Anything else (on, off,
// passwords, hashes, nopass, reset, selectors) is refused: the connector
// alone controls whether and how the user logs in.
func ParseACL(acl string) ([]string, error) {
	if strings.ContainsFunc(acl, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, mayfly.Errorf(mayfly.EINVALID, "acl contains control characters")
	}
	var rules []string
	for r := range strings.SplitSeq(acl, " ") {
		if r == "" {
			continue
		}
		if err := checkRule(r); err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	if len(rules) == 0 {
		return nil, mayfly.Errorf(mayfly.EINVALID, "acl is required")
	}
	return rules, nil
}

var keywords = []string{"allkeys", "allchannels", "resetkeys", "resetchannels", "allcommands", "nocommands"}

func checkRule(r string) error {
	bad := mayfly.Errorf(mayfly.EINVALID, "acl rule %q is not allowed in a grant", r)
	if r == "" || strings.ContainsFunc(r, func(c rune) bool { return c <= ' ' || c >= 0x7f }) {
		return bad
	}
	if slices.Contains(keywords, strings.ToLower(r)) {
		return nil
	}
	switch {
	case r[0] == '~' || r[0] == '&':
		return checkPattern(r[1:], bad)
	case r[0] == '%':
		i := strings.IndexByte(r, '~')
		if i < 0 {
			return bad
		}
		switch strings.ToUpper(r[1:i]) {
		case "R", "W", "RW", "WR":
			return checkPattern(r[i+1:], bad)
		}
		return bad
	case r[0] == '+' || r[0] == '-':
		body := r[1:]
		if cat, ok := strings.CutPrefix(body, "@"); ok {
			if !isName(cat, false) {
				return bad
			}
			return nil
		}
		cmd, sub, hasSub := strings.Cut(body, "|")
		if !isName(cmd, false) || (hasSub && !isName(sub, true)) {
			return bad
		}
		return nil
	}
	return bad
}

// checkPattern accepts a non-empty glob pattern that cannot be read as a
// selector.
func checkPattern(p string, bad error) error {
	if p == "" || strings.ContainsAny(p, "()") {
		return bad
	}
	return nil
}

// isName reports whether s is a command, category or subcommand name.
func isName(s string, sub bool) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.':
			if i == 0 && !sub {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// checkName validates a requested account name: well formed and under the
// target's prefix, so the connector never touches users it does not manage
// (such as "default").
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

// scrubbed returns err's text with secret replaced, as a new error.
func scrubbed(err error, secret string) error {
	msg := err.Error()
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "[REDACTED]")
	}
	return errors.New(msg)
}

// usesACLFile reports whether the server keeps its users in an ACL file,
// which must then be saved after every change. The answer is cached once
// known: aclfile cannot change while the server runs.
func (c *Connector) usesACLFile(ctx context.Context) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aclFile != nil {
		return *c.aclFile, nil
	}
	m, err := c.rdb.ConfigGet(ctx, "aclfile").Result()
	if err != nil {
		return false, fmt.Errorf("read aclfile setting: %w", err)
	}
	v := m["aclfile"] != ""
	c.aclFile = &v
	return v, nil
}

// saveACL persists the users when the server uses an ACL file.
func (c *Connector) saveACL(ctx context.Context) error {
	file, err := c.usesACLFile(ctx)
	if err != nil || !file {
		return err
	}
	if err := c.rdb.Do(ctx, "ACL", "SAVE").Err(); err != nil {
		return fmt.Errorf("acl save: %w", err)
	}
	return nil
}

// Provision creates (or, for the same lease again, resets) the ACL user
// with a fresh password and exactly the grant's rules. Each rule travels as
// its own argument.
func (c *Connector) Provision(ctx context.Context, req mayfly.ProvisionRequest) (mayfly.ProvisionResponse, error) {
	name := req.Username
	if err := c.checkName(name); err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	rules, err := grantRules(req.Grant)
	if err != nil {
		return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "grant %q: %s", req.Grant.Name, mayfly.ErrorMessage(err))
	}
	pw, err := newPassword()
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	args := make([]any, 0, 7+len(rules))
	args = append(args, "ACL", "SETUSER", name, "reset", "on", ">"+pw)
	if tag := c.key.Tag(name); tag != "" {
		// The mark: a second password hash, the HMAC of the name. No
		// password hashes to it, so it lets nobody in.
		args = append(args, "#"+tag)
	}
	for _, r := range rules {
		args = append(args, r)
	}
	if err := c.rdb.Do(ctx, args...).Err(); err != nil {
		return mayfly.ProvisionResponse{}, fmt.Errorf("acl setuser %s: %w", name, scrubbed(err, pw))
	}
	if err := c.saveACL(ctx); err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	return mayfly.ProvisionResponse{Credential: mayfly.Credential{
		Username: name,
		Password: pw,
		Host:     c.host,
		Port:     c.port,
	}}, nil
}

// Revoke disables the user, disconnects its clients, deletes it and
// verifies it is gone. A user that does not exist is success. The steps go
// out as one pipeline, which the server runs in order.
func (c *Connector) Revoke(ctx context.Context, req mayfly.RevokeRequest) error {
	name := req.Username
	if err := c.checkName(name); err != nil {
		return err
	}
	file, err := c.usesACLFile(ctx)
	if err != nil {
		return err
	}
	var off, kill, del, save, get *redis.Cmd
	c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		off = p.Do(ctx, "ACL", "SETUSER", name, "off")
		kill = p.Do(ctx, "CLIENT", "KILL", "USER", name)
		del = p.Do(ctx, "ACL", "DELUSER", name)
		if file {
			save = p.Do(ctx, "ACL", "SAVE")
		}
		get = p.Do(ctx, "ACL", "GETUSER", name)
		return nil
	})
	// Each command carries its own error (a transport failure shows on all
	// of them), so they are checked one by one, in order.
	if err := off.Err(); err != nil {
		return fmt.Errorf("disable user %s: %w", name, err)
	}
	if err := kill.Err(); err != nil && !strings.Contains(strings.ToLower(err.Error()), "no such user") {
		return fmt.Errorf("disconnect clients of %s: %w", name, err)
	}
	if err := del.Err(); err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	if save != nil {
		if err := save.Err(); err != nil {
			return fmt.Errorf("acl save: %w", err)
		}
	}
	switch err := get.Err(); {
	case errors.Is(err, redis.Nil):
		return nil
	case err != nil:
		return fmt.Errorf("verify user %s is gone: %w", name, err)
	}
	return fmt.Errorf("user %s still present after acl deluser", name)
}

// Accounts lists the ACL users whose name starts with req.Prefix ("" for
// every user) with their clients, idle time and rules (password hashes
// left out).
func (c *Connector) Accounts(ctx context.Context, req mayfly.AccountsRequest) ([]mayfly.Account, error) {
	lines, err := c.rdb.Do(ctx, "ACL", "LIST").StringSlice()
	if err != nil {
		return nil, fmt.Errorf("acl list: %w", err)
	}
	clients, err := c.rdb.ClientList(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("client list: %w", err)
	}
	sessions := parseClientList(clients, time.Now())
	var out []mayfly.Account
	for _, line := range lines {
		a, hashes, ok := parseACLUser(line)
		if !ok || !strings.HasPrefix(a.Name, req.Prefix) {
			continue
		}
		a.Marked = slices.ContainsFunc(hashes, func(h string) bool { return c.key.Valid(a.Name, h) })
		if s, ok := sessions[a.Name]; ok {
			a.Sessions = s.n
			a.LastActivity = s.last
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b mayfly.Account) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// parseACLUser reads one ACL LIST line: "user <name> <rules...>", and
// returns the password hashes apart.
func parseACLUser(line string) (mayfly.Account, []string, bool) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "user" {
		return mayfly.Account{}, nil, false
	}
	var hashes []string
	a := mayfly.Account{Name: f[1]}
	var on, pass, allKeys, allCmds bool
	var rules []string
	depth := 0 // inside a selector "( ... )"
	for _, r := range f[2:] {
		top := depth == 0
		depth += strings.Count(r, "(") - strings.Count(r, ")")
		switch {
		case strings.HasPrefix(r, "#") || strings.HasPrefix(r, ">"):
			pass = true
			if top && strings.HasPrefix(r, "#") {
				hashes = append(hashes, r[1:])
			}
			continue // a password hash: keep it out of the summary
		case r == "on" && top:
			on = true
		case r == "nopass" && top:
			pass = true
		case (r == "~*" || r == "%RW~*" || r == "allkeys") && top:
			allKeys = true
		case (r == "+@all" || r == "allcommands") && top:
			allCmds = true
		}
		rules = append(rules, r)
	}
	a.CanLogin = on && pass
	a.Superuser = allKeys && allCmds
	if len(rules) > 0 {
		a.Privileges = []string{strings.Join(rules, " ")}
	}
	return a, hashes, true
}

type sessionInfo struct {
	n    int
	last time.Time
}

// parseClientList counts clients per user in CLIENT LIST output; the last
// activity of a user is now minus the smallest idle time of its clients.
func parseClientList(list string, now time.Time) map[string]sessionInfo {
	out := map[string]sessionInfo{}
	for line := range strings.Lines(list) {
		var user string
		idle := -1
		for kv := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "user":
				user = v
			case "idle":
				if n, err := strconv.Atoi(v); err == nil {
					idle = n
				}
			}
		}
		if user == "" {
			continue
		}
		s := out[user]
		s.n++
		if idle >= 0 {
			if last := now.Add(-time.Duration(idle) * time.Second); last.After(s.last) {
				s.last = last
			}
		}
		out[user] = s
	}
	return out
}

// Check reports whether the server answers with the admin credential.
func (c *Connector) Check(ctx context.Context) error {
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "redis target unreachable: %s", safeMessage(err))
	}
	return nil
}

// safeMessage keeps a server reply's text and reduces anything else to its
// kind.
func safeMessage(err error) string {
	var re redis.Error
	if errors.As(err, &re) {
		return re.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return "network error"
	}
	return "connection failed"
}

// Close closes the admin connection pool.
func (c *Connector) Close() error {
	return c.rdb.Close()
}

var _ mayfly.Connector = (*Connector)(nil)
