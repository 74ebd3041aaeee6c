package postgres

import (
	"errors"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
)

// headStats counts how transactions of a handle chained their audit
// events: in the database as they committed (chained; see chainSQL), or
// to the head they had locked and read earlier (locked: a transaction
// that reads the audit trail after appending to it).
type headStats struct {
	chained, locked atomic.Int64
}

// AuditHeadStats returns how many transactions of db had PostgreSQL chain
// their audit events as they committed, and how many locked and read the
// head of the chain first.
func (db *DB) AuditHeadStats() (chained, locked int64) {
	return db.stats.chained.Load(), db.stats.locked.Load()
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
