package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
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

// overdue remembers when each lease was first seen failing revocation.
type overdue struct {
	mu      sync.Mutex
	since   map[string]time.Time
	alerted map[string]bool
}

// CheckOverdueRevocations alerts once for every lease whose revocation has
// kept failing for longer than after.
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
	for id := range o.since {
		if !failing[id] {
			delete(o.since, id)
			delete(o.alerted, id)
		}
	}
	o.mu.Unlock()
	for _, l := range due {
		b.Alert(ctx, "alert.revocation_overdue", l.Target, l.ID,
			fmt.Sprintf("Revocation of %s on %s failing for over %s", l.Username, l.Target, after),
			fmt.Sprintf("The account %s on %s should have been removed but %d attempts failed; the last error: %s", l.Username, l.Target, l.RevokeAttempts, l.LastError),
			fmt.Sprintf("Mayfly keeps retrying. Check that %s is reachable with its admin credential (mayfly leases --target %s); if the account must go now, remove it on the target by hand, then run mayfly reconcile %s.", l.Target, l.Target, l.Target))
	}
	return nil
}
