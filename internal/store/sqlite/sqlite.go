// Package sqlite is the embedded store of Mayfly: requests, leases, the
// audit trail, user statuses and settings in one SQLite file, with no cgo.
//
// The database runs in WAL mode. One writer connection serves Update,
// transactions are serialised in-process and begin with BEGIN IMMEDIATE;
// a small pool of read-only connections serves View, so reads do not wait
// for writes. A background checkpointer on a connection of its own copies
// the log into the database file, so commits never pay for it. The schema
// is created and upgraded by versioned migrations embedded in the binary.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayflyhq/mayfly"
	sqlitedrv "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// readers is the number of read-only connections serving View.
const readers = 4

// maxCachedStmts bounds the prepared statements kept per connection;
// queries beyond it run unprepared.
const maxCachedStmts = 256

var errClosed = errors.New("sqlite: database is closed")

// errNotDurable is the error of an update that recorded an intent and
// committed, but whose commit could not be made durable.
var errNotDurable = errors.New("sqlite: committed, but the log could not be synced to stable storage")

// errRolledBack is the error of an update whose transaction SQLite rolled
// back on its own (after an I/O error, a full disk, an interrupted write):
// it did not commit.
var errRolledBack = errors.New("sqlite: the transaction was rolled back by an error in it; nothing was committed")

// DB is the SQLite store. It implements mayfly.Store.
type DB struct {
	path string

	wdb *sql.DB // one connection, for Update
	rdb *sql.DB // read-only connections, for View

	wmu     sync.Mutex // serialises Update; guards w, wclosed and tail
	w       *conn
	wclosed bool
	// The last audit event committed, so that a transaction appending one
	// need not read it first. Forgotten (not ok) whenever a transaction
	// fails, and by anything that writes audit events otherwise.
	tail auditTail

	// Updates waiting for the writer: whoever holds wmu commits all of
	// them in one transaction (group commit).
	qmu   sync.Mutex
	queue []*pendingUpdate

	rslots  chan *conn // idle reader connections (nil: not opened yet)
	closing chan struct{}
	once    sync.Once

	// Whether a commit that records an intent syncs the log (syncLog),
	// and whether the directory was synced since the log was created.
	noIntentSync bool
	dirSynced    bool
	logSyncs     int // how many times, for tests

	// The background checkpointer (see checkpointLoop): its connection,
	// whether anything was committed since its last pass, and its end.
	cdb      *sql.DB
	appended atomic.Bool
	ckDone   chan struct{}
}

var _ mayfly.Store = (*DB)(nil)

// conn is a connection held by the store for its whole life, with the
// statements prepared on it.
type conn struct {
	c     *sql.Conn
	stmts map[string]*sql.Stmt

	// On the writer, kept by SQLite's commit and rollback hooks: while a
	// transaction of the store is open (open), SQLite may still roll it
	// back on its own, after which every statement would run, and commit,
	// by itself. The hooks note such a rollback (rolledBack) and refuse
	// any commit but the store's own (committing).
	open, committing, rolledBack atomic.Bool
}

// guard installs the commit and rollback hooks described at conn.open.
func (c *conn) guard() error {
	return c.c.Raw(func(dc any) error {
		h, ok := dc.(sqlitedrv.HookRegisterer)
		if !ok {
			return fmt.Errorf("driver connection %T has no commit hooks", dc)
		}
		h.RegisterCommitHook(func() int32 {
			if c.open.Load() && !c.committing.Load() {
				return 1 // turns the commit into a rollback
			}
			return 0
		})
		h.RegisterRollbackHook(func() {
			if c.open.Load() {
				c.rolledBack.Store(true)
			}
		})
		return nil
	})
}

// begin starts a transaction with the statement begin.
func (c *conn) begin(ctx context.Context, begin string) error {
	if _, err := c.execCached(ctx, begin); err != nil {
		return err
	}
	c.rolledBack.Store(false)
	c.open.Store(true)
	return nil
}

// lost reports whether SQLite rolled back the open transaction on its own.
func (c *conn) lost() bool { return c.rolledBack.Load() }

// commit commits the open transaction; it stays open when that fails.
func (c *conn) commit() error {
	if c.lost() {
		return errRolledBack
	}
	c.committing.Store(true)
	_, err := c.execCached(context.Background(), "COMMIT")
	c.committing.Store(false)
	if err == nil {
		c.open.Store(false)
	}
	return err
}

// rollback rolls back the open transaction, if SQLite has not already.
func (c *conn) rollback() {
	c.open.Store(false)
	c.c.ExecContext(context.Background(), "ROLLBACK")
}

// Open opens the database file at path, creating it if needed, and brings
// its schema up to date. It reads no rows beyond the schema version, so it
// is fast whatever the size of the database.
func Open(ctx context.Context, path string) (*DB, error) {
	return openDB(ctx, path, true)
}

// OpenExisting is Open for a caller that must change nothing, such as a
// diagnosis run: it fails with an ENOTFOUND error when there is no file at
// path (Open would create it, owned by the caller), and with an EINVALID
// one when its schema is not this build's, which Open would migrate.
func OpenExisting(ctx context.Context, path string) (*DB, error) {
	if path != "" {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, mayfly.Errorf(mayfly.ENOTFOUND, "no store yet at %s (the server creates it at its first start)", path)
		}
	}
	return openDB(ctx, path, false)
}

func openDB(ctx context.Context, path string, migrate bool) (*DB, error) {
	if path == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "sqlite: path of the database file is required")
	}
	name := "file:" + (&url.URL{Path: path}).EscapedPath()
	wdsn := name + "?_txlock=immediate" +
		"&_pragma=busy_timeout(10000)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)" +
		"&_pragma=wal_autocheckpoint(" + strconv.Itoa(walBackstop) + ")" +
		"&_pragma=journal_size_limit(" + strconv.Itoa(walLimit) + ")" +
		"&_pragma=cache_size(-32768)" +
		"&_pragma=foreign_keys(1)" +
		"&_pragma=temp_store(MEMORY)"
	rdsn := name + "?_pragma=busy_timeout(10000)" +
		"&_pragma=foreign_keys(1)" +
		"&_pragma=temp_store(MEMORY)" +
		"&_pragma=query_only(1)"

	if err := createOwnerOnly(path); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db := &DB{path: path, rslots: make(chan *conn, readers), closing: make(chan struct{})}
	var err error
	if db.wdb, err = sql.Open("sqlite", wdsn); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.wdb.SetMaxOpenConns(1)
	db.wdb.SetMaxIdleConns(1)
	db.wdb.SetConnMaxLifetime(0)
	db.wdb.SetConnMaxIdleTime(0)
	c, err := db.wdb.Conn(ctx)
	if err != nil {
		db.wdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.w = &conn{c: c, stmts: map[string]*sql.Stmt{}}
	if err := db.w.guard(); err != nil {
		c.Close()
		db.wdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	check := db.migrate
	if !migrate {
		check = db.checkVersion
	}
	if err := check(ctx); err != nil {
		c.Close()
		db.wdb.Close()
		if !migrate {
			return nil, err // names the file
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}

	if db.rdb, err = sql.Open("sqlite", rdsn); err != nil {
		c.Close()
		db.wdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.rdb.SetMaxOpenConns(readers)
	db.rdb.SetMaxIdleConns(readers)
	db.rdb.SetConnMaxLifetime(0)
	db.rdb.SetConnMaxIdleTime(0)
	for range readers {
		db.rslots <- nil
	}
	if db.cdb, err = sql.Open("sqlite", name+"?_pragma=busy_timeout("+strconv.Itoa(int(truncateWait.Milliseconds()))+")"); err != nil {
		db.rdb.Close()
		c.Close()
		db.wdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.cdb.SetMaxOpenConns(1)
	db.ckDone = make(chan struct{})
	go db.checkpointLoop(db.cdb)
	return db, nil
}

// createOwnerOnly creates the database file, when it does not exist yet,
// readable and writable by its owner only, whatever the umask and the
// directory. SQLite gives the -wal and -shm files it creates the mode of
// the database file.
func createOwnerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Chmod(0o600) // the umask may have taken the owner's bits too
	return errors.Join(err, f.Close())
}

type migration struct {
	version int
	name    string
}

// migrations returns the embedded migrations in version order. A file is
// named NNNN_description.sql, NNNN being its version.
func migrations() ([]migration, error) {
	ents, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version number", e.Name())
		}
		ms = append(ms, migration{version: v, name: path.Join("migrations", e.Name())})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migration %s: duplicate version %d", ms[i].name, ms[i].version)
		}
	}
	return ms, nil
}

// schemaVersion is the version of the newest embedded migration.
func schemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrate applies the migrations newer than the database's schema version,
// each in its own transaction.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	c := db.w.c
	if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER NOT NULL PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	for _, m := range ms {
		if err := db.applyMigration(ctx, m, ms[len(ms)-1].version); err != nil {
			return err
		}
	}
	return nil
}

// checkVersion fails unless the database's schema is this build's.
func (db *DB) checkVersion(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	latest := ms[len(ms)-1].version
	var have int
	if err := db.w.c.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_version").Scan(&have); err != nil {
		return mayfly.Errorf(mayfly.EINVALID, "sqlite: %s holds no Mayfly schema (%v)", db.path, err)
	}
	switch {
	case have > latest:
		return mayfly.Errorf(mayfly.EINVALID, "sqlite: %s has schema version %d, newer than this build's %d: run a newer mayfly", db.path, have, latest)
	case have < latest:
		return olderSchema{mayfly.Errorf(mayfly.EINVALID, "sqlite: %s has schema version %d, older than this build's %d (the server of this build migrates it at its start)", db.path, have, latest)}
	}
	return nil
}

// ErrOlderSchema is what OpenExisting's error wraps when the file's schema
// is older than this build's, which a server would migrate.
var ErrOlderSchema = errors.New("sqlite: older schema")

type olderSchema struct{ e *mayfly.Error }

func (e olderSchema) Error() string   { return e.e.Message }
func (e olderSchema) Unwrap() []error { return []error{e.e, ErrOlderSchema} }

func (db *DB) applyMigration(ctx context.Context, m migration, latest int) (err error) {
	c := db.w.c
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("migration %d: %w", m.version, err)
	}
	defer func() {
		if err != nil {
			c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	var cur int
	if err := c.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_version").Scan(&cur); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if cur > latest {
		return fmt.Errorf("database schema version %d is newer than this program supports (%d)", cur, latest)
	}
	if cur >= m.version {
		_, err := c.ExecContext(ctx, "ROLLBACK")
		return err
	}
	body, err := migrationFS.ReadFile(m.name)
	if err != nil {
		return err
	}
	if _, err := c.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("migration %d: %w", m.version, err)
	}
	if _, err := c.ExecContext(ctx, "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
		m.version, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("migration %d: %w", m.version, err)
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("migration %d: commit: %w", m.version, err)
	}
	return nil
}

// pendingUpdate is an Update waiting for the writer.
type pendingUpdate struct {
	ctx   context.Context
	fn    func(tx mayfly.Tx) error
	err   error
	panic any
	done  bool
	tail  auditTail // the audit tail after fn, while the batch runs
	// intent: fn created a provisioning lease (see tx.intent).
	intent bool
}

// Update runs fn in a read-write transaction, committed when fn returns nil
// and rolled back otherwise. Updates are serialised; concurrent ones are
// committed together (group commit), each in its own savepoint so that one
// failing rolls back only its own changes.
func (db *DB) Update(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	p := &pendingUpdate{ctx: ctx, fn: fn}
	db.qmu.Lock()
	db.queue = append(db.queue, p)
	db.qmu.Unlock()
	db.wmu.Lock()
	if !p.done {
		// This caller leads: commit everything queued so far.
		db.qmu.Lock()
		batch := db.queue
		db.queue = nil
		db.qmu.Unlock()
		db.runBatch(batch)
	}
	db.wmu.Unlock()
	if p.panic != nil {
		panic(p.panic)
	}
	return p.err
}

// runBatch commits a batch of updates; it runs with wmu held.
func (db *DB) runBatch(batch []*pendingUpdate) {
	defer func() {
		for _, p := range batch {
			p.done = true
		}
	}()
	if db.wclosed {
		for _, p := range batch {
			p.err = errClosed
		}
		return
	}
	if len(batch) == 1 {
		p := batch[0]
		func() {
			defer func() {
				if r := recover(); r != nil {
					p.panic = r
				}
			}()
			t := &tx{ctx: p.ctx, c: db.w, write: true, last: db.tail}
			db.tail = auditTail{}
			if p.err = db.w.run(p.ctx, "BEGIN IMMEDIATE", t, p.fn); p.err == nil {
				db.tail = t.last
				p.intent = t.intent
			}
		}()
		if p.err == nil && p.panic == nil {
			db.appended.Store(true)
			db.syncIntents(batch)
		}
		return
	}
	c := db.w
	bg := context.Background()
	running := db.tail
	db.tail = auditTail{}
	begun := false
	var beginErr error
	var ok []*pendingUpdate
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.err = err
			continue
		}
		if beginErr != nil {
			p.err = beginErr
			continue
		}
		if !begun {
			if err := c.begin(bg, "BEGIN IMMEDIATE"); err != nil {
				beginErr = fmt.Errorf("begin: %w", err)
				p.err = beginErr
				continue
			}
			begun = true
		}
		if _, err := c.execCached(bg, "SAVEPOINT mayfly_update"); err != nil {
			p.err = fmt.Errorf("savepoint: %w", err)
			continue
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					p.panic = r
				}
			}()
			t := &tx{ctx: p.ctx, c: c, write: true, last: running}
			p.err = p.fn(t)
			if p.err == nil {
				// Kept only if this update is, below.
				p.tail, p.intent = t.last, t.intent
			}
		}()
		if p.err == nil && p.panic == nil {
			p.err = p.ctx.Err()
		}
		failed := p.err != nil || p.panic != nil
		if failed && !c.lost() {
			c.c.ExecContext(bg, "ROLLBACK TO mayfly_update")
		}
		if !c.lost() {
			c.execCached(bg, "RELEASE mayfly_update")
		}
		if c.lost() {
			// SQLite rolled back the whole transaction: nothing in it so
			// far committed. The rest of the batch goes on in a new one,
			// chained to what is really stored.
			if !failed {
				p.err = errRolledBack
			}
			for _, q := range ok {
				q.err = fmt.Errorf("%w (with another update committed in the same transaction)", errRolledBack)
			}
			ok, running, begun = nil, auditTail{}, false
			c.rollback()
			continue
		}
		if !failed {
			ok = append(ok, p)
			running = p.tail
		}
	}
	if !begun {
		return
	}
	if err := c.commit(); err != nil {
		c.rollback()
		for _, p := range ok {
			p.err = fmt.Errorf("commit: %w", err)
		}
		return
	}
	db.tail = running
	db.appended.Store(true)
	db.syncIntents(ok)
}

// syncIntents makes the committed updates of ps durable when one of them
// records an intent, and fails those when it cannot. It runs with wmu held.
func (db *DB) syncIntents(ps []*pendingUpdate) {
	if db.noIntentSync || !slices.ContainsFunc(ps, func(p *pendingUpdate) bool { return p.intent }) {
		return
	}
	if err := db.syncLog(); err != nil {
		for _, p := range ps {
			if p.intent {
				p.err = fmt.Errorf("%w: %w", errNotDurable, err)
			}
		}
	}
}

// syncLog makes every commit so far survive an OS crash or a power loss,
// not only a crash of the process. With synchronous=NORMAL, SQLite writes
// a commit to the log without syncing it and syncs the log only before a
// checkpoint; the store syncs it here for the commits that need it, so
// the others do not pay for it. It runs with wmu held, so no checkpoint
// truncates the log meanwhile.
func (db *DB) syncLog() error {
	db.logSyncs++
	f, err := os.Open(db.path + "-wal")
	if err != nil {
		return err
	}
	err = syncData(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || db.dirSynced {
		return err
	}
	// The log's entry in its directory, once.
	d, err := os.Open(filepath.Dir(db.path))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	db.dirSynced = err == nil
	return err
}

// SetIntentSync sets whether a commit that records an intent (creates a
// lease in state provisioning) is made durable before Update returns; it
// is on unless turned off. Off, an OS crash or power loss may lose an
// intent whose account was created on its target. It exists to measure
// that cost (docs/benchmarks.md, Durability).
func (db *DB) SetIntentSync(on bool) {
	db.wmu.Lock()
	db.noIntentSync = !on
	db.wmu.Unlock()
}

// View runs fn in a read-only transaction that sees one consistent snapshot.
func (db *DB) View(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer func() { db.rslots <- c }()
	return c.run(ctx, "BEGIN", &tx{ctx: ctx, c: c}, fn)
}

// acquire takes an idle reader connection, opening it on first use.
func (db *DB) acquire(ctx context.Context) (*conn, error) {
	select {
	case <-db.closing:
		return nil, errClosed
	default:
	}
	var c *conn
	select {
	case c = <-db.rslots:
	case <-db.closing:
		return nil, errClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-db.closing:
		db.rslots <- c
		return nil, errClosed
	default:
	}
	if c == nil {
		sc, err := db.rdb.Conn(ctx)
		if err != nil {
			db.rslots <- nil
			return nil, fmt.Errorf("open reader: %w", err)
		}
		c = &conn{c: sc, stmts: map[string]*sql.Stmt{}}
	}
	return c, nil
}

// run runs fn between begin and COMMIT, rolling back when fn fails or
// panics or ctx ends first.
func (c *conn) run(ctx context.Context, begin string, t *tx, fn func(tx mayfly.Tx) error) (err error) {
	if err := c.begin(ctx, begin); err != nil {
		// When ctx ended while BEGIN ran, BEGIN may have run all the
		// same: the connection must not go back to its pool inside a
		// transaction (the next one to begin on it would be refused).
		c.rollback()
		return fmt.Errorf("begin: %w", err)
	}
	done := false
	defer func() {
		if !done {
			c.rollback()
		}
	}()
	if err := fn(t); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	done = true
	return nil
}

// Ping checks that the database answers a query.
func (db *DB) Ping(ctx context.Context) error {
	return db.View(ctx, func(mayfly.Tx) error { return nil })
}

// ExecForTest runs one raw SQL statement outside the store's API. It exists
// for tests that simulate tampering with the database (altering or deleting
// audit events); the broker never calls it.
func (db *DB) ExecForTest(ctx context.Context, query string, args ...any) error {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if db.wclosed {
		return errClosed
	}
	db.tail = auditTail{}
	_, err := db.w.c.ExecContext(ctx, query, args...)
	return err
}

// Close waits for running transactions and closes the database.
func (db *DB) Close() error {
	var errs []error
	db.once.Do(func() {
		close(db.closing)
		<-db.ckDone
		errs = append(errs, db.cdb.Close())
		for range readers {
			if c := <-db.rslots; c != nil {
				errs = append(errs, c.close())
			}
		}
		errs = append(errs, db.rdb.Close())
		db.wmu.Lock()
		db.wclosed = true
		errs = append(errs, db.w.close())
		errs = append(errs, db.wdb.Close())
		db.wmu.Unlock()
	})
	return errors.Join(errs...)
}

func (c *conn) close() error {
	for _, s := range c.stmts {
		s.Close()
	}
	c.stmts = nil
	return c.c.Close()
}

// execCached runs q, a statement without arguments the store runs again
// and again (BEGIN, COMMIT, a savepoint), as a statement prepared once
// rather than parsed anew at every transaction (where the session log's
// writer showed it in the gateway's profile).
func (c *conn) execCached(ctx context.Context, q string) (sql.Result, error) {
	s, err := c.stmt(ctx, q)
	if err != nil || s == nil {
		return c.c.ExecContext(ctx, q)
	}
	return s.ExecContext(ctx)
}

// stmt returns q prepared on c, or nil when the cache is full or c is
// closed.
func (c *conn) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if s, ok := c.stmts[q]; ok {
		return s, nil
	}
	if c.stmts == nil || len(c.stmts) >= maxCachedStmts {
		return nil, nil
	}
	s, err := c.c.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	c.stmts[q] = s
	return s, nil
}
