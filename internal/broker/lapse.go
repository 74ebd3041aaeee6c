package broker

import (
	"context"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// timers returns the pending TTL and activation window of the policy that
// decided r (the defaults when the policy is gone).
func (b *Broker) timers(r *mayfly.Request) (pendingTTL, activation time.Duration) {
	p, _ := b.cfg.Load().Policies.Policy(r.Policy)
	pendingTTL, activation = p.PendingTTL, p.ActivationWindow
	if pendingTTL <= 0 {
		pendingTTL = policy.DefaultPendingTTL
	}
	if activation <= 0 {
		activation = policy.DefaultActivationWindow
	}
	return pendingTTL, activation
}

// lapsed reports whether r has run out of time: pending past its TTL, or
// approved and never activated within its activation window.
func (b *Broker) lapsed(r *mayfly.Request, now time.Time) (bool, string) {
	ttl, window := b.timers(r)
	switch {
	case r.State == mayfly.RequestPending && now.Sub(r.CreatedAt) > ttl:
		return true, "nobody decided within " + ttl.String()
	case r.State == mayfly.RequestApproved && r.LeaseID == "" && !r.DecidedAt.IsZero() && now.Sub(r.DecidedAt) > window:
		return true, "approved but not activated within " + window.String()
	}
	return false, ""
}

// LapseRequests ends requests that ran out of time and returns how many.
func (b *Broker) LapseRequests(ctx context.Context) (int, error) {
	n := 0
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		n = 0 // the store may run this again
		rs, err := tx.ListRequests(mayfly.RequestFilter{Open: true})
		if err != nil {
			return err
		}
		now := b.clock.Now().UTC()
		for _, r := range rs {
			ok, why := b.lapsed(r, now)
			if !ok {
				continue
			}
			r.State, r.DecisionReason, r.DecidedAt, r.Decider = mayfly.RequestLapsed, why, now, System.User
			if err := tx.UpdateRequest(r); err != nil {
				return err
			}
			if err := b.audit(tx, System, "request.lapse", r, nil, why, nil); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if n > 0 {
		b.committed()
	}
	return n, err
}

// RunLapser lapses timed-out requests every interval until ctx ends, and
// alerts on revocations failing for longer than overdueAfter.
func (b *Broker) RunLapser(ctx context.Context, every, overdueAfter time.Duration) error {
	t := mayfly.NewTicker(b.clock, every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			if _, err := b.LapseRequests(ctx); err != nil && ctx.Err() == nil {
				b.log.Error("lapse requests", "err", err)
			}
			if err := b.CheckOverdueRevocations(ctx, overdueAfter); err != nil && ctx.Err() == nil {
				b.log.Error("check overdue revocations", "err", err)
			}
		}
	}
}
