package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditChannel is the channel on which a transaction that appends audit
// events notifies, when it commits, the sequence number of its newest
// event (NOTIFY mayfly_audit, '<seq>').
const AuditChannel = "mayfly_audit"

// Listen backoff bounds: a lost connection is reopened after minBackoff,
// doubling up to maxBackoff while the database does not answer.
const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 10 * time.Second
)

// ListenAudit listens on AuditChannel on a connection of its own, outside
// the pool, until ctx ends, and calls appended with the sequence number of
// the newest event of each transaction that committed audit events, on any
// replica sharing the database. Each time it (re)connects and listens it
// calls appended(0): notifications sent while it was not listening are
// lost, so the caller looks for what it may have missed. A connection
// that drops is reopened with backoff; errors go to onErr (may be nil).
// It returns when ctx ends; the caller may listen again later.
func (db *DB) ListenAudit(ctx context.Context, appended func(seq int64), onErr func(error)) {
	backoff := listenMinBackoff
	for ctx.Err() == nil {
		listened, err := db.listenOnce(ctx, appended)
		if ctx.Err() != nil {
			return
		}
		if listened {
			backoff = listenMinBackoff
		}
		if onErr != nil && err != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenMaxBackoff)
	}
}

// listenOnce connects, listens and passes notifications on until the
// connection fails or ctx ends; listened reports whether LISTEN succeeded.
func (db *DB) listenOnce(ctx context.Context, appended func(seq int64)) (listened bool, err error) {
	if db.closed.Load() {
		return false, errClosed
	}
	conn, err := pgx.ConnectConfig(ctx, db.pool.Config().ConnConfig)
	if err != nil {
		return false, fmt.Errorf("postgres store: audit listener: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+AuditChannel); err != nil {
		return false, fmt.Errorf("postgres store: audit listener: listen: %w", err)
	}
	appended(0)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, fmt.Errorf("postgres store: audit listener: %w", err)
		}
		seq, err := strconv.ParseInt(n.Payload, 10, 64)
		if err != nil || seq <= 0 {
			continue // not ours
		}
		appended(seq)
	}
}
