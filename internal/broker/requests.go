package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// RequestInput is what a requester asks for.
type RequestInput struct {
	Target     string
	Grant      string
	Duration   time.Duration
	Reason     string
	BreakGlass bool
}

// MaxReasonLen bounds a request's reason.
const MaxReasonLen = 1024

// Explain returns the policy decision for in as if caller requested it.
func (b *Broker) Explain(user string, groups []string, in RequestInput) (policy.Decision, error) {
	cfg := b.cfg.Load()
	if err := checkInput(cfg, in); err != nil {
		return policy.Decision{}, err
	}
	return cfg.Policies.Decide(policy.Input{
		User: user, Groups: groups, Target: in.Target, Grant: in.Grant, Duration: in.Duration,
		Reason: in.Reason, BreakGlass: in.BreakGlass, Now: b.clock.Now(), Explain: true,
	}), nil
}

func checkInput(cfg *Config, in RequestInput) error {
	t, ok := cfg.Targets[in.Target]
	if !ok {
		return mayfly.Errorf(mayfly.ENOTFOUND, "unknown target %q", in.Target)
	}
	if _, ok := t.Grants[in.Grant]; !ok {
		return mayfly.Errorf(mayfly.ENOTFOUND, "target %q has no grant %q", in.Target, in.Grant)
	}
	if in.Duration < 0 {
		return mayfly.Errorf(mayfly.EINVALID, "duration %s is negative", in.Duration)
	}
	if in.Duration > 0 && in.Duration < time.Second {
		return mayfly.Errorf(mayfly.EINVALID, "duration %s is under the minimum of 1s", in.Duration)
	}
	if len(in.Reason) > MaxReasonLen {
		return mayfly.Errorf(mayfly.EINVALID, "reason is longer than %d bytes", MaxReasonLen)
	}
	if strings.ContainsRune(in.Reason, 0) {
		return mayfly.Errorf(mayfly.EINVALID, "reason contains a NUL byte")
	}
	return nil
}

// CreateRequest records a request and decides it by policy: automatic
// approval, pending approval, or refusal (nothing is recorded then; the
// error names the rule that refused it).
func (b *Broker) CreateRequest(ctx context.Context, c Caller, in RequestInput) (*mayfly.Request, policy.Decision, error) {
	return b.createRequest(ctx, c, in, nil)
}

// createRequest decides and records a request. prepare, when not nil, runs
// before anything is written and may return more to write in the same
// transaction (the lease intent of an immediate activation).
func (b *Broker) createRequest(ctx context.Context, c Caller, in RequestInput, prepare func(*mayfly.Request) (func(mayfly.Tx) error, error)) (*mayfly.Request, policy.Decision, error) {
	cfg := b.cfg.Load()
	if err := checkInput(cfg, in); err != nil {
		return nil, policy.Decision{}, err
	}
	now := b.clock.Now().UTC()
	d := cfg.Policies.Decide(policy.Input{
		User: c.User, Groups: c.Groups, Target: in.Target, Grant: in.Grant, Duration: in.Duration,
		Reason: in.Reason, BreakGlass: in.BreakGlass, Now: now,
	})
	if d.Decision == "deny" || d.Policy == nil {
		if b.hooks.Requested != nil {
			b.hooks.Requested("deny")
		}
		// The refusal carries the full explanation, as policy explain would.
		d = cfg.Policies.Decide(policy.Input{
			User: c.User, Groups: c.Groups, Target: in.Target, Grant: in.Grant, Duration: in.Duration,
			Reason: in.Reason, BreakGlass: in.BreakGlass, Now: now, Explain: true,
		})
		why := d.Reason
		if why == "" {
			why = fmt.Sprintf("no policy allows %s %s/%s", c.User, in.Target, in.Grant)
		}
		return nil, d, mayfly.Errorf(mayfly.EFORBIDDEN, "request refused: %s", why)
	}
	r := &mayfly.Request{
		ID: NewID("req_"), Requester: c.User, Target: in.Target, Grant: in.Grant,
		Reason: in.Reason, Duration: d.Duration, Policy: *d.Policy, CreatedAt: now,
		State: mayfly.RequestPending,
	}
	if r.Duration == 0 {
		r.Duration = in.Duration
	}
	for _, st := range d.Steps {
		r.Steps = append(r.Steps, mayfly.ApprovalStep{Approvals: st.Approvals, ApproverGroups: st.ApproverGroups})
	}
	if len(r.Steps) > 0 {
		r.ApprovalsRequired = r.Steps[0].Approvals
		r.ApproverGroups = r.Steps[0].ApproverGroups
	}
	auto := d.Decision == "auto" || d.Decision == "break_glass" || len(d.Steps) == 0
	if auto {
		r.State = mayfly.RequestApproved
		r.DecidedAt = now
	}
	var then func(mayfly.Tx) error
	if prepare != nil {
		var err error
		if then, err = prepare(r); err != nil {
			return nil, d, err
		}
	}
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.CreateRequest(r); err != nil {
			return err
		}
		// An automatic approval is part of the request's creation: the one
		// event records it (decision auto, state approved).
		data := map[string]string{"duration": r.Duration.String(), "policy": r.Policy, "decision": d.Decision, "state": string(r.State)}
		if in.BreakGlass {
			data["break_glass"] = "true"
		}
		if err := b.audit(tx, c, "request.create", r, nil, r.Reason, data); err != nil {
			return err
		}
		if then != nil {
			return then(tx)
		}
		return nil
	})
	if err != nil {
		return nil, d, fmt.Errorf("create request: %w", err)
	}
	if b.hooks.Requested != nil {
		b.hooks.Requested(d.Decision)
	}
	b.committed()
	return r, d, nil
}

func (b *Broker) committed() {
	b.changeMu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.changeMu.Unlock()
	if b.hooks.Committed != nil {
		b.hooks.Committed()
	}
}

// Changed returns a channel closed at the next committed state change, for
// live streams of the audit trail.
func (b *Broker) Changed() <-chan struct{} {
	b.changeMu.Lock()
	defer b.changeMu.Unlock()
	return b.changed
}

func (b *Broker) audit(tx mayfly.Tx, c Caller, action string, r *mayfly.Request, l *mayfly.Lease, reason string, data map[string]string) error {
	e := &mayfly.AuditEvent{
		Time: b.clock.Now().UTC(), Actor: c.User, Action: action, Reason: reason, Source: c.Source, Data: data,
	}
	if r != nil {
		e.Subject, e.Target, e.RequestID, e.LeaseID = "request:"+r.ID, r.Target, r.ID, r.LeaseID
	}
	if l != nil {
		e.Subject, e.Target, e.RequestID, e.LeaseID = "lease:"+l.ID, l.Target, l.RequestID, l.ID
	}
	if e.Actor == "" {
		e.Actor = "mayfly"
	}
	return tx.AppendAudit(e)
}

// System is the caller for actions Mayfly takes on its own (expiry, recovery).
var System = Caller{User: "mayfly", Admin: true}

// canSee reports whether c may read request r: its requester, an admin, or
// an eligible approver.
func (b *Broker) canSee(c Caller, r *mayfly.Request) bool {
	return c.Admin || r.Requester == c.User || b.canDecide(c, r)
}

// canDecide reports whether c is eligible to approve or deny r's current
// step: never the requester, only members of the step's groups.
func (b *Broker) canDecide(c Caller, r *mayfly.Request) bool {
	ok, _ := policy.CanApprove(policy.Step{Approvals: r.ApprovalsRequired, ApproverGroups: r.ApproverGroups}, c.User, c.Groups, r.Requester)
	return ok
}

// GetRequest returns a request the caller may see.
func (b *Broker) GetRequest(ctx context.Context, c Caller, id string) (*mayfly.Request, error) {
	var r *mayfly.Request
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = tx.GetRequest(id)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !b.canSee(c, r) {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", id)
	}
	return r, nil
}

// ListRequests returns the requests the caller may see: an admin all, an
// approver those they may decide, a requester their own. pending limits the
// list to pending requests.
func (b *Broker) ListRequests(ctx context.Context, c Caller, pending bool, limit int) ([]*mayfly.Request, error) {
	f := mayfly.RequestFilter{}
	if c.Admin {
		// An admin sees everything: the store can apply the limit. For
		// anyone else it applies to what they may see, below.
		f.Limit = limit
	}
	if pending {
		// Open as well, so the store can use its index of open requests.
		f.States, f.Open = []mayfly.RequestState{mayfly.RequestPending}, true
	}
	var all []*mayfly.Request
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		all, err = tx.ListRequests(f)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := []*mayfly.Request{}
	for _, r := range all {
		if pending && !c.Admin && !b.canDecide(c, r) && r.Requester != c.User {
			continue
		}
		if b.canSee(c, r) {
			out = append(out, r)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

// Approve records c's approval of request id. The requester's own approval
// never counts and one approver counts once; the request is approved when
// the policy's approvals are all in.
func (b *Broker) Approve(ctx context.Context, c Caller, id, reason string) (*mayfly.Request, error) {
	var r *mayfly.Request
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		var err error
		if r, err = tx.GetRequest(id); err != nil {
			return err
		}
		if r.Requester == c.User {
			return mayfly.Errorf(mayfly.EFORBIDDEN, "you cannot approve your own request %s", id)
		}
		if !b.canDecide(c, r) {
			if !b.canSee(c, r) {
				return mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", id)
			}
			return mayfly.Errorf(mayfly.EFORBIDDEN, "%s is not an eligible approver of %s (approver groups: %s)", c.User, id, strings.Join(r.ApproverGroups, ", "))
		}
		if r.State != mayfly.RequestPending {
			return mayfly.Errorf(mayfly.ECONFLICT, "request %s is %s, not pending", id, r.State)
		}
		if ok, why := b.lapsed(r, b.clock.Now()); ok {
			return mayfly.Errorf(mayfly.ECONFLICT, "request %s has lapsed: %s", id, why)
		}
		if slices.Contains(r.Approvers, c.User) {
			return mayfly.Errorf(mayfly.ECONFLICT, "%s has already approved request %s", c.User, id)
		}
		r.Approvers = append(r.Approvers, c.User)
		r.StepApprovals++
		data := map[string]string{"approvals": fmt.Sprintf("%d/%d", r.StepApprovals, r.ApprovalsRequired)}
		if len(r.Steps) > 1 {
			data["step"] = fmt.Sprintf("%d/%d", r.Step+1, len(r.Steps))
		}
		done := false
		if r.StepApprovals >= r.ApprovalsRequired {
			if r.Step+1 < len(r.Steps) {
				// On to the next step, with its own approvers.
				r.Step++
				r.StepApprovals = 0
				r.ApprovalsRequired = r.Steps[r.Step].Approvals
				r.ApproverGroups = r.Steps[r.Step].ApproverGroups
			} else {
				done = true
				r.State = mayfly.RequestApproved
				r.DecidedAt = b.clock.Now().UTC()
			}
		}
		if err := tx.UpdateRequest(r); err != nil {
			return err
		}
		if err := b.audit(tx, c, "request.approval", r, nil, reason, data); err != nil {
			return err
		}
		if done {
			return b.audit(tx, c, "request.approve", r, nil, reason, map[string]string{"approvers": strings.Join(r.Approvers, ",")})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r.State == mayfly.RequestApproved && b.hooks.Decided != nil {
		b.hooks.Decided(r)
	}
	b.committed()
	if r.State == mayfly.RequestApproved && r.ExtendsLease != "" {
		return b.finishExtension(ctx, c, r)
	}
	return r, nil
}

// finishExtension applies an approved extension request to its lease and
// links the two.
func (b *Broker) finishExtension(ctx context.Context, c Caller, r *mayfly.Request) (*mayfly.Request, error) {
	holder := Caller{User: r.Requester, Source: c.Source}
	if _, err := b.applyExtension(ctx, holder, r.ExtendsLease, r.Duration, r.Reason, r.Policy); err != nil {
		return nil, fmt.Errorf("request %s approved, but extending lease %s failed: %w", r.ID, r.ExtendsLease, err)
	}
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		cur, err := tx.GetRequest(r.ID)
		if err != nil {
			return err
		}
		cur.LeaseID = r.ExtendsLease
		r = cur
		return tx.UpdateRequest(cur)
	})
	return r, err
}

// Deny ends a pending request; any eligible approver may deny it, and the
// requester may withdraw it.
func (b *Broker) Deny(ctx context.Context, c Caller, id, reason string) (*mayfly.Request, error) {
	var r *mayfly.Request
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		var err error
		if r, err = tx.GetRequest(id); err != nil {
			return err
		}
		own := r.Requester == c.User
		if !own && !b.canDecide(c, r) && !c.Admin {
			if !b.canSee(c, r) {
				return mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", id)
			}
			return mayfly.Errorf(mayfly.EFORBIDDEN, "%s may not decide request %s", c.User, id)
		}
		if r.State != mayfly.RequestPending && !(own && r.State == mayfly.RequestApproved && r.LeaseID == "") {
			return mayfly.Errorf(mayfly.ECONFLICT, "request %s is %s, not pending", id, r.State)
		}
		action := "request.deny"
		r.State = mayfly.RequestDenied
		if own {
			action, r.State = "request.cancel", mayfly.RequestCancelled
		}
		r.Decider, r.DecisionReason, r.DecidedAt = c.User, reason, b.clock.Now().UTC()
		if err := tx.UpdateRequest(r); err != nil {
			return err
		}
		return b.audit(tx, c, action, r, nil, reason, nil)
	})
	if err != nil {
		return nil, err
	}
	if b.hooks.Decided != nil {
		b.hooks.Decided(r)
	}
	b.committed()
	return r, nil
}
