package credential

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/mayflyhq/mayfly"
)

// Conn is the connector of a target whose admin credential can change
// while the broker runs: it passes every call to the connector built with
// the credential in force, and closes a replaced one once the calls that
// were using it have returned. FullConn adds the optional connector
// interfaces, for kinds whose connectors implement them.
type Conn struct {
	cur atomic.Pointer[box]
}

type box struct {
	c      mayfly.Connector
	mu     sync.RWMutex // held for reading by every call in flight
	closed bool
}

var (
	_ mayfly.Connector           = (*Conn)(nil)
	_ mayfly.Diagnoser           = (*Conn)(nil)
	_ mayfly.PreparedProvisioner = FullConn{}
	_ mayfly.BatchRevoker        = FullConn{}
	_ mayfly.Extender            = FullConn{}
)

// FullConn is a Conn for a kind whose connectors stage creations, revoke
// in batches and extend target-side expiries (PostgreSQL). Each falls
// back to what the broker does without it when the connector in force
// lacks it (a target still waiting for its credential).
type FullConn struct{ *Conn }

// set puts c in force and returns the box it replaced.
func (w *Conn) set(c mayfly.Connector) *box {
	return w.cur.Swap(&box{c: c})
}

// retire closes b after the calls using it return.
func (b *box) retire() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.c.Close()
}

// acquire returns the connector in force, held until release.
func (w *Conn) acquire() (mayfly.Connector, func()) {
	for {
		b := w.cur.Load()
		b.mu.RLock()
		if !b.closed || w.cur.Load() == b {
			// Not replaced (a Conn closed at shutdown answers as its
			// closed connector does).
			return b.c, b.mu.RUnlock
		}
		b.mu.RUnlock() // replaced meanwhile: take the new one
	}
}

// Inner returns the connector in force now (tests).
func (w *Conn) Inner() mayfly.Connector { return w.cur.Load().c }

func (w *Conn) Provision(ctx context.Context, req mayfly.ProvisionRequest) (mayfly.ProvisionResponse, error) {
	c, done := w.acquire()
	defer done()
	return c.Provision(ctx, req)
}

func (w *Conn) Revoke(ctx context.Context, req mayfly.RevokeRequest) error {
	c, done := w.acquire()
	defer done()
	return c.Revoke(ctx, req)
}

func (w *Conn) Accounts(ctx context.Context, req mayfly.AccountsRequest) ([]mayfly.Account, error) {
	c, done := w.acquire()
	defer done()
	return c.Accounts(ctx, req)
}

func (w *Conn) Check(ctx context.Context) error {
	c, done := w.acquire()
	defer done()
	return c.Check(ctx)
}

// Diagnose reports the findings of the connector in force (mayfly doctor).
func (w *Conn) Diagnose(ctx context.Context, t mayfly.Target) []mayfly.Finding {
	c, done := w.acquire()
	defer done()
	return mayfly.Diagnose(ctx, c, t)
}

// Close closes the connector in force.
func (w *Conn) Close() error {
	b := w.cur.Load()
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.c.Close()
}

func (w FullConn) PrepareProvision(ctx context.Context, req mayfly.ProvisionRequest) (mayfly.PreparedProvision, error) {
	c, done := w.acquire()
	defer done()
	pp, ok := c.(mayfly.PreparedProvisioner)
	if !ok {
		return nil, mayfly.ErrCannotStage // the broker provisions the usual way
	}
	return pp.PrepareProvision(ctx, req)
}

func (w FullConn) RevokeBatch(ctx context.Context, reqs []mayfly.RevokeRequest) []error {
	c, done := w.acquire()
	defer done()
	if br, ok := c.(mayfly.BatchRevoker); ok {
		return br.RevokeBatch(ctx, reqs)
	}
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		errs[i] = c.Revoke(ctx, r)
	}
	return errs
}

func (w FullConn) Extend(ctx context.Context, req mayfly.ExtendRequest) error {
	c, done := w.acquire()
	defer done()
	if ext, ok := c.(mayfly.Extender); ok {
		return ext.Extend(ctx, req)
	}
	return nil
}
