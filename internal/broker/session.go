package broker

import (
	"context"
	"time"

	"github.com/mayflyhq/mayfly"
)

// DefaultHeartbeatTimeout is how long a session-bound lease lives without
// a heartbeat from its client.
const DefaultHeartbeatTimeout = 60 * time.Second

// sessionDue is when a session-bound lease is next due: its heartbeat
// deadline or its expiry, whichever is first.
func sessionDue(l *mayfly.Lease, now time.Time, timeout time.Duration) time.Time {
	d := now.Add(timeout)
	if l.ExpiresAt.Before(d) {
		return l.ExpiresAt
	}
	return d
}

// Heartbeat keeps a session-bound lease alive for another timeout. Only the
// lease's holder can send it; a lease that is not session-bound is left as
// it is.
func (b *Broker) Heartbeat(ctx context.Context, c Caller, id string, timeout time.Duration) (*mayfly.Lease, error) {
	if timeout <= 0 {
		timeout = DefaultHeartbeatTimeout
	}
	if timeout < 5*time.Second || timeout > time.Hour {
		return nil, mayfly.Errorf(mayfly.EINVALID, "heartbeat timeout %s: want between 5s and 1h", timeout)
	}
	var l *mayfly.Lease
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		var err error
		if l, err = tx.GetLease(id); err != nil {
			return err
		}
		if l.Requester != c.User {
			return mayfly.Errorf(mayfly.ENOTFOUND, "lease %q not found", id)
		}
		if l.State != mayfly.LeaseActive {
			return mayfly.Errorf(mayfly.ECONFLICT, "lease %s is %s (%s)", id, l.State, l.EndReason)
		}
		if !l.DueAt.Before(l.ExpiresAt) {
			return mayfly.Errorf(mayfly.ECONFLICT, "lease %s is not session-bound", id)
		}
		l.DueAt = sessionDue(l, b.clock.Now().UTC(), timeout)
		return tx.UpdateLease(l)
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}
