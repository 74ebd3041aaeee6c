package postgres

import (
	"context"
	"fmt"
	"time"
)

// namedLockSpace is the first key of the advisory locks Lock takes.
const namedLockSpace = 0x6d66_6c6b // "mflk"

// unlockTimeout bounds the release of a named lock; a connection that
// cannot release it in time is closed, which releases it.
const unlockTimeout = 5 * time.Second

// Lock takes the advisory lock named name on a connection of its own,
// held until unlock (see mayfly.Locker). Waiting ends with ctx.
func (db *DB) Lock(ctx context.Context, name string) (unlock func(), err error) {
	if db.closed.Load() {
		return nil, errClosed
	}
	c, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, unreachable(ctx, fmt.Errorf("postgres store: lock %s: %w", name, err))
	}
	if _, err := c.Exec(ctx, "SELECT pg_catalog.pg_advisory_lock($1, pg_catalog.hashtext($2))", namedLockSpace, name); err != nil {
		// A wait cut short by ctx may leave the lock granted after all:
		// the connection goes, and the lock with it.
		c.Conn().Close(context.WithoutCancel(ctx))
		c.Release()
		return nil, unreachable(ctx, fmt.Errorf("postgres store: lock %s: %w", name, err))
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		var released bool
		if err := c.QueryRow(uctx, "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))", namedLockSpace, name).Scan(&released); err != nil || !released {
			c.Conn().Close(uctx)
		}
		c.Release()
	}, nil
}
