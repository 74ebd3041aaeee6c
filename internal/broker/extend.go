package broker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// Extend lengthens an active lease by d, through the same policy as a new
// request and bounded by its max_total_duration. When policy approves at
// once, the target-side expiry (PostgreSQL VALID UNTIL) moves first, then
// the lease, and the lease is returned. When it needs approvers, an
// extension request is recorded and returned pending; approving it
// applies the extension.
func (b *Broker) Extend(ctx context.Context, c Caller, id string, d time.Duration, reason string) (*mayfly.Lease, *mayfly.Request, error) {
	if d < policy.MinDuration {
		return nil, nil, mayfly.Errorf(mayfly.EINVALID, "extension %s is under the minimum of %s", d, policy.MinDuration)
	}
	if len(reason) > MaxReasonLen {
		return nil, nil, mayfly.Errorf(mayfly.EINVALID, "reason is longer than %d bytes", MaxReasonLen)
	}
	if err := CheckText("reason", reason); err != nil {
		return nil, nil, err
	}
	l, err := b.FindLease(ctx, c, id)
	if err != nil {
		return nil, nil, err
	}
	if l.Requester != c.User {
		return nil, nil, mayfly.Errorf(mayfly.EFORBIDDEN, "only %s, who holds lease %s, can extend it", l.Requester, l.ID)
	}
	if l.State != mayfly.LeaseActive {
		return nil, nil, mayfly.Errorf(mayfly.ECONFLICT, "lease %s is %s; only an active lease can be extended", l.ID, l.State)
	}
	cfg := b.cfg.Load()
	if cfg.Targets[l.Target].Kind == mayfly.KindSSH {
		return nil, nil, mayfly.Errorf(mayfly.ECONFLICT, "SSH certificates cannot be extended; request new access")
	}
	now := b.clock.Now()
	dec := cfg.Policies.Decide(policy.Input{
		User: c.User, Groups: c.Groups, Target: l.Target, Grant: l.Grant, Duration: d, Reason: reason,
		Now: now, Extension: true, TotalSoFar: l.ExpiresAt.Sub(l.CreatedAt),
	})
	switch dec.Decision {
	case policy.Auto, policy.BreakGlassDecision:
		l, err := b.applyExtension(ctx, c, l.ID, d, reason, deref(dec.Policy))
		return l, nil, err
	case policy.Approval:
		r := &mayfly.Request{
			ID: NewID("req_"), Requester: c.User, Target: l.Target, Grant: l.Grant, Reason: reason, Duration: d,
			State: mayfly.RequestPending, Policy: deref(dec.Policy), CreatedAt: now.UTC(), ExtendsLease: l.ID,
		}
		for _, st := range dec.Steps {
			r.Steps = append(r.Steps, mayfly.ApprovalStep{Approvals: st.Approvals, ApproverGroups: st.ApproverGroups})
		}
		r.ApprovalsRequired, r.ApproverGroups = r.Steps[0].Approvals, r.Steps[0].ApproverGroups
		err := b.store.Update(ctx, func(tx mayfly.Tx) error {
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
			return b.audit(tx, c, "request.create", r, nil, reason, map[string]string{
				"duration": d.String(), "policy": r.Policy, "decision": dec.Decision, "extends_lease": l.ID})
		})
		if err != nil {
			return nil, nil, err
		}
		b.committed()
		return nil, r, nil
	default:
		return nil, nil, mayfly.Errorf(mayfly.EFORBIDDEN, "extension refused: %s", dec.Reason)
	}
}

// applyExtension moves the target-side expiry and then the lease's.
func (b *Broker) applyExtension(ctx context.Context, c Caller, leaseID string, d time.Duration, reason, policyName string) (*mayfly.Lease, error) {
	l, err := b.getLease(ctx, leaseID)
	if err != nil {
		return nil, err
	}
	if l.State != mayfly.LeaseActive {
		return nil, mayfly.Errorf(mayfly.ECONFLICT, "lease %s is %s; only an active lease can be extended", l.ID, l.State)
	}
	newExpiry := l.ExpiresAt.Add(d)
	if ext, ok := b.connectors[l.Target].(mayfly.Extender); ok {
		if err := ext.Extend(ctx, mayfly.ExtendRequest{LeaseID: l.ID, Username: l.Username, ExpiresAt: newExpiry}); err != nil {
			return nil, err
		}
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
			"by": d.String(), "old_expires_at": old.Format(time.RFC3339), "expires_at": newExpiry.Format(time.RFC3339), "policy": policyName})
	})
	if err != nil {
		return nil, err
	}
	b.poke()
	b.committed()
	return l, nil
}

// endExtensions cancels the pending extension requests of lease leaseID,
// inside tx, because the lease has ended (why says how): there is nothing
// left for them to extend. It must run in the transaction of every
// transition that takes a lease out of active.
func (b *Broker) endExtensions(tx mayfly.Tx, c Caller, leaseID, why string) error {
	return b.endExtensionsIn(tx, c, leaseID, why, nil)
}

// openExtensions are the pending requests of a transaction that ends many
// leases, read once by the first endExtensionsIn that needs them.
type openExtensions struct {
	read bool
	rs   []*mayfly.Request
}

// endExtensionsIn is endExtensions with the pending requests read once
// into ext for all the leases a transaction ends (nil: read them now).
func (b *Broker) endExtensionsIn(tx mayfly.Tx, c Caller, leaseID, why string, ext *openExtensions) error {
	if ext == nil {
		ext = &openExtensions{}
	}
	if !ext.read {
		rs, err := tx.ListRequests(mayfly.RequestFilter{States: []mayfly.RequestState{mayfly.RequestPending}, Open: true})
		if err != nil {
			return fmt.Errorf("end extensions of lease %s: %w", leaseID, err)
		}
		ext.rs, ext.read = rs, true
	}
	if c.User == "" {
		c = System
	}
	for _, r := range ext.rs {
		if r.ExtendsLease != leaseID || r.State != mayfly.RequestPending {
			continue
		}
		if err := b.closeRequest(tx, c, r, mayfly.RequestCancelled, "request.cancel", why, map[string]string{"extends_lease": leaseID}); err != nil {
			return err
		}
	}
	return nil
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
	if err := CheckText("note", note); err != nil {
		return err
	}
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		return b.audit(tx, c, "lease.review", nil, l, note, nil)
	})
	b.committed()
	return err
}
