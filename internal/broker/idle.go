package broker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// idleTracker remembers when each lease's account was last seen in use.
type idleTracker struct {
	mu   sync.Mutex
	seen map[string]time.Time
	// unsaved holds gateway activity not yet written to the store, where
	// the idle check of whichever replica runs it reads it.
	unsaved map[string]time.Time
}

// activityFlushEvery is how often each replica writes the activity its
// gateways saw to the store.
const activityFlushEvery = time.Second

// gatewayIdleGrace is how far behind the last activity of a lease via a
// gateway the idle check may see it: one report interval at the gateway,
// one flush to the store. A busy lease is never ended early.
const gatewayIdleGrace = mayfly.GatewayActivityEvery + activityFlushEvery

// mark records gateway activity to write to the store.
func (t *idleTracker) mark(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.unsaved == nil {
		t.unsaved = map[string]time.Time{}
	}
	if at.After(t.unsaved[id]) {
		t.unsaved[id] = at
	}
}

// takeUnsaved returns the activity to write and forgets it.
func (t *idleTracker) takeUnsaved() map[string]time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.unsaved
	t.unsaved = nil
	return u
}

func (t *idleTracker) touch(id string, at time.Time) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen == nil {
		t.seen = map[string]time.Time{}
	}
	if at.After(t.seen[id]) {
		t.seen[id] = at
	}
	return t.seen[id]
}

func (t *idleTracker) forget(keep map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.seen {
		if !keep[id] {
			delete(t.seen, id)
		}
	}
}

// CheckIdle revokes active leases whose policy sets idle_timeout and whose
// account has had no session and no activity for that long — including a
// credential never used within the timeout after activation. It uses each
// connector's activity report and returns how many leases it ended.
func (b *Broker) CheckIdle(ctx context.Context) (int, error) {
	cfg := b.cfg.Load()
	if !slices.ContainsFunc(cfg.Policies.Policies(), func(p policy.Policy) bool { return p.IdleTimeout > 0 }) {
		// No policy ends leases when idle: nothing to read.
		b.idle.forget(nil)
		return 0, nil
	}
	var active []*mayfly.Lease
	reqs := map[string]*mayfly.Request{}
	var stored map[string]time.Time // gateway activity any replica saw
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		// The active leases only, through the (state, due_at) index: the
		// cost follows the live leases, not the history.
		if active, err = tx.ListLeases(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseActive}}); err != nil {
			return err
		}
		if at, ok := tx.(mayfly.ActivityTx); ok {
			var gw []string
			for _, l := range active {
				if b.throughGateway(l) {
					gw = append(gw, l.ID)
				}
			}
			if stored, err = at.LeaseActivity(gw); err != nil {
				return err
			}
		}
		var ids []string
		for _, l := range active {
			ids = append(ids, l.RequestID)
		}
		// By primary key, in batches that stay well within the number
		// of parameters a query may have.
		for batch := range slices.Chunk(ids, 500) {
			rs, err := tx.ListRequests(mayfly.RequestFilter{IDs: batch})
			if err != nil {
				return err
			}
			for _, r := range rs {
				reqs[r.ID] = r
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	idleOf := func(l *mayfly.Lease) time.Duration {
		r := reqs[l.RequestID]
		if r == nil {
			return 0
		}
		p, _ := cfg.Policies.Policy(r.Policy)
		return p.IdleTimeout
	}
	byTarget := map[string][]*mayfly.Lease{}
	keep := map[string]bool{}
	for _, l := range active {
		if idleOf(l) > 0 {
			byTarget[l.Target] = append(byTarget[l.Target], l)
			keep[l.ID] = true
		}
	}
	b.idle.forget(keep)
	var idle []*mayfly.Lease
	for target, ls := range byTarget {
		conn, ok := b.connectors[target]
		if !ok {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		accts, err := conn.Accounts(actx, mayfly.AccountsRequest{Prefix: cfg.Targets[target].Prefix})
		cancel()
		if err != nil {
			b.log.Warn("idle check: list accounts", "target", target, "err", Scrub(mayfly.ErrorMessageOrText(err)))
			continue
		}
		byName := map[string]mayfly.Account{}
		for _, a := range accts {
			byName[a.Name] = a
		}
		now := b.clock.Now()
		for _, l := range ls {
			a := byName[l.Username]
			last := b.idle.touch(l.ID, l.CreatedAt)
			grace := time.Duration(0)
			if b.throughGateway(l) {
				// The gateway's last report may lag the last activity,
				// and reach this replica through the store.
				grace = gatewayIdleGrace
				if at, ok := stored[l.ID]; ok {
					last = b.idle.touch(l.ID, at)
				}
				// Only the gateway's activity counts (TouchActivity): its
				// own connection to the target is always there while
				// the client is connected, busy or not.
				a = mayfly.Account{}
			}
			if !a.LastActivity.IsZero() {
				last = b.idle.touch(l.ID, a.LastActivity)
			}
			if a.Sessions > 0 {
				last = b.idle.touch(l.ID, now)
			}
			if now.Sub(last) > idleOf(l)+grace {
				idle = append(idle, l)
			}
		}
	}
	if len(idle) == 0 {
		return 0, nil
	}
	n := 0
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		n = 0 // the store may run this again
		now := b.clock.Now().UTC()
		for _, l := range idle {
			cur, err := tx.GetLease(l.ID)
			if err != nil || cur.State != mayfly.LeaseActive {
				continue
			}
			cur.State, cur.EndReason, cur.DueAt = mayfly.LeaseRevoking, mayfly.EndIdle, now
			if err := tx.UpdateLease(cur); err != nil {
				return err
			}
			if err := b.audit(tx, System, "lease.idle", nil, cur, "no session or activity for "+idleOf(l).String(), nil); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	b.poke()
	b.committed()
	return n, err
}

// RunIdleChecker checks idle leases every interval until ctx ends.
func (b *Broker) RunIdleChecker(ctx context.Context, every time.Duration) error {
	t := mayfly.NewTicker(b.clock, every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			if _, err := b.CheckIdle(ctx); err != nil && ctx.Err() == nil {
				b.log.Error("idle check", "err", err)
			}
		}
	}
}

// FlushActivity writes the gateway activity this replica saw since the
// last flush to the store (when it keeps activity), for the idle check of
// any replica. What cannot be written is kept for the next flush.
func (b *Broker) FlushActivity(ctx context.Context) error {
	u := b.idle.takeUnsaved()
	if len(u) == 0 {
		return nil
	}
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		at, ok := tx.(mayfly.ActivityTx)
		if !ok {
			return nil
		}
		return at.TouchLeases(u)
	})
	if err != nil {
		for id, t := range u {
			b.idle.mark(id, t)
		}
	}
	return err
}

// RunActivityFlusher writes gateway activity to the store every second
// until ctx ends, then once more. Every replica runs it.
func (b *Broker) RunActivityFlusher(ctx context.Context) {
	t := mayfly.NewTicker(b.clock, activityFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			b.FlushActivity(fctx)
			cancel()
			return
		case <-t.C():
			if err := b.FlushActivity(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("record gateway activity", "err", err)
			}
		}
	}
}

// throughGateway reports whether lease l's grant is reached only through
// a gateway (PostgreSQL or SSH), whose activity reports count for idleness.
func (b *Broker) throughGateway(l *mayfly.Lease) bool {
	t, ok := b.cfg.Load().Targets[l.Target]
	return ok && t.Grants[l.Grant].Via == mayfly.ViaGateway
}
