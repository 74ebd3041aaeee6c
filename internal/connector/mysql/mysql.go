// Package mysql is the connector for MySQL and MariaDB targets (kind
// "mysql"): it creates an ephemeral user per lease with the grant's GRANT
// statements, optionally schedules a one-shot event that drops the user at
// expiry, and on revocation locks the user, kills its connections, drops it
// and verifies it is gone.
package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/acctname"
	"github.com/mayflyhq/mayfly/internal/connector/kindcheck"
	"github.com/mayflyhq/mayfly/internal/connector/mark"
)

// MaxNameLen is the longest account name MySQL accepts.
const MaxNameLen = 32

// DefaultConnectionLimit is MAX_USER_CONNECTIONS of an ephemeral user when
// the target sets no connection_limit.
const DefaultConnectionLimit = 10

// EventSchema is the schema that holds the expiry events.
const EventSchema = "mayfly"

// defaultMaxConns caps the admin connection pool when the target sets no
// max_conns.
const defaultMaxConns = 16

// Server error numbers the connector branches on.
const (
	errCannotUser     = 1396 // ER_CANNOT_USER: CREATE USER of an existing user
	errNoSuchThread   = 1094 // ER_NO_SUCH_THREAD: KILL of a finished connection
	errBadDB          = 1049 // ER_BAD_DB_ERROR
	errEventNotExists = 1539 // ER_EVENT_DOES_NOT_EXIST
	errDBAccessDenied = 1044 // ER_DBACCESS_DENIED_ERROR
)

// Connector manages ephemeral users on one MySQL or MariaDB server.
type Connector struct {
	db         *sql.DB
	limit      int
	host       string
	port       int
	grants     map[string]mayfly.Grant
	prefix     string
	mu         sync.Mutex
	mariaDB    bool
	flavorKnow bool
	key        mark.Key // marks the users this installation creates
	// noEvents makes the connector behave as with the event scheduler off,
	// so tests need not switch a shared server's global setting.
	noEvents bool
}

// New validates the target's configuration and grants and returns a
// connector. It does not connect; the first call that needs the server does.
// getenv resolves DSNEnv.
func New(t mayfly.Target, getenv func(string) string) (*Connector, error) {
	if t.Kind != "" && t.Kind != mayfly.KindMySQL {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: kind %q is not %q", t.Name, t.Kind, mayfly.KindMySQL)
	}
	if err := rejectUnused(t); err != nil {
		return nil, err
	}
	dsn := t.DSN
	switch {
	case t.DSN != "" && t.DSNEnv != "":
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: set dsn or dsn_env, not both", t.Name)
	case t.DSNEnv != "":
		if getenv == nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: dsn_env %q cannot be resolved", t.Name, t.DSNEnv)
		}
		dsn = getenv(t.DSNEnv)
		if dsn == "" {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: environment variable %q named by dsn_env is empty", t.Name, t.DSNEnv)
		}
	case dsn == "":
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: dsn or dsn_env is required", t.Name)
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		// The parser's message may quote parts of the DSN; keep it out.
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: dsn is not a valid MySQL DSN (user:password@tcp(host:port)/)", t.Name)
	}
	// One statement per call, server-side placeholders only.
	cfg.MultiStatements = false
	cfg.InterpolateParams = false
	cfg.ParseTime = true
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if t.ConnectionLimit < 0 {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: connection_limit must not be negative", t.Name)
	}
	key, err := mark.FromTarget(t, getenv)
	if err != nil {
		return nil, err
	}
	c := &Connector{
		key:    key,
		limit:  t.ConnectionLimit,
		host:   t.PublicHost,
		port:   t.PublicPort,
		grants: make(map[string]mayfly.Grant, len(t.Grants)),
		prefix: t.Prefix,
	}
	if c.limit == 0 {
		c.limit = DefaultConnectionLimit
	}
	if c.prefix == "" {
		c.prefix = mayfly.DefaultPrefix
	}
	if err := acctname.ValidName(c.prefix, MaxNameLen, true); err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: prefix: %s", t.Name, mayfly.ErrorMessage(err))
	}
	if c.host == "" || c.port == 0 {
		h, p := hostPort(cfg)
		if c.host == "" {
			c.host = h
		}
		if c.port == 0 {
			c.port = p
		}
	}
	for name, g := range t.Grants {
		if err := validGrant(g); err != nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: grant %q: %s", t.Name, name, mayfly.ErrorMessage(err))
		}
		c.grants[name] = g
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: dsn is not a valid MySQL DSN", t.Name)
	}
	c.db = sql.OpenDB(connector)
	maxConns := t.MaxConns
	if maxConns <= 0 {
		maxConns = defaultMaxConns
	}
	c.db.SetMaxOpenConns(maxConns)
	c.db.SetMaxIdleConns(min(maxConns, 4))
	c.db.SetConnMaxIdleTime(5 * time.Minute)
	return c, nil
}

// rejectUnused refuses settings that belong to other kinds, so a
// misplaced key is an error rather than silently ignored.
func rejectUnused(t mayfly.Target) error {
	return kindcheck.Target(t, mayfly.KindMySQL, "dsn", "dsn_env", "connection_limit", "max_conns", "rotate_every")
}

func hostPort(cfg *mysql.Config) (string, int) {
	if cfg.Net != "tcp" && cfg.Net != "tcp4" && cfg.Net != "tcp6" {
		return "", 0
	}
	h, p, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return cfg.Addr, 3306
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return h, 3306
	}
	return h, port
}

// validGrant checks that g uses only the fields of this kind and that its
// statements use no placeholder other than {{name}}.
func validGrant(g mayfly.Grant) error {
	if err := kindcheck.Grant(g, mayfly.KindMySQL, "statements", "database"); err != nil {
		return err
	}
	for i, s := range g.Statements {
		if strings.TrimSpace(s) == "" {
			return mayfly.Errorf(mayfly.EINVALID, "statement %d is empty", i+1)
		}
		if strings.ContainsRune(s, 0) {
			return mayfly.Errorf(mayfly.EINVALID, "statement %d contains a NUL byte", i+1)
		}
		if strings.Contains(strings.ReplaceAll(s, "{{name}}", ""), "{{") {
			return mayfly.Errorf(mayfly.EINVALID, "statement %d uses a placeholder other than {{name}}", i+1)
		}
	}
	if strings.ContainsFunc(g.Database, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return mayfly.Errorf(mayfly.EINVALID, "database contains control characters")
	}
	return nil
}

// checkName validates a requested account name: well formed and under the
// target's prefix, so the connector never touches accounts it does not
// manage.
func (c *Connector) checkName(name string) error {
	return acctname.CheckName(name, c.prefix, MaxNameLen)
}

// quoteString returns s as a single-quoted SQL string literal, safe whatever
// the server's sql_mode: quotes are doubled and backslashes escaped.
func quoteString(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range s {
		switch r {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		case 0:
			b.WriteString(`\0`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// quoteIdent returns s as a backquoted identifier.
func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(s, "`", "``") + "`"
}

// account returns the quoted account 'name'@'%'.
func account(name string) string {
	return quoteString(name) + "@'%'"
}

// eventName is the name of the expiry event of an account.
func eventName(name string) string {
	return "expire_" + name
}

// expandStatement replaces {{name}} with the quoted account.
func expandStatement(stmt, name string) string {
	return strings.ReplaceAll(stmt, "{{name}}", account(name))
}

// newPassword returns 32 random bytes, URL-safe base64 encoded.
func newPassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// scrubbed returns err's text with secret replaced, as a new error: server
// messages can quote the statement that carried the password.
func scrubbed(err error, secret string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "[REDACTED]")
	}
	return errors.New(msg)
}

func errNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// Provision creates the user with a fresh password and runs the grant's
// statements. If the user exists (the same lease provisioned again) its
// password is replaced instead. When the server's event scheduler is on, a
// one-shot event drops the user at expiry even if Mayfly is down.
func (c *Connector) Provision(ctx context.Context, req mayfly.ProvisionRequest) (mayfly.ProvisionResponse, error) {
	name := req.Username
	if err := c.checkName(name); err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	if err := validGrant(req.Grant); err != nil {
		return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "grant %q: %s", req.Grant.Name, mayfly.ErrorMessage(err))
	}
	pw, err := newPassword()
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	auth, attr, err := c.identified(ctx, name, pw)
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	created := true
	create := fmt.Sprintf("CREATE USER %s %s WITH MAX_USER_CONNECTIONS %d%s", account(name), auth, c.limit, attr)
	if _, err := c.db.ExecContext(ctx, create); err != nil {
		if errNumber(err) != errCannotUser {
			return mayfly.ProvisionResponse{}, fmt.Errorf("create user %s: %w", name, scrubbed(err, pw))
		}
		created = false
		alter := fmt.Sprintf("ALTER USER %s %s WITH MAX_USER_CONNECTIONS %d ACCOUNT UNLOCK%s", account(name), auth, c.limit, attr)
		if _, err := c.db.ExecContext(ctx, alter); err != nil {
			return mayfly.ProvisionResponse{}, fmt.Errorf("reset password of user %s: %w", name, scrubbed(err, pw))
		}
	}
	undo := func(err error) (mayfly.ProvisionResponse, error) {
		if created {
			// Leave nothing behind; the broker's revocation covers a failure here.
			c.db.ExecContext(context.WithoutCancel(ctx), "DROP USER IF EXISTS "+account(name))
		}
		return mayfly.ProvisionResponse{}, err
	}
	for i, s := range req.Grant.Statements {
		if _, err := c.db.ExecContext(ctx, expandStatement(s, name)); err != nil {
			return undo(fmt.Errorf("grant %q statement %d for %s: %w", req.Grant.Name, i+1, name, scrubbed(err, pw)))
		}
	}
	if !req.ExpiresAt.IsZero() {
		if err := c.scheduleExpiry(ctx, name, req.ExpiresAt); err != nil {
			return undo(err)
		}
	}
	return mayfly.ProvisionResponse{Credential: mayfly.Credential{
		Username: name,
		Password: pw,
		Host:     c.host,
		Port:     c.port,
		Database: req.Grant.Database,
	}}, nil
}

// markHashLen is how many hex digits of the mark a MariaDB user keeps: a
// mysql_native_password hash has 40.
const markHashLen = 40

// identified returns the authentication clause for a new password and the
// clause that marks the user, when the installation has a key. MariaDB has
// no comment on users: the mark is a second authentication method, a
// mysql_native_password hash made of the mark, which no password hashes to,
// so it lets nobody in. MySQL (8.0.21 and later) keeps it as a user
// attribute.
func (c *Connector) identified(ctx context.Context, name, pw string) (auth, attr string, err error) {
	tag := c.key.Tag(name)
	if tag == "" {
		return "IDENTIFIED BY " + quoteString(pw), "", nil
	}
	maria, err := c.isMariaDB(ctx)
	if err != nil {
		return "", "", err
	}
	if maria {
		return "IDENTIFIED VIA mysql_native_password USING PASSWORD(" + quoteString(pw) + ") OR mysql_native_password USING " +
			quoteString("*"+strings.ToUpper(tag[:markHashLen])), "", nil
	}
	return "IDENTIFIED BY " + quoteString(pw), " ATTRIBUTE " + quoteString(`{"mayfly_mark": "`+tag+`"}`), nil
}

// marked reports whether marks, as the Accounts query reads them, hold this
// installation's mark of name: on MariaDB a JSON array of the hashes of the
// user's other authentication methods, on MySQL the mayfly_mark attribute.
func (c *Connector) marked(maria bool, name, marks string) bool {
	if c.key.Zero() || marks == "" {
		return false
	}
	if !maria {
		return c.key.Valid(name, marks)
	}
	var hashes []string
	if json.Unmarshal([]byte(marks), &hashes) != nil {
		return false
	}
	return slices.ContainsFunc(hashes, func(h string) bool {
		h, ok := strings.CutPrefix(h, "*")
		return ok && len(h) == markHashLen && c.key.ValidPrefix(name, h, markHashLen)
	})
}

// eventSchedulerOn reports whether the server runs events.
func (c *Connector) eventSchedulerOn(ctx context.Context) (bool, error) {
	if c.noEvents {
		return false, nil
	}
	var v string
	if err := c.db.QueryRowContext(ctx, "SELECT @@GLOBAL.event_scheduler").Scan(&v); err != nil {
		return false, fmt.Errorf("read event_scheduler: %w", err)
	}
	return strings.EqualFold(v, "ON") || v == "1", nil
}

// scheduleExpiry creates the one-shot event that drops the user at
// expiresAt, when the event scheduler is on.
func (c *Connector) scheduleExpiry(ctx context.Context, name string, expiresAt time.Time) error {
	on, err := c.eventSchedulerOn(ctx)
	if err != nil || !on {
		return err
	}
	if _, err := c.db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(EventSchema)); err != nil {
		return fmt.Errorf("create schema %s: %w", EventSchema, err)
	}
	// FROM_UNIXTIME yields the instant in the session's time zone, which is
	// the zone the event is recorded with, so no zone arithmetic is needed.
	at := max(expiresAt.Unix(), time.Now().Unix()+1)
	stmt := fmt.Sprintf("CREATE EVENT IF NOT EXISTS %s.%s ON SCHEDULE AT FROM_UNIXTIME(%d) ON COMPLETION NOT PRESERVE DO DROP USER IF EXISTS %s",
		quoteIdent(EventSchema), quoteIdent(eventName(name)), at, account(name))
	if _, err := c.db.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("create expiry event for %s: %w", name, err)
	}
	return nil
}

// Revoke locks the user, kills its connections, drops it and its expiry
// event, and verifies it is gone. A user that does not exist is success.
func (c *Connector) Revoke(ctx context.Context, req mayfly.RevokeRequest) error {
	name := req.Username
	if err := c.checkName(name); err != nil {
		return err
	}
	if _, err := c.db.ExecContext(ctx, "ALTER USER IF EXISTS "+account(name)+" ACCOUNT LOCK"); err != nil {
		return fmt.Errorf("lock user %s: %w", name, err)
	}
	if _, err := c.killSessions(ctx, name); err != nil {
		return err
	}
	if _, err := c.db.ExecContext(ctx, "DROP USER IF EXISTS "+account(name)); err != nil {
		return fmt.Errorf("drop user %s: %w", name, err)
	}
	if err := c.dropEvent(ctx, name); err != nil {
		return err
	}
	// A login racing the lock may have slipped in; end it too.
	if _, err := c.killSessions(ctx, name); err != nil {
		return err
	}
	var n int
	if err := c.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = "+quoteString(name)+" AND Host = '%'").Scan(&n); err != nil {
		return fmt.Errorf("verify user %s is gone: %w", name, err)
	}
	if n != 0 {
		return fmt.Errorf("user %s still present after drop", name)
	}
	return nil
}

// process is one connection in SHOW PROCESSLIST.
type process struct {
	id      uint64
	user    string
	command string
	secs    int64
}

// processList returns the server's connections. SHOW PROCESSLIST is used
// rather than information_schema.PROCESSLIST, which the server materialises
// at a cost of milliseconds per query; its columns are found by name, as
// MySQL and MariaDB differ after the first few.
func (c *Connector) processList(ctx context.Context) ([]process, error) {
	rows, err := c.db.QueryContext(ctx, "SHOW PROCESSLIST")
	if err != nil {
		return nil, fmt.Errorf("show processlist: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("show processlist: %w", err)
	}
	idx := map[string]int{}
	for i, c := range cols {
		idx[strings.ToLower(c)] = i
	}
	for _, want := range []string{"id", "user", "command", "time"} {
		if _, ok := idx[want]; !ok {
			return nil, fmt.Errorf("show processlist: no %s column", want)
		}
	}
	raw := make([]sql.RawBytes, len(cols))
	dest := make([]any, len(cols))
	for i := range raw {
		dest[i] = &raw[i]
	}
	var out []process
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("show processlist: %w", err)
		}
		id, err := strconv.ParseUint(string(raw[idx["id"]]), 10, 64)
		if err != nil {
			continue
		}
		secs, _ := strconv.ParseInt(string(raw[idx["time"]]), 10, 64)
		out = append(out, process{id: id, user: string(raw[idx["user"]]), command: string(raw[idx["command"]]), secs: secs})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("show processlist: %w", err)
	}
	return out, nil
}

// killSessions kills every connection of the user and returns how many it
// found.
func (c *Connector) killSessions(ctx context.Context, name string) (int, error) {
	procs, err := c.processList(ctx)
	if err != nil {
		return 0, fmt.Errorf("list sessions of %s: %w", name, err)
	}
	n := 0
	for _, p := range procs {
		if p.user != name {
			continue
		}
		n++
		if _, err := c.db.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", p.id)); err != nil && errNumber(err) != errNoSuchThread {
			return n, fmt.Errorf("kill session %d of %s: %w", p.id, name, err)
		}
	}
	return n, nil
}

// dropEvent drops the expiry event of the user, if any. Lacking the EVENT
// privilege on the event schema is not an error: the same admin account
// could not have created the event either, and a stray event would only
// drop a user that is already gone.
func (c *Connector) dropEvent(ctx context.Context, name string) error {
	_, err := c.db.ExecContext(ctx, fmt.Sprintf("DROP EVENT IF EXISTS %s.%s", quoteIdent(EventSchema), quoteIdent(eventName(name))))
	if err == nil {
		return nil
	}
	switch errNumber(err) {
	case errBadDB, errEventNotExists, errDBAccessDenied:
		return nil
	}
	return fmt.Errorf("drop expiry event of %s: %w", name, err)
}

// isMariaDB reports whether the server is MariaDB, asking once.
func (c *Connector) isMariaDB(ctx context.Context) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flavorKnow {
		return c.mariaDB, nil
	}
	var v string
	if err := c.db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
		return false, fmt.Errorf("read server version: %w", err)
	}
	c.mariaDB = strings.Contains(strings.ToLower(v), "mariadb")
	c.flavorKnow = true
	return c.mariaDB, nil
}

// likePrefix returns a LIKE pattern matching names that start with prefix.
func likePrefix(prefix string) string {
	r := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")
	return r.Replace(prefix) + "%"
}

type userRow struct {
	user, host string
	locked     bool
	expired    bool
	super      bool
	marks      string
}

// Accounts lists the users whose name starts with req.Prefix ("" for every
// user), one entry per user name whatever its hosts, with their live
// connections and privileges. Roles are left out. Marked is set when the
// user's entry for host '%' carries this installation's mark.
func (c *Connector) Accounts(ctx context.Context, req mayfly.AccountsRequest) ([]mayfly.Account, error) {
	maria, err := c.isMariaDB(ctx)
	if err != nil {
		return nil, err
	}
	var q string
	if maria {
		q = `SELECT u.User, u.Host, COALESCE(JSON_VALUE(g.Priv, '$.account_locked'), '0') IN ('1', 'true'),
			u.password_expired = 'Y', u.Super_priv = 'Y',
			COALESCE(JSON_EXTRACT(g.Priv, '$.auth_or[*].authentication_string'), '')
			FROM mysql.user u JOIN mysql.global_priv g ON g.User = u.User AND g.Host = u.Host
			WHERE u.is_role = 'N' AND u.User LIKE ? ESCAPE '!'`
	} else {
		q = `SELECT u.User, u.Host, u.account_locked = 'Y', u.password_expired = 'Y', u.Super_priv = 'Y',
			COALESCE(JSON_UNQUOTE(JSON_EXTRACT(a.ATTRIBUTE, '$.mayfly_mark')), '')
			FROM mysql.user u LEFT JOIN information_schema.USER_ATTRIBUTES a ON a.USER = u.User AND a.HOST = u.Host
			WHERE u.User LIKE ? ESCAPE '!'`
	}
	rows, err := c.db.QueryContext(ctx, q, likePrefix(req.Prefix))
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	var users []userRow
	for rows.Next() {
		var u userRow
		if err := rows.Scan(&u.user, &u.host, &u.locked, &u.expired, &u.super, &u.marks); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list users: %w", err)
		}
		if strings.HasPrefix(u.user, req.Prefix) {
			users = append(users, u)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	privs, err := c.privileges(ctx)
	if err != nil {
		return nil, err
	}
	sessions, err := c.sessions(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]*mayfly.Account{}
	var order []string
	for _, u := range users {
		a := byName[u.user]
		if a == nil {
			a = &mayfly.Account{Name: u.user}
			byName[u.user] = a
			order = append(order, u.user)
			if s, ok := sessions[u.user]; ok {
				a.Sessions = s.n
				a.LastActivity = s.last
			}
		}
		a.CanLogin = a.CanLogin || (!u.locked && !u.expired)
		a.Superuser = a.Superuser || u.super
		a.Marked = a.Marked || (u.host == "%" && c.marked(maria, u.user, u.marks))
		grantee := quoteString(u.user) + "@" + quoteString(u.host)
		p := privs[grantee]
		if u.host != "%" {
			// Name the host where it is not the managed one, so the
			// summary stays unambiguous.
			p = slices.Clone(p)
			for i := range p {
				p[i] += " (@" + u.host + ")"
			}
		}
		a.Privileges = append(a.Privileges, p...)
	}
	slices.Sort(order)
	out := make([]mayfly.Account, 0, len(order))
	for _, n := range order {
		out = append(out, *byName[n])
	}
	return out, nil
}

// privileges summarises global, schema and table privileges by grantee
// ('user'@'host'), e.g. "SELECT ON `shop`.*".
func (c *Connector) privileges(ctx context.Context) (map[string][]string, error) {
	type level struct {
		q      string
		object func(schema, table string) string
	}
	levels := []level{
		{"SELECT GRANTEE, '', '', PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES", func(string, string) string { return "*.*" }},
		{"SELECT GRANTEE, TABLE_SCHEMA, '', PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES", func(s, _ string) string { return quoteIdent(s) + ".*" }},
		{"SELECT GRANTEE, TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES", func(s, t string) string { return quoteIdent(s) + "." + quoteIdent(t) }},
	}
	// privs[grantee][object] = privilege types, in order seen.
	type entry struct {
		object string
		types  []string
	}
	all := map[string][]*entry{}
	for _, l := range levels {
		rows, err := c.db.QueryContext(ctx, l.q)
		if err != nil {
			return nil, fmt.Errorf("list privileges: %w", err)
		}
		for rows.Next() {
			var grantee, schema, table, typ string
			if err := rows.Scan(&grantee, &schema, &table, &typ); err != nil {
				rows.Close()
				return nil, fmt.Errorf("list privileges: %w", err)
			}
			if typ == "USAGE" {
				continue
			}
			obj := l.object(schema, table)
			es := all[grantee]
			i := slices.IndexFunc(es, func(e *entry) bool { return e.object == obj })
			if i < 0 {
				es = append(es, &entry{object: obj})
				all[grantee] = es
				i = len(es) - 1
			}
			es[i].types = append(es[i].types, typ)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("list privileges: %w", err)
		}
	}
	out := make(map[string][]string, len(all))
	for grantee, es := range all {
		for _, e := range es {
			out[grantee] = append(out[grantee], strings.Join(e.types, ", ")+" ON "+e.object)
		}
	}
	return out, nil
}

type sessionInfo struct {
	n    int
	last time.Time
}

// sessions counts live connections per user and estimates when each user
// was last active: now for a running statement, now minus the idle time
// for a sleeping connection.
func (c *Connector) sessions(ctx context.Context) (map[string]sessionInfo, error) {
	procs, err := c.processList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	now := time.Now()
	out := map[string]sessionInfo{}
	for _, p := range procs {
		last := now
		if p.command == "Sleep" {
			last = now.Add(-time.Duration(p.secs) * time.Second)
		}
		s := out[p.user]
		s.n++
		if last.After(s.last) {
			s.last = last
		}
		out[p.user] = s
	}
	return out, nil
}

// Check reports whether the server answers with the admin credential.
func (c *Connector) Check(ctx context.Context) error {
	var one int
	if err := c.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "mysql target unreachable: %s", safeDriverMessage(err))
	}
	return nil
}

// safeDriverMessage keeps the server's error number and message and drops
// anything else (addresses, DSN fragments).
func safeDriverMessage(err error) string {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return fmt.Sprintf("error %d: %s", me.Number, me.Message)
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
	return c.db.Close()
}

var _ mayfly.Connector = (*Connector)(nil)
