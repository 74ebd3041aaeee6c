package broker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// Extend lengthens an active lease by d, through the same policy as the
// original request and bounded by its max_total_duration. The target-side
// expiry (PostgreSQL VALID UNTIL) moves first, then the lease. Extensions
// that policy would route to approvers are refused with who would have to
// approve; the requester asks for new access instead.
func (b *Broker) Extend(ctx context.Context, c Caller, id string, d time.Duration, reason string) (*mayfly.Lease, error) {
	if d < policy.MinDuration {
		return nil, mayfly.Errorf(mayfly.EINVALID, "extension %s is under the minimum of %s", d, policy.MinDuration)
	}
	l, err := b.FindLease(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if l.Requester != c.User {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "only %s, who holds lease %s, can extend it", l.Requester, l.ID)
	}
	if l.State != mayfly.LeaseActive {
		return nil, mayfly.Errorf(mayfly.ECONFLICT, "lease %s is %s; only an active lease can be extended", l.ID, l.State)
	}
	cfg := b.cfg.Load()
	dec := cfg.Policies.Decide(policy.Input{
		User: c.User, Groups: c.Groups, Target: l.Target, Grant: l.Grant, Duration: d, Reason: reason,
		Now: b.clock.Now(), Extension: true, TotalSoFar: l.ExpiresAt.Sub(l.CreatedAt),
	})
	switch dec.Decision {
	case policy.Auto, policy.BreakGlassDecision:
	case policy.Approval:
		var who []string
		for _, s := range dec.Steps {
			who = append(who, fmt.Sprintf("%d from %s", s.Approvals, strings.Join(s.ApproverGroups, " or ")))
		}
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "extending lease %s by %s needs approval (%s); request new access instead", l.ID, d, strings.Join(who, ", then "))
	default:
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "extension refused: %s", dec.Reason)
	}
	newExpiry := l.ExpiresAt.Add(d)
	conn := b.connectors[l.Target]
	if ext, ok := conn.(mayfly.Extender); ok {
		if err := ext.Extend(ctx, mayfly.ExtendRequest{LeaseID: l.ID, Username: l.Username, ExpiresAt: newExpiry}); err != nil {
			return nil, err
		}
	} else if cfg.Targets[l.Target].Kind == mayfly.KindSSH {
		return nil, mayfly.Errorf(mayfly.ECONFLICT, "SSH certificates cannot be extended; request new access")
	}
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		cur, err := tx.GetLease(l.ID)
		if err != nil {
			return err
		}
		if cur.State != mayfly.LeaseActive {
			return mayfly.Errorf(mayfly.ECONFLICT, "lease %s ended meanwhile (%s)", l.ID, cur.EndReason)
		}
		old := cur.ExpiresAt
		sessionBound := cur.DueAt.Before(cur.ExpiresAt)
		cur.ExpiresAt = newExpiry
		if !sessionBound {
			cur.DueAt = newExpiry
		}
		if err := tx.UpdateLease(cur); err != nil {
			return err
		}
		l = cur
		return b.audit(tx, c, "lease.extend", nil, cur, reason, map[string]string{
			"by": d.String(), "old_expires_at": old.Format(time.RFC3339), "expires_at": newExpiry.Format(time.RFC3339), "policy": deref(dec.Policy)})
	})
	if err != nil {
		return nil, err
	}
	b.poke()
	b.committed()
	return l, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Review records that someone looked at a break-glass lease after the fact
// (admins or members of the lease's approver groups, never its holder).
func (b *Broker) Review(ctx context.Context, c Caller, id, note string) error {
	l, err := b.FindLease(ctx, System, id)
	if err != nil {
		return err
	}
	if l.Requester == c.User {
		return mayfly.Errorf(mayfly.EFORBIDDEN, "you cannot review your own break-glass access")
	}
	if !c.Admin {
		return mayfly.Errorf(mayfly.EFORBIDDEN, "reviewing break-glass access needs an admin")
	}
	if strings.TrimSpace(note) == "" {
		return mayfly.Errorf(mayfly.EINVALID, "a review needs a note (--note)")
	}
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		return b.audit(tx, c, "lease.review", nil, l, note, nil)
	})
	b.committed()
	return err
}
