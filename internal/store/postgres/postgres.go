// Package postgres is a mayfly.Store on PostgreSQL, for several replicas
// of the broker sharing one store. It passes the same conformance suite
// (internal/store/storetest) as the embedded SQLite store.
//
// Every Update is one transaction at READ COMMITTED; a View reads one
// snapshot. Where the SQLite store relies on its single writer, this one
// takes row locks: a write transaction locks the rows it reads by key, and
// its audit events are chained by PostgreSQL as it commits, to the one-row
// audit_head table, which the same statement locks (see chainSQL), so the
// appends of every replica chain to the true previous event, in one total
// order. A transaction begins in the round trip of its first statement
// and its audit events share the commit's; a View's COMMIT is sent after
// its caller has what it read. A transaction that fails on a
// serialization failure or a deadlock is run again, a bounded number of
// times.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/pgpool"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLock is the key of the advisory lock held while migrations are
// applied, so replicas starting at once apply each migration once.
const migrationLock = 0x6d617966_6c790001 // "mayfly" + 1

// ApplicationName is the application_name of the store's connections
// when the DSN gives none.
const ApplicationName = "mayfly-store"

// DefaultMaxConns is the size of the connection pool when Open is given 0.
const DefaultMaxConns = 10

// retries is how many times Update runs a transaction that failed on a
// serialization failure or a deadlock before it returns the error.
const retries = 5

// DB is a PostgreSQL store.
type DB struct {
	pool   *pgxpool.Pool
	closed atomic.Bool
	stats  headStats
	// ready is set once the schema is in place: new connections are
	// warmed from then on (keepWarm).
	ready atomic.Bool
}

var (
	_ mayfly.Store  = (*DB)(nil)
	_ mayfly.Locker = (*DB)(nil)
)

// Open connects to the database dsn names (a postgres:// URL or a
// key=value connection string) with a pool of at most maxConns
// connections (DefaultMaxConns when 0) and applies the migrations it
// lacks. Replicas may open the same database at once.
func Open(ctx context.Context, dsn string, maxConns int) (*DB, error) {
	return openDB(ctx, dsn, maxConns, true)
}

// OpenExisting is Open for a caller that must change nothing, such as a
// diagnosis run: it applies no migration, and fails with an ENOTFOUND
// error when the database has no schema yet, an EINVALID one when the
// schema is not this build's (older: the next server to start migrates
// it; newer: a newer build migrated it).
func OpenExisting(ctx context.Context, dsn string, maxConns int) (*DB, error) {
	return openDB(ctx, dsn, maxConns, false)
}

func openDB(ctx context.Context, dsn string, maxConns int, migrate bool) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx quotes the connection string in some errors: keep a password
		// out of them.
		return nil, mayfly.Errorf(mayfly.EINVALID, "postgres store: invalid connection string (%s)", scrubDSN(err.Error(), dsn))
	}
	if maxConns < 0 {
		return nil, mayfly.Errorf(mayfly.EINVALID, "postgres store: max_conns %d is negative", maxConns)
	}
	if maxConns == 0 {
		maxConns = DefaultMaxConns
	}
	cfg.MaxConns = int32(maxConns)
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		// What pg_stat_activity and the server's log show of the store's
		// connections, unless the DSN names one.
		cfg.ConnConfig.RuntimeParams["application_name"] = ApplicationName
	}
	db := &DB{}
	if migrate { // a server's store, not a diagnosis run's
		keepWarm(cfg, &db.ready)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pgpool.Configure(cfg))
	if err != nil {
		return nil, fmt.Errorf("postgres store: %s", scrubDSN(err.Error(), dsn))
	}
	db.pool = pool
	check := db.migrate
	if !migrate {
		check = db.checkVersion
	}
	if err := check(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if migrate {
		db.ready.Store(true)
		// The connections made while the schema was being checked.
		for _, c := range pool.AcquireAllIdle(ctx) {
			warmConn(ctx, c.Conn())
			c.Release()
		}
	}
	return db, nil
}

// Connections of the pool (see keepWarm).
const (
	// minConns stay open however idle the broker is, so that a person's
	// call after a quiet hour does not wait for a connection to be made
	// (about 15 ms with TLS) and warmed (see warmSQL).
	minConns = 2
)

// The lifetime of a connection of the pool: replaced after connLifetime
// and up to connJitter more, spread so that a replica's connections, and
// replicas started together, are not replaced at once; the pool looks for
// idle connections past their lifetime every connCheck and replaces them
// in the background (a call that takes one first pays for its
// replacement). Variables for tests.
var (
	connLifetime = time.Hour
	connJitter   = 10 * time.Minute
	connCheck    = 10 * time.Second
)

// warmSQL is what a new connection runs before it serves a call: the
// first use of PL/pgSQL in a server process (the triggers of leases) loads
// it, about 4 ms, and the first statement on each table reads its
// catalog entries and its indexes', about 5 ms more; a store transaction
// on a connection made cold took 13 ms, 7 ms on one warmed so. One round
// trip; it reads nothing.
const warmSQL = "DO $$ BEGIN END $$; " +
	"SELECT 1 FROM requests, leases, audit_events, audit_head, users, lease_counts, settings, leaders WHERE false"

// keepWarm makes the pool keep minConns connections (and one idle) open,
// made in the background, with their hourly replacement spread (see
// connLifetime), and warm each new connection once ready says the schema
// is in place.
func keepWarm(cfg *pgxpool.Config, ready *atomic.Bool) {
	cfg.MinConns = min(cfg.MaxConns, minConns)
	cfg.MinIdleConns = min(cfg.MaxConns, 1)
	cfg.MaxConnLifetime, cfg.MaxConnLifetimeJitter = connLifetime, connJitter
	cfg.HealthCheckPeriod = connCheck
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if ready.Load() {
			warmConn(ctx, c)
		}
		return nil
	}
}

// warmConn runs warmSQL on c. Its failure costs nothing but the warmth.
func warmConn(ctx context.Context, c *pgx.Conn) {
	c.Exec(ctx, warmSQL, pgx.QueryExecModeSimpleProtocol)
}

// SchemaRights says who the role dsn logs in as is, where the store's
// tables go (the first schema of its search_path), and whether it may
// create them there, which the first server on an empty database needs
// (PostgreSQL 15 no longer lets every role create in schema public).
func SchemaRights(ctx context.Context, dsn string) (role, schema string, mayCreate bool, err error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", "", false, unreachable(ctx, fmt.Errorf("postgres store: %s", scrubDSN(err.Error(), dsn)))
	}
	defer c.Close(context.WithoutCancel(ctx))
	var sch *string
	err = c.QueryRow(ctx, "SELECT current_user, current_schema(), COALESCE(has_schema_privilege(current_schema(), 'CREATE'), false)").Scan(&role, &sch, &mayCreate)
	if err != nil {
		return "", "", false, fmt.Errorf("postgres store: %w", err)
	}
	if sch != nil {
		schema = *sch
	}
	return role, schema, mayCreate, nil
}

// checkVersion fails unless the database's schema is this build's.
func (db *DB) checkVersion(ctx context.Context) error {
	var have int
	err := db.pool.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&have)
	var pe *pgconn.PgError
	switch latest := SchemaVersion(); {
	case errors.As(err, &pe) && pe.Code == "42P01": // undefined_table
		return mayfly.Errorf(mayfly.ENOTFOUND, "postgres store: the database has no Mayfly schema yet (the server creates it at its first start)")
	case err != nil:
		return unreachable(ctx, fmt.Errorf("postgres store: read schema_migrations: %w", err))
	case have > latest:
		return mayfly.Errorf(mayfly.EINVALID, "postgres store: the database has schema version %d, newer than this build's %d: run a newer mayfly", have, latest)
	case have < latest:
		return olderSchema{mayfly.Errorf(mayfly.EINVALID, "postgres store: the database has schema version %d, older than this build's %d (the next server of this build to start migrates it)", have, latest)}
	}
	return nil
}

// ErrOlderSchema is what OpenExisting's error wraps when the database's
// schema is older than this build's, which a server would migrate.
var ErrOlderSchema = errors.New("postgres store: older schema")

type olderSchema struct{ e *mayfly.Error }

func (e olderSchema) Error() string   { return e.e.Message }
func (e olderSchema) Unwrap() []error { return []error{e.e, ErrOlderSchema} }

func scrubDSN(msg, dsn string) string {
	if dsn != "" {
		msg = strings.ReplaceAll(msg, dsn, "<dsn>")
	}
	return msg
}

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	ents, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range ents {
		n, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(n)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number and '_'", e.Name())
		}
		b, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// SchemaVersion is the version of the newest migration this build knows.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrate applies the migrations the database lacks, in one transaction
// holding an advisory lock, so that of replicas starting at once one
// applies them and the others find them applied. It refuses a database
// migrated by a newer build.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("postgres store: %w", err)
	}
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres store: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrationLock)); err != nil {
		return fmt.Errorf("postgres store: lock for migrations: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER NOT NULL PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("postgres store: create schema_migrations: %w", err)
	}
	rows, err := tx.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fmt.Errorf("postgres store: read schema_migrations: %w", err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("postgres store: read schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	latest := SchemaVersion()
	for _, v := range have {
		if int(v) > latest {
			return mayfly.Errorf(mayfly.EINVALID, "postgres store: the database has schema version %d, newer than this build's %d: run a newer mayfly", v, latest)
		}
		applied[int(v)] = true
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("postgres store: migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return fmt.Errorf("postgres store: record migration %s: %w", m.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres store: commit migrations: %w", err)
	}
	return nil
}

var errClosed = errors.New("postgres store: closed")

// CommitsDurably reports that each commit of Update waits for the flush of
// the server's log, unless mayfly.SkipIntentSync says otherwise (see
// mayfly.DurableCommitter).
func (db *DB) CommitsDurably() bool { return true }

// Update runs fn in a read-write transaction and commits it when fn
// returns nil. A transaction that fails on a serialization failure or a
// deadlock runs again (fn included), up to a few times. Commits are
// durable when Update returns; under a context from mayfly.SkipIntentSync
// the commit does not wait for the log's flush (synchronous_commit off
// for that transaction).
func (db *DB) Update(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	var err error
	for attempt := 0; ; attempt++ {
		err = db.run(ctx, true, fn)
		if attempt+1 >= retries || !retryable(err) || ctx.Err() != nil {
			return err
		}
		// Let the transaction that won go on before trying again.
		time.Sleep(time.Duration(attempt+1) * time.Millisecond)
	}
}

// View runs fn in a read-only transaction.
func (db *DB) View(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	return db.run(ctx, false, fn)
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// Transactions begin by hand on a pooled connection, so that the commit
// can be sent in one round trip with the audit events it carries (see
// tx.commit). Writes run at READ COMMITTED with row locks; a View reads
// one snapshot (REPEATABLE READ), as on SQLite.
const (
	beginWrite = "BEGIN ISOLATION LEVEL READ COMMITTED"
	beginRead  = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
)

// run runs fn in a transaction.
func (db *DB) run(ctx context.Context, write bool, fn func(tx mayfly.Tx) error) (err error) {
	defer func() { err = unreachable(ctx, textRefused(err)) }()
	if db.closed.Load() {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := db.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres store: %w", err)
	}
	begin := []string{beginRead}
	if write {
		begin = []string{beginWrite}
		if mayfly.IntentSyncSkipped(ctx) {
			// Durable against a crash of the broker, not of the database
			// server's machine: what mayfly.SkipIntentSync asks for. The
			// commit returns without waiting for the log's flush.
			begin = append(begin, "SET LOCAL synchronous_commit = off")
		}
	}
	// The transaction begins with its first statement, in its round trip.
	t := &tx{ctx: ctx, q: c, write: write, begin: begin, db: db}
	done, handedOff := false, false
	defer func() {
		if handedOff {
			return // endRead releases it
		}
		if !done && t.begun {
			// Rolled back even when ctx ended, or fn panicked. A
			// connection that cannot roll back is closed, not reused.
			if _, err := c.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
				c.Conn().Close(context.WithoutCancel(ctx))
			}
		}
		c.Release()
	}()
	if err := fn(t); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !write && t.begun {
		// What a read-only transaction read stands whatever its COMMIT
		// answers: the caller goes on at once and the COMMIT is sent
		// after, so a read costs one round trip, not two.
		handedOff = true
		go endRead(ctx, c)
		return nil
	}
	if err := t.commit(); err != nil {
		return err
	}
	done = true
	return nil
}

// endReadTimeout bounds the COMMIT of a read-only transaction, sent after
// its caller went on (see run).
const endReadTimeout = 30 * time.Second

// endRead ends the read-only transaction open on c and gives c back to
// the pool; a connection that cannot end it is closed, not reused.
func endRead(ctx context.Context, c *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endReadTimeout)
	defer cancel()
	if _, err := c.Exec(ctx, "COMMIT"); err != nil {
		c.Conn().Close(ctx)
	}
	c.Release()
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if db.closed.Load() {
		return errClosed
	}
	return unreachable(ctx, db.pool.Ping(ctx))
}

// errUnreachable is what callers see of a store that cannot be reached:
// 503 through the API, exit code 5 on the command line.
var errUnreachable = mayfly.Errorf(mayfly.EUNAVAILABLE, "store unavailable: the PostgreSQL store cannot be reached (connection refused or lost); try again when it is back")

// unreachable returns err as an unavailable error when it says the
// database could not be reached or dropped the connection (refused,
// reset, closed, shutting down), so a store outage is not answered as an
// internal error. The driver's text stays in the chain for the log; the
// message users see names neither host nor credentials.
func unreachable(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	var me *mayfly.Error
	if errors.As(err, &me) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08: connection exception; 57P01-57P03: the server is
		// shutting down or not yet accepting connections.
		if !strings.HasPrefix(pe.Code, "08") && pe.Code != "57P01" && pe.Code != "57P02" && pe.Code != "57P03" {
			return err
		}
	} else {
		var ce *pgconn.ConnectError
		var ne net.Error
		if !errors.As(err, &ce) && !errors.As(err, &ne) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
			!errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.ECONNREFUSED) &&
			!errors.Is(err, syscall.EPIPE) && !pgconn.SafeToRetry(err) && !strings.Contains(err.Error(), "conn closed") {
			return err
		}
	}
	return fmt.Errorf("%w: %w", errUnreachable, err)
}

// textRefused returns err as an invalid-input error when PostgreSQL
// refused text for holding a NUL byte or bytes that are not UTF-8
// (SQLSTATE 22021, 22P05), which its text columns and parameters cannot
// carry: the caller sent text no store should keep, and is told so, not
// answered with an internal error.
func textRefused(err error) error {
	var pe *pgconn.PgError
	if err == nil || !errors.As(err, &pe) || pe.Code != "22021" && pe.Code != "22P05" {
		return err
	}
	return fmt.Errorf("%w: %w", errBadText, err)
}

var errBadText = mayfly.Errorf(mayfly.EINVALID, "text holds a NUL byte or bytes that are not UTF-8, which the PostgreSQL store cannot take")

// Close closes the pool; later calls fail.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return nil
	}
	db.pool.Close()
	return nil
}
