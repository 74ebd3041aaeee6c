package sqlite

import (
	"context"
	"database/sql"
	"os"
	"time"
)

// checkpointEvery is how often the background checkpointer copies what
// was committed to the write-ahead log into the database file.
const checkpointEvery = 100 * time.Millisecond

// walLimit is the size, in bytes, past which the background checkpointer
// truncates the log instead of only copying it into the database. A
// passive checkpoint never catches up while commits keep coming, and the
// log starts over from its beginning only when no reader is using it, so
// under a steady load of writers and overlapping readers it would grow
// without end. Truncating holds the writer (wmu) and the reader
// connections once the Views running end (waiting for SQLite's locks
// instead would lose every race to the next batch or View), then copies
// what is left and empties the log, so the log stays within about
// walLimit plus what one checkpointEvery of commits writes. Whenever the
// log starts over by itself, the writer's journal_size_limit trims the
// file to walLimit.
const walLimit = 4 << 20

// truncateWait bounds how long a truncating checkpoint waits for the
// readers of the moment: for the Views running, while commits go on, and
// for readers in other processes, holding commits off (the busy timeout
// of the checkpointer's connection). A reader that stays longer in its
// transaction keeps the log from starting over anyway: after a truncation
// that could not finish, the checkpointer only copies for a while, twice
// as long after each failure in a row (from checkpointEvery up to
// maxTruncateBackoff), so a long reader holds commits off for a small
// share of the time.
const (
	truncateWait       = 250 * time.Millisecond
	maxTruncateBackoff = 5 * time.Second
)

// walBackstop is the size, in pages, at which the writer checkpoints on
// its own; it is reached only when the background checkpointer falls far
// behind.
const walBackstop = 100000

// checkpointLoop runs passive checkpoints on their own connection until
// the database closes, so that a commit never pays for copying the log
// into the database and syncing it. A passive checkpoint waits for no
// reader or writer: commits go on meanwhile.
func (db *DB) checkpointLoop(cdb *sql.DB) {
	defer close(db.ckDone)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	var noTruncateUntil time.Time
	backoff := time.Duration(0)
	for {
		select {
		case <-db.closing:
			return
		case <-t.C:
		}
		if !db.appended.Swap(false) {
			continue // nothing committed since the last pass
		}
		truncate := false
		if fi, err := os.Stat(db.path + "-wal"); err == nil && fi.Size() > walLimit && time.Now().After(noTruncateUntil) {
			truncate = true
		}
		// A failed pass is retried at the next tick; the writer's own
		// checkpoint at walBackstop pages bounds the log meanwhile.
		if !truncate {
			if busy, logged, copied, err := checkpoint(cdb, "PASSIVE"); err != nil || busy != 0 || copied < logged {
				db.appended.Store(true)
			}
			continue
		}
		// Readers of this process are held off the way commits are: left
		// to SQLite's busy handler, the truncation would lose the race for
		// their locks as it would the writer's.
		held, ok := db.holdReaders(truncateWait)
		if ok {
			db.wmu.Lock()
			busy, _, _, err := checkpoint(cdb, "TRUNCATE")
			db.wmu.Unlock()
			db.releaseReaders(held)
			ok = err == nil && busy == 0
		}
		if ok {
			backoff = 0
		} else {
			db.appended.Store(true)
			backoff = min(max(2*backoff, checkpointEvery), maxTruncateBackoff)
			noTruncateUntil = time.Now().Add(backoff)
		}
	}
}

// checkpoint runs PRAGMA wal_checkpoint(mode) on cdb.
func checkpoint(cdb *sql.DB, mode string) (busy, logged, copied int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = cdb.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logged, &copied)
	return busy, logged, copied, err
}

// holdReaders takes every reader connection, waiting at most d for the
// Views running; ok is false, and none is held, when one takes longer or
// the database closes.
func (db *DB) holdReaders(d time.Duration) (held []*conn, ok bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for len(held) < readers {
		select {
		case c := <-db.rslots:
			held = append(held, c)
		case <-timer.C:
			db.releaseReaders(held)
			return nil, false
		case <-db.closing:
			db.releaseReaders(held)
			return nil, false
		}
	}
	return held, true
}

func (db *DB) releaseReaders(held []*conn) {
	for _, c := range held {
		db.rslots <- c
	}
}
