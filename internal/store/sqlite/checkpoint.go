package sqlite

import (
	"context"
	"database/sql"
	"time"
)

// checkpointEvery is how often the background checkpointer copies what
// was committed to the write-ahead log into the database file.
const checkpointEvery = 100 * time.Millisecond

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
		var busy, logged, copied int
		// A failed pass is retried at the next tick; the writer's own
		// checkpoint at walBackstop pages bounds the log meanwhile.
		if err := cdb.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logged, &copied); err != nil || copied < logged {
			db.appended.Store(true)
		}
		cancel()
	}
}
