package postgres

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// headCache is what a handle knows of the head of the audit chain: the
// last event its own transactions committed, or another replica's commit
// announced on HeadChannel. A transaction that appends
// audit events while no other transaction of the handle is going for the
// head chains them to the cached head without reading it first, and sends
// them, with a compare-and-set of the head, in the round trip of its
// COMMIT (see tx.commitOnHead); when another replica (or another handle)
// moved the head meanwhile, the compare-and-set fails, the transaction
// writes nothing, and Update runs it again the usual way, which locks and
// reads the head. The cache only saves a round trip: the chain's
// integrity rests on the compare-and-set in PostgreSQL, never on it.
type headCache struct {
	mu   sync.Mutex
	ok   bool // seq and hash may be used
	seq  int64
	hash string
	// notified is the newest sequence number the audit listener heard of;
	// down is set while a listener started on this handle is not
	// listening (so appends elsewhere would go unheard).
	notified int64
	down     bool
	// movedAt is when a transaction last found the cached head moved:
	// under a steady load from several replicas the head moves between
	// most commits of one, faster than the listener tells, and each try
	// would cost a round trip for nothing, so the cache rests a while.
	movedAt time.Time
}

// movedRest is how long a handle does not use its cached head after a
// transaction found it moved.
const movedRest = time.Second

// get returns the cached head, if it may be used.
func (c *headCache) get() (seq int64, hash string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq, c.hash, c.ok && !c.down && time.Since(c.movedAt) >= movedRest
}

// committed records that a transaction of this handle committed audit
// events up to seq, the last with hash. It is usable unless a newer event
// was notified meanwhile.
func (c *headCache) committed(seq int64, hash string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq < c.seq {
		return // a later commit of this handle was recorded first
	}
	c.seq, c.hash = seq, hash
	c.ok = c.notified <= seq
}

// heard records a notification of an append up to seq, by any replica;
// seq 0 means the listener (re)connected and may have missed some.
func (c *headCache) heard(seq int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq == 0 || seq > c.seq {
		c.ok = false
	}
	c.notified = max(c.notified, seq)
}

// heardHead records a notification that an append moved the head to seq
// with hash (sent after the one heard tells of it, in the same
// transaction): the head to chain to next, unless a newer append was
// heard of meanwhile.
func (c *headCache) heardHead(seq int64, hash string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq < c.seq || (seq == c.seq && c.ok) {
		return
	}
	c.seq, c.hash = seq, hash
	c.ok = c.notified <= seq
}

// listening records whether the handle's audit listener is listening.
func (c *headCache) listening(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = !on
	if on {
		c.ok = false // what was sent while it was down is unknown
	}
}

// unwatched records that the handle's listener stopped for good: as on a
// handle that never listened, the head its own next commit leaves may be
// used. What it heard is kept.
func (c *headCache) unwatched() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down, c.ok = false, false
}

// invalidate forgets the head (it was moved other than by appending).
func (c *headCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ok = false
}

// moved forgets the head, which a transaction found moved, and what was
// heard of it (a notification may have been forged, or the database
// restored to an earlier state), and rests the cache for movedRest.
func (c *headCache) moved() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ok, c.seq, c.hash, c.notified = false, 0, "", 0
	c.movedAt = time.Now()
}

// headStats counts how transactions of a handle chained their audit
// events: to the cached head (cached; moved when it had moved, a subset),
// or to the head they locked and read (locked).
type headStats struct {
	cached, moved, locked atomic.Int64
}

// AuditHeadStats returns how many transactions of db chained their audit
// events to the head it cached, how many of those found that the head had
// moved (and ran again), and how many locked and read the head.
func (db *DB) AuditHeadStats() (cached, moved, locked int64) {
	return db.stats.cached.Load(), db.stats.moved.Load(), db.stats.locked.Load()
}

// errHeadMoved is the failure of a transaction that chained its audit
// events to a cached head that was no longer the head: it wrote nothing,
// and Update runs it again, locking and reading the head this time.
var errHeadMoved = errors.New("postgres store: the head of the audit chain moved; the transaction is run again")

// headMoved says whether err, the result of the statement that moves the
// head from its cached value (see headCASSQL), says it was not there any
// more: the compare-and-set found no row (its count divides by zero), or
// an event of the same sequence number was committed first.
func headMoved(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "22012" || (pe.Code == "23505" && pe.TableName == "audit_events"))
}

// mustCount turns a counted write (an INSERT or UPDATE of one row, see
// deferredWrite) into a statement that fails, with a division by zero,
// when it writes no row, so that it may travel in the round trip of the
// COMMIT: its failure aborts the transaction instead of being read after
// the COMMIT.
func mustCount(q string) string {
	return "WITH w AS (" + q + " RETURNING 1) SELECT 1 / count(*) FROM w"
}

// noRow says whether err is the failure of a statement from mustCount
// that wrote no row.
func noRow(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "22012"
}
