// Package pgpool holds what Mayfly's pools of PostgreSQL connections
// share: how a pooled connection is checked before it is used again.
//
// pgxpool's own check pings a connection that sat idle for a second or
// more: one more round trip before the first statement of nearly every
// call a person makes (their calls are seconds apart), and the slowest
// kind, since both ends have gone idle; and a connection reused within the
// second goes unchecked, so the first statement after a restart of the
// server (or a pg_terminate_backend) fails on it. ShouldPing looks at the
// connection's socket instead, without blocking and without a byte sent:
// an idle connection has nothing to read, so a socket that holds data (the
// FATAL a server sends before it closes the connection) or the end of the
// stream is pinged, and the ping's failure makes the pool drop it and take
// another; a quiet socket is used at once. The MySQL and Redis drivers
// check their idle connections the same way.
package pgpool

import (
	"context"
	"crypto/tls"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Configure makes cfg's pool check its connections with ShouldPing.
func Configure(cfg *pgxpool.Config) *pgxpool.Config {
	cfg.ShouldPing = ShouldPing
	return cfg
}

// ShouldPing reports whether a connection taken from the pool must be
// pinged before use (pgxpool.Config.ShouldPing): when its socket is not
// quiet, or cannot be looked at (then, as pgxpool does by default, when it
// was idle a second or more).
func ShouldPing(ctx context.Context, p pgxpool.ShouldPingParams) bool {
	pg := p.Conn.PgConn()
	// After a write that blocked, pgconn reads the socket in the
	// background, and that read may still be waiting, for whatever the
	// server sends next, while the connection sits in the pool. SyncConn
	// has pgconn end it (with a ping, only then) and take in what it
	// buffered, so the socket is looked at with no read in between.
	if err := pg.SyncConn(ctx); err != nil {
		return true
	}
	q, ok := quiet(pg.Conn())
	if !ok {
		return p.IdleDuration > idleBeforePing
	}
	return !q
}

// idleBeforePing is pgxpool's own threshold, kept where a socket cannot be
// looked at.
const idleBeforePing = time.Second

// quiet reports whether c has nothing to read and is not closed by the
// other end; ok is false when that cannot be told (a connection without a
// socket, or a system without the peek).
func quiet(c net.Conn) (q, ok bool) {
	if tc, isTLS := c.(*tls.Conn); isTLS {
		// Any record the server sent while the connection was idle (an
		// alert, its FATAL) shows as bytes on the socket beneath.
		c = tc.NetConn()
	}
	sc, isSys := c.(syscall.Conn)
	if !isSys {
		return false, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	return peekQuiet(rc)
}
