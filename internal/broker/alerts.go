package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/faillog"
)

// Alert records an operational alert in the audit trail, from where the
// notification channels deliver it to the security groups. action is
// "alert.<kind>"; reason says what happened and whatToDo what to do.
func (b *Broker) Alert(ctx context.Context, action, target, leaseID, summary, reason, whatToDo string) {
	subject := "mayfly"
	if target != "" {
		subject = "target:" + target
	}
	if leaseID != "" {
		subject = "lease:" + leaseID
	}
	err := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		return tx.AppendAudit(&mayfly.AuditEvent{Time: b.clock.Now().UTC(), Actor: System.User, Action: action,
			Subject: subject, Target: target, LeaseID: leaseID, Reason: reason,
			Data: map[string]string{"summary": summary, "what_to_do": whatToDo}})
	})
	if err != nil {
		b.log.Error("record alert", "action", action, "err", err)
		return
	}
	b.log.Warn("alert", "action", action, "target", target, "lease", leaseID, "reason", reason)
	b.committed()
}

// RecordAdminAction records an administrative action that changes no
// request or lease (a CA rotation) in the audit trail.
func (b *Broker) RecordAdminAction(ctx context.Context, c Caller, action, subject, reason string, data map[string]string) error {
	err := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		return tx.AppendAudit(&mayfly.AuditEvent{Time: b.clock.Now().UTC(), Actor: c.User, Action: action,
			Subject: subject, Source: c.Source, Reason: reason, Data: data})
	})
	if err == nil {
		b.committed()
	}
	return err
}

// overdue remembers when each lease was first seen failing revocation,
// and the last count of leases past their expiry.
type overdue struct {
	mu      sync.Mutex
	since   map[string]time.Time
	alerted map[string]bool

	count  int
	oldest time.Time // expiry of the most overdue lease counted
}

// OverdueGrace is how long past its expiry a lease still active or
// revoking counts as overdue (mayfly_leases_overdue, /readyz).
const OverdueGrace = 5 * time.Second

// Overdue is a count of leases still live past their expiry.
type Overdue struct {
	// Count is how many leases are still active or revoking more than the
	// grace after their expiry.
	Count int
	// Oldest is the earliest expiry among them (zero when Count is 0).
	Oldest time.Time
}

// CountOverdue counts the leases still active or revoking more than grace
// after their expiry, and remembers the count for LastOverdue. It reads
// the active leases due by then through the (state, due_at) index (an
// active lease is due at or before its expiry) and the revoking ones,
// never ended leases.
func (b *Broker) CountOverdue(ctx context.Context, grace time.Duration) (Overdue, error) {
	cutoff := b.clock.Now().UTC().Add(-grace)
	ls, err := b.overdueLeases(ctx, cutoff)
	if err != nil {
		return Overdue{}, err
	}
	var o Overdue
	for _, l := range ls {
		o.Count++
		if o.Oldest.IsZero() || l.ExpiresAt.Before(o.Oldest) {
			o.Oldest = l.ExpiresAt
		}
	}
	b.overdue.mu.Lock()
	b.overdue.count, b.overdue.oldest = o.Count, o.Oldest
	b.overdue.mu.Unlock()
	return o, nil
}

// LastOverdue returns the result of the last CountOverdue.
func (b *Broker) LastOverdue() Overdue {
	b.overdue.mu.Lock()
	defer b.overdue.mu.Unlock()
	return Overdue{Count: b.overdue.count, Oldest: b.overdue.oldest}
}

// overdueLeases returns the leases still active or revoking whose expiry
// is at or before cutoff.
func (b *Broker) overdueLeases(ctx context.Context, cutoff time.Time) ([]*mayfly.Lease, error) {
	var out []*mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		active, err := tx.DueLeases(cutoff, []mayfly.LeaseState{mayfly.LeaseActive}, mayfly.DueCursor{}, 0)
		if err != nil {
			return err
		}
		revoking, err := tx.ListLeases(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseRevoking}})
		if err != nil {
			return err
		}
		for _, l := range append(active, revoking...) {
			if !l.ExpiresAt.IsZero() && !l.ExpiresAt.After(cutoff) {
				out = append(out, l)
			}
		}
		return nil
	})
	return out, err
}

// WatchOverdue counts overdue leases (see CountOverdue) every interval
// until ctx ends, handing each count to report.
func (b *Broker) WatchOverdue(ctx context.Context, every, grace time.Duration, report func(Overdue)) {
	t := mayfly.NewTicker(b.clock, every)
	defer t.Stop()
	fail := faillog.New(b.log, b.clock, "count overdue leases")
	for {
		o, err := b.CountOverdue(ctx, grace)
		if err != nil && ctx.Err() == nil {
			fail.Fail(err)
		} else if err == nil {
			fail.OK()
			if report != nil {
				report(o)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// CheckOverdueRevocations alerts once for every lease whose revocation has
// kept failing for longer than after, and for every lease still active
// longer than after past its expiry (its revocation never finished, not
// even as a failure).
func (b *Broker) CheckOverdueRevocations(ctx context.Context, after time.Duration) error {
	var ls []*mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		ls, err = tx.ListLeases(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseRevoking}})
		return err
	})
	if err != nil {
		return err
	}
	now := b.clock.Now()
	stuck, err := b.overdueLeases(ctx, now.UTC().Add(-after))
	if err != nil {
		return err
	}
	var stuckActive []*mayfly.Lease
	for _, l := range stuck {
		if l.State == mayfly.LeaseActive {
			stuckActive = append(stuckActive, l)
		}
	}
	o := &b.overdue
	o.mu.Lock()
	if o.since == nil {
		o.since, o.alerted = map[string]time.Time{}, map[string]bool{}
	}
	failing := map[string]bool{}
	var due []*mayfly.Lease
	for _, l := range ls {
		if l.RevokeAttempts == 0 {
			continue
		}
		failing[l.ID] = true
		if _, ok := o.since[l.ID]; !ok {
			o.since[l.ID] = now
		}
		if now.Sub(o.since[l.ID]) >= after && !o.alerted[l.ID] {
			o.alerted[l.ID] = true
			due = append(due, l)
		}
	}
	for _, l := range stuckActive {
		failing[l.ID] = true
		if _, ok := o.since[l.ID]; !ok {
			o.since[l.ID] = l.ExpiresAt
		}
		if !o.alerted[l.ID] {
			o.alerted[l.ID] = true
			due = append(due, l)
		}
	}
	for id := range o.since {
		if !failing[id] {
			delete(o.since, id)
			delete(o.alerted, id)
		}
	}
	o.mu.Unlock()
	for _, l := range due {
		if l.State == mayfly.LeaseActive {
			b.Alert(ctx, "alert.revocation_overdue", l.Target, l.ID,
				fmt.Sprintf("%s on %s still active %s past its expiry", l.Username, l.Target, now.Sub(l.ExpiresAt).Round(time.Second)),
				fmt.Sprintf("The lease expired at %s but no revocation attempt on %s has finished since.", l.ExpiresAt.Format(time.RFC3339), l.Target),
				fmt.Sprintf("Mayfly keeps trying. Check that %s answers (mayfly_leases_overdue, mayfly_target_up); if the account must go now, remove it on the target by hand, then run mayfly reconcile %s.", l.Target, l.Target))
			continue
		}
		b.Alert(ctx, "alert.revocation_overdue", l.Target, l.ID,
			fmt.Sprintf("Revocation of %s on %s failing for over %s", l.Username, l.Target, after),
			fmt.Sprintf("The account %s on %s should have been removed but %d attempts failed; the last error: %s", l.Username, l.Target, l.RevokeAttempts, l.LastError),
			fmt.Sprintf("Mayfly keeps retrying. Check that %s is reachable with its admin credential (mayfly leases --target %s); if the account must go now, remove it on the target by hand, then run mayfly reconcile %s.", l.Target, l.Target, l.Target))
	}
	return nil
}
