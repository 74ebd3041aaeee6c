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
// without end. Truncating holds the writer (wmu: waiting for SQLite's own
// lock would lose every race to the next batch), waits for the readers of
// the moment and copies what is left, so the log stays within about
// walLimit plus what one checkpointEvery of commits writes. Whenever the
// log starts over by itself, the writer's journal_size_limit trims the
// file to walLimit.
const walLimit = 4 << 20

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
	for {
		select {
		case <-db.closing:
			return
		case <-t.C:
		}
		if !db.appended.Swap(false) {
			continue // nothing committed since the last pass
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		mode := "PASSIVE"
		if fi, err := os.Stat(db.path + "-wal"); err == nil && fi.Size() > walLimit {
			mode = "TRUNCATE"
		}
		var busy, logged, copied int
		if mode == "TRUNCATE" {
			db.wmu.Lock()
		}
		// A failed pass is retried at the next tick; the writer's own
		// checkpoint at walBackstop pages bounds the log meanwhile.
		if err := cdb.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logged, &copied); err != nil || busy != 0 || copied < logged {
			db.appended.Store(true)
		}
		if mode == "TRUNCATE" {
			db.wmu.Unlock()
		}
		cancel()
	}
}
