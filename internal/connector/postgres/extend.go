package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Extend moves the role's VALID UNTIL to the lease's new expiry.
func (c *Connector) Extend(ctx context.Context, req mayfly.ExtendRequest) (err error) {
	defer func() { err = c.scrub(err) }()
	if err := c.checkName(req.Username); err != nil {
		return err
	}
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("extend %s: %w", req.Username, err)
	}
	defer conn.Release()
	until, err := quoteLiteral(req.ExpiresAt.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return err
	}
	res, err := pipeline(ctx, conn.Conn().PgConn(), segment{{sql: "ALTER ROLE " + ident(req.Username) + " VALID UNTIL " + until}})
	if err != nil {
		return fmt.Errorf("extend %s: %w", req.Username, err)
	}
	if err := res[0].err; err != nil {
		if pgCode(err) == sqlUndefinedObject {
			return mayfly.Errorf(mayfly.ECONFLICT, "extend %s: the role no longer exists", req.Username)
		}
		return fmt.Errorf("extend %s: %w", req.Username, err)
	}
	return nil
}
