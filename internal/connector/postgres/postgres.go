// Package postgres is the connector for PostgreSQL targets (kind
// "postgres"). For each lease it creates a login role whose password
// verifier (SCRAM-SHA-256) is computed by Mayfly, so the plaintext never
// reaches the server, with VALID UNTIL set to the lease's expiry and the
// grant's roles and statements applied in the same transaction. Revocation
// blocks logins, ends the role's sessions, hands what it owns in every
// database to the admin role, drops the role and verifies it is gone.
//
// A grant's statements are trusted SQL written by the administrator, one
// statement per entry; the only substitution is {{name}}, which expands to
// the quoted role name. They run in the grant's database (the DSN's database
// when the grant names none).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/acctname"
	"github.com/mayflyhq/mayfly/internal/connector/kindcheck"
	"github.com/mayflyhq/mayfly/internal/connector/mark"
	"github.com/mayflyhq/mayfly/internal/pgpool"
)

// MaxNameLen is the longest role name PostgreSQL keeps (NAMEDATALEN-1).
const MaxNameLen = 63

// Defaults for settings the target leaves unset.
const (
	DefaultConnectionLimit = 10
	DefaultSCRAMIterations = 1
	DefaultMaxConns        = 16
)

// checkTimeout bounds Check.
const checkTimeout = 5 * time.Second

var _ mayfly.Connector = (*Connector)(nil)

// Connector manages ephemeral roles on one PostgreSQL server.
type Connector struct {
	name       string // target name, for messages
	prefix     string
	pool       *pgxpool.Pool
	poolCfg    *pgxpool.Config
	password   string // admin password, scrubbed from error text
	database   string // the DSN's database
	host       string
	port       int
	limit      int
	iterations int
	key        mark.Key // marks the roles this installation creates

	mu      sync.Mutex
	dbPools map[string]*pgxpool.Pool // grant databases other than the DSN's
}

// New validates the target (kind postgres) and its grants and returns a
// connector. It does not connect; the first call that needs the server
// does. getenv resolves DSNEnv.
func New(t mayfly.Target, getenv func(string) string) (*Connector, error) {
	if t.Kind != mayfly.KindPostgres {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: kind %q is not %q", t.Name, t.Kind, mayfly.KindPostgres)
	}
	if err := rejectUnused(t); err != nil {
		return nil, err
	}
	dsn := t.DSN
	switch {
	case t.DSN != "" && t.DSNEnv != "":
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: set dsn or dsn_env, not both", t.Name)
	case t.DSNEnv != "":
		if getenv != nil {
			dsn = getenv(t.DSNEnv)
		}
		if dsn == "" {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: environment variable %q named by dsn_env is empty", t.Name, t.DSNEnv)
		}
	case dsn == "":
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: dsn or dsn_env is required", t.Name)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parser's message may quote parts of the DSN; keep it out.
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: dsn is not a valid PostgreSQL connection string", t.Name)
	}
	switch {
	case t.ConnectionLimit < 0:
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: connection_limit must not be negative", t.Name)
	case t.SCRAMIterations < 0:
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: scram_iterations must not be negative", t.Name)
	case t.MaxConns < 0:
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: max_conns must not be negative", t.Name)
	case t.PublicPort < 0 || t.PublicPort > 65535:
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: public_port %d is out of range", t.Name, t.PublicPort)
	}
	key, err := mark.FromTarget(t, getenv)
	if err != nil {
		return nil, err
	}
	c := &Connector{
		key:        key,
		name:       t.Name,
		prefix:     t.Prefix,
		poolCfg:    cfg,
		password:   cfg.ConnConfig.Password,
		database:   cfg.ConnConfig.Database,
		host:       t.PublicHost,
		port:       t.PublicPort,
		limit:      t.ConnectionLimit,
		iterations: t.SCRAMIterations,
		dbPools:    map[string]*pgxpool.Pool{},
	}
	if c.prefix == "" {
		c.prefix = mayfly.DefaultPrefix
	}
	if err := acctname.ValidName(c.prefix, MaxNameLen, false); err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: prefix: %s", t.Name, mayfly.ErrorMessage(err))
	}
	if strings.HasPrefix(c.prefix, "pg_") {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: prefix must not start with \"pg_\", which PostgreSQL reserves", t.Name)
	}
	if c.host == "" {
		c.host = cfg.ConnConfig.Host
	}
	if c.port == 0 {
		c.port = int(cfg.ConnConfig.Port)
	}
	if c.limit == 0 {
		c.limit = DefaultConnectionLimit
	}
	if c.iterations == 0 {
		c.iterations = DefaultSCRAMIterations
	}
	for name, g := range t.Grants {
		if err := validGrant(g); err != nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: grant %q: %s", t.Name, name, mayfly.ErrorMessage(err))
		}
	}
	cfg.MaxConns = int32(t.MaxConns)
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MinConns > cfg.MaxConns {
		cfg.MinConns = cfg.MaxConns
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "mayfly"
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	// pgxpool.NewWithConfig does not connect.
	c.pool, err = pgxpool.NewWithConfig(context.Background(), pgpool.Configure(cfg))
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: %s", t.Name, c.scrubText(err.Error()))
	}
	return c, nil
}

// rejectUnused refuses settings that belong to other kinds, so a misplaced
// key is an error rather than silently ignored.
func rejectUnused(t mayfly.Target) error {
	return kindcheck.Target(t, mayfly.KindPostgres, "dsn", "dsn_env", "connection_limit", "scram_iterations", "max_conns", "rotate_every")
}

// validGrant checks that g uses only the fields of this kind, names at least
// one role or statement, and carries nothing that cannot be quoted.
func validGrant(g mayfly.Grant) error {
	if err := kindcheck.Grant(g, mayfly.KindPostgres, "roles", "statements", "database"); err != nil {
		return err
	}
	if len(g.Roles) == 0 && len(g.Statements) == 0 {
		return mayfly.Errorf(mayfly.EINVALID, "roles or statements are required")
	}
	for _, r := range g.Roles {
		switch {
		case r == "":
			return mayfly.Errorf(mayfly.EINVALID, "role name is empty")
		case strings.ContainsRune(r, 0):
			return mayfly.Errorf(mayfly.EINVALID, "role name contains a NUL byte")
		case len(r) > MaxNameLen:
			return mayfly.Errorf(mayfly.EINVALID, "role name is longer than %d bytes", MaxNameLen)
		}
	}
	for i, s := range g.Statements {
		switch {
		case strings.TrimSpace(s) == "":
			return mayfly.Errorf(mayfly.EINVALID, "statement %d is empty", i+1)
		case strings.ContainsRune(s, 0):
			return mayfly.Errorf(mayfly.EINVALID, "statement %d contains a NUL byte", i+1)
		case strings.Contains(strings.ReplaceAll(s, "{{name}}", ""), "{{"):
			return mayfly.Errorf(mayfly.EINVALID, "statement %d uses a placeholder other than {{name}}", i+1)
		case transactionControl[leadingKeyword(s)]:
			// The statements run inside the account's creation, which must
			// stay one transaction: committed only after the lease's intent
			// is recorded, rolled back whole on failure.
			return mayfly.Errorf(mayfly.EINVALID, "statement %d is transaction control (%s); grant statements run inside the account's creation transaction", i+1, leadingKeyword(s))
		}
	}
	if strings.ContainsRune(g.Database, 0) {
		return mayfly.Errorf(mayfly.EINVALID, "database name contains a NUL byte")
	}
	return nil
}

// checkName validates a requested account name: well formed and under the
// target's prefix, so the connector never touches roles it does not manage.
func (c *Connector) checkName(name string) error {
	return acctname.CheckName(name, c.prefix, MaxNameLen)
}

// ident returns name quoted as an SQL identifier.
func ident(name string) string {
	return pgx.Identifier{name}.Sanitize()
}

// quoteLiteral returns s as an SQL string literal that means s whatever
// standard_conforming_strings is set to: quotes are doubled, and a string
// with backslashes becomes an escape string with them doubled. NUL cannot be
// represented and is an error.
func quoteLiteral(s string) (string, error) {
	if strings.ContainsRune(s, 0) {
		return "", mayfly.Errorf(mayfly.EINVALID, "text contains a NUL byte")
	}
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q, nil
}

// expandStatement replaces {{name}} in a grant statement with the quoted
// role name.
func expandStatement(stmt, name string) string {
	return strings.ReplaceAll(stmt, "{{name}}", ident(name))
}

// Check reports whether the server is reachable with the admin credential.
func (c *Connector) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if err := c.pool.Ping(ctx); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "postgres target %q unreachable: %s", c.name, c.scrubText(err.Error()))
	}
	return nil
}

// Close releases the connections.
func (c *Connector) Close() error {
	c.mu.Lock()
	pools := c.dbPools
	c.dbPools = map[string]*pgxpool.Pool{}
	c.mu.Unlock()
	for _, p := range pools {
		p.Close()
	}
	c.pool.Close()
	return nil
}

// poolFor returns a pool connected to database db: the admin pool for the
// DSN's database, otherwise one opened on first use.
func (c *Connector) poolFor(db string) (*pgxpool.Pool, error) {
	if db == "" || db == c.database {
		return c.pool, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.dbPools[db]; ok {
		return p, nil
	}
	cfg := c.poolCfg.Copy()
	cfg.ConnConfig.Database = db
	cfg.MaxConns = min(cfg.MaxConns, 4)
	cfg.MinConns = 0
	p, err := pgxpool.NewWithConfig(context.Background(), pgpool.Configure(cfg))
	if err != nil {
		return nil, fmt.Errorf("pool for database %q: %w", db, err)
	}
	c.dbPools[db] = p
	return p, nil
}

// connectTo opens a short-lived admin connection to database db.
func (c *Connector) connectTo(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg := c.poolCfg.ConnConfig.Copy()
	cfg.Database = db
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database %q: %w", db, err)
	}
	return conn, nil
}

// scrubText removes the admin password from s.
func (c *Connector) scrubText(s string) string {
	if c.password == "" {
		return s
	}
	return strings.ReplaceAll(s, c.password, "xxxxx")
}

// scrub returns err with the admin password removed from its text. Errors
// meant for users (*mayfly.Error) are built by this package and returned
// as they are.
func (c *Connector) scrub(err error) error {
	if err == nil || c.password == "" {
		return err
	}
	var me *mayfly.Error
	if errors.As(err, &me) && me == err {
		return err
	}
	msg := err.Error()
	if !strings.Contains(msg, c.password) {
		return err
	}
	return &scrubbedError{msg: c.scrubText(msg), err: err}
}

// scrubbedError is an error whose text had a secret removed; it still
// unwraps to the original for errors.Is and errors.As.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// SQLSTATE codes the connector branches on.
const (
	sqlDuplicateObject  = "42710" // CREATE ROLE of an existing role
	sqlUndefinedObject  = "42704" // ALTER ROLE of a missing role
	sqlUniqueViolation  = "23505" // concurrent CREATE ROLE of one name
	sqlDependentObjects = "2BP01" // DROP ROLE while it still owns objects
	sqlSerialization    = "40001"
	sqlDeadlock         = "40P01"
	sqlInternalError    = "XX000" // "tuple concurrently updated"
	sqlInvalidCatalogDB = "3D000"
)

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// itoa formats n for SQL text.
func itoa(n int) string { return strconv.Itoa(n) }

// transactionControl holds the leading keywords of statements that begin,
// end or split a transaction, refused in grant statements.
var transactionControl = map[string]bool{
	"BEGIN": true, "START": true, "COMMIT": true, "END": true, "ROLLBACK": true, "ABORT": true,
	"SAVEPOINT": true, "RELEASE": true, "PREPARE": true,
}

// leadingKeyword returns the first word of SQL statement s, upper-cased,
// after white space and comments ("--" to the end of the line, and
// "/* */", which nest in PostgreSQL); "" when s does not start with a
// word.
func leadingKeyword(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\n\r\f\v")
		switch {
		case strings.HasPrefix(s, "--"):
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return ""
			}
			s = s[i+1:]
		case strings.HasPrefix(s, "/*"):
			depth, i := 0, 0
			for i < len(s) {
				switch {
				case strings.HasPrefix(s[i:], "/*"):
					depth++
					i += 2
				case strings.HasPrefix(s[i:], "*/"):
					depth--
					i += 2
				default:
					i++
				}
				if depth == 0 {
					break
				}
			}
			if depth != 0 {
				return ""
			}
			s = s[i:]
		default:
			end := 0
			for end < len(s) && (s[end] >= 'a' && s[end] <= 'z' || s[end] >= 'A' && s[end] <= 'Z' || s[end] == '_') {
				end++
			}
			return strings.ToUpper(s[:end])
		}
	}
}
