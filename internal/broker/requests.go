package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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
	return CheckText("reason", in.Reason)
}

// CheckText refuses control characters (ESC, CR, LF, BEL, NUL, ...) in
// text a person gives, such as a reason or a note: it reaches other
// people's terminals and messages, where such characters could rewrite
// what they see.
func CheckText(what, s string) error {
	for _, r := range s {
		if unicode.IsControl(r) {
			return mayfly.Errorf(mayfly.EINVALID, "%s contains the control character %U; use plain text on one line", what, r)
		}
	}
	if !utf8.ValidString(s) {
		return mayfly.Errorf(mayfly.EINVALID, "%s is not valid UTF-8", what)
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
func (b *Broker) createRequest(ctx context.Context, c Caller, in RequestInput, prepare func(*mayfly.Request) (then func(mayfly.Tx) error, skipSync bool, err error)) (*mayfly.Request, policy.Decision, error) {
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
	r.BreakGlass = d.Decision == policy.BreakGlassDecision
	auto := d.Decision == "auto" || d.Decision == "break_glass" || len(d.Steps) == 0
	if auto {
		r.State = mayfly.RequestApproved
		r.DecidedAt = now
	}
	var then func(mayfly.Tx) error
	if prepare != nil {
		var skip bool
		var err error
		if then, skip, err = prepare(r); err != nil {
			return nil, d, err
		}
		if skip {
			ctx = mayfly.SkipIntentSync(ctx)
		}
	}
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		// Sent with the next statement (PostgreSQL): nothing below
		// depends on it, and its error still fails the transaction.
		mayfly.DeferNextWrite(tx)
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

// canSee reports whether c may read request r: its requester, an admin,
// someone who approved it, or a member of the approver groups of any of
// its steps.
func (b *Broker) canSee(c Caller, r *mayfly.Request) bool {
	if c.Admin || r.Requester == c.User || b.canDecide(c, r) || slices.Contains(r.Approvers, c.User) {
		return true
	}
	for _, st := range r.Steps {
		if ok, _ := policy.CanApprove(policy.Step{Approvals: st.Approvals, ApproverGroups: st.ApproverGroups}, c.User, c.Groups, r.Requester); ok {
			return true
		}
	}
	return false
}

// stepText names the current approval step of r for messages: "step 2 of
// 2 (approver groups: admin)".
func stepText(r *mayfly.Request) string {
	groups := "approver groups: " + strings.Join(r.ApproverGroups, ", ")
	if len(r.Steps) > 1 {
		return fmt.Sprintf("step %d of %d (%s)", r.Step+1, len(r.Steps), groups)
	}
	return "its approval (" + groups + ")"
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

// ListRequests returns the requests matching f that the caller may see
// (an admin all, an approver those they may decide or did, a requester
// their own), in (CreatedAt, ID) order from f.After; with f.Limit, the
// first f.Limit of those. The store filters by visibility in its query,
// so the limit counts only what the caller may see.
func (b *Broker) ListRequests(ctx context.Context, c Caller, f mayfly.RequestFilter) ([]*mayfly.Request, error) {
	if !c.Admin {
		f.Viewer, f.ViewerGroups = c.User, c.Groups
	}
	out := []*mayfly.Request{}
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		for {
			page, err := tx.ListRequests(f)
			if err != nil {
				return err
			}
			// canSee decides; the store's filter should keep nothing
			// else, so this reads one page.
			for _, r := range page {
				if b.canSee(c, r) {
					out = append(out, r)
					if f.Limit > 0 && len(out) == f.Limit {
						return nil
					}
				}
			}
			if f.Limit <= 0 || len(page) < f.Limit {
				return nil
			}
			f.After = mayfly.PageCursor{CreatedAt: page[len(page)-1].CreatedAt, ID: page[len(page)-1].ID}
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Approve records c's approval of request id. The requester's own approval
// never counts and one approver counts once; the request is approved when
// the policy's approvals are all in. The final approval of an extension
// request applies the extension in the same step: it fails, recording
// nothing, when the extension cannot be applied, and ends the extension
// request when its lease is no longer active.
func (b *Broker) Approve(ctx context.Context, c Caller, id, reason string) (*mayfly.Request, error) {
	if err := CheckText("reason", reason); err != nil {
		return nil, err
	}
	var r *mayfly.Request
	var leaseEnded error
	final := false
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		var err error
		if r, err = b.approvable(tx, c, id); err != nil {
			return err
		}
		if r.ExtendsLease != "" {
			if err := b.extensionLeaseActive(tx, r); err != nil {
				// Nothing is left to approve: end the extension requests
				// of the lease, and say why.
				leaseEnded = err
				return b.endExtensions(tx, System, r.ExtendsLease, err.Error())
			}
			if completes(r) {
				final = true
				return nil // applied below, target first
			}
		}
		return b.recordApproval(tx, c, r, reason)
	})
	if err != nil {
		return nil, err
	}
	if leaseEnded != nil {
		b.committed()
		return nil, leaseEnded
	}
	if final {
		return b.approveExtension(ctx, c, id, reason)
	}
	b.decided(r)
	return r, nil
}

// decided reports a committed approval step or decision.
func (b *Broker) decided(r *mayfly.Request) {
	if r.State != mayfly.RequestPending && b.hooks.Decided != nil {
		b.hooks.Decided(r)
	}
	b.committed()
}

// approvable re-reads request id and checks that c may approve it now,
// with an error that says what is wrong when not.
func (b *Broker) approvable(tx mayfly.Tx, c Caller, id string) (*mayfly.Request, error) {
	r, err := tx.GetRequest(id)
	if err != nil {
		return nil, err
	}
	if r.Requester == c.User {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "you cannot approve your own request %s", id)
	}
	if !b.canSee(c, r) {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", id)
	}
	if r.State != mayfly.RequestPending {
		return nil, mayfly.Errorf(mayfly.ECONFLICT, "request %s is %s, not pending", id, r.State)
	}
	if ok, why := b.lapsed(r, b.clock.Now()); ok {
		return nil, mayfly.Errorf(mayfly.ECONFLICT, "request %s has lapsed: %s", id, why)
	}
	if slices.Contains(r.Approvers, c.User) {
		return nil, mayfly.Errorf(mayfly.ECONFLICT, "%s has already approved request %s, and one approver counts once; it now waits for %s",
			c.User, id, stepText(r))
	}
	if !b.canDecide(c, r) {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "%s is not an eligible approver of request %s now: it waits for %s",
			c.User, id, stepText(r))
	}
	return r, nil
}

// completes reports whether one more approval approves r.
func completes(r *mayfly.Request) bool {
	return r.StepApprovals+1 >= r.ApprovalsRequired && r.Step+1 >= len(r.Steps)
}

// recordApproval adds c's approval to r, moving it to its next step or to
// approved, with its audit events.
func (b *Broker) recordApproval(tx mayfly.Tx, c Caller, r *mayfly.Request, reason string) error {
	r.Approvers = append(r.Approvers, c.User)
	r.StepApprovals++
	data := map[string]string{"approvals": fmt.Sprintf("%d/%d", r.StepApprovals, r.ApprovalsRequired)}
	if len(r.Steps) > 1 {
		data["step"] = fmt.Sprintf("%d/%d", r.Step+1, len(r.Steps))
	}
	if r.ExtendsLease != "" {
		data["extends_lease"] = r.ExtendsLease
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
			if r.ExtendsLease != "" {
				r.LeaseID = r.ExtendsLease
			}
		}
	}
	if err := tx.UpdateRequest(r); err != nil {
		return err
	}
	if err := b.audit(tx, c, "request.approval", r, nil, reason, data); err != nil {
		return err
	}
	if done {
		ad := map[string]string{"approvers": strings.Join(r.Approvers, ",")}
		if r.ExtendsLease != "" {
			ad["extends_lease"] = r.ExtendsLease
		}
		return b.audit(tx, c, "request.approve", r, nil, reason, ad)
	}
	return nil
}

// extensionLeaseActive checks that the lease extension request r extends
// is still active: ECONFLICT, naming how it ended, when not.
func (b *Broker) extensionLeaseActive(tx mayfly.Tx, r *mayfly.Request) error {
	l, err := tx.GetLease(r.ExtendsLease)
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
		return mayfly.Errorf(mayfly.ECONFLICT, "extension request %s is void: lease %s does not exist", r.ID, r.ExtendsLease)
	}
	if err != nil {
		return err
	}
	if l.State != mayfly.LeaseActive {
		how := string(l.State)
		if l.EndReason != "" {
			how += " (" + l.EndReason + ")"
		}
		return mayfly.Errorf(mayfly.ECONFLICT, "extension request %s is void: lease %s is %s; nothing was approved", r.ID, l.ID, how)
	}
	return nil
}

// approveExtension records the final approval of extension request id and
// applies it: the target-side expiry moves first, then the lease and the
// request change together in one transaction. When the target cannot be
// changed, or the request or lease changed meanwhile, nothing is recorded.
func (b *Broker) approveExtension(ctx context.Context, c Caller, id, reason string) (*mayfly.Request, error) {
	var r *mayfly.Request
	var l *mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		if r, err = tx.GetRequest(id); err != nil {
			return err
		}
		l, err = tx.GetLease(r.ExtendsLease)
		return err
	})
	if err != nil {
		return nil, err
	}
	newExpiry := l.ExpiresAt.Add(r.Duration)
	if ext, ok := b.connectors[l.Target].(mayfly.Extender); ok {
		if err := ext.Extend(ctx, mayfly.ExtendRequest{LeaseID: l.ID, Username: l.Username, ExpiresAt: newExpiry}); err != nil {
			return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "request %s not approved: cannot extend lease %s on target %s now: %v; try again",
				id, l.ID, l.Target, Scrub(mayfly.ErrorMessageOrText(err)))
		}
	}
	var leaseEnded error
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		cur, err := b.approvable(tx, c, id)
		if err != nil {
			return err
		}
		if !completes(cur) {
			return mayfly.Errorf(mayfly.ECONFLICT, "request %s changed meanwhile; try again", id)
		}
		if err := b.extensionLeaseActive(tx, cur); err != nil {
			leaseEnded = err
			return b.endExtensions(tx, System, cur.ExtendsLease, err.Error())
		}
		lease, err := tx.GetLease(cur.ExtendsLease)
		if err != nil {
			return err
		}
		if !lease.ExpiresAt.Equal(l.ExpiresAt) {
			return mayfly.Errorf(mayfly.ECONFLICT, "lease %s changed meanwhile; try again", l.ID)
		}
		if err := b.recordApproval(tx, c, cur, reason); err != nil {
			return err
		}
		old := lease.ExpiresAt
		sessionBound := lease.DueAt.Before(lease.ExpiresAt)
		lease.ExpiresAt = newExpiry
		if !sessionBound {
			lease.DueAt = newExpiry
		}
		if err := tx.UpdateLease(lease); err != nil {
			return err
		}
		r = cur
		holder := Caller{User: cur.Requester, Source: c.Source}
		return b.audit(tx, holder, "lease.extend", nil, lease, cur.Reason, map[string]string{
			"by": cur.Duration.String(), "old_expires_at": old.Format(time.RFC3339), "expires_at": newExpiry.Format(time.RFC3339),
			"policy": cur.Policy, "request": cur.ID, "approvers": strings.Join(cur.Approvers, ",")})
	})
	if err != nil {
		return nil, err
	}
	if leaseEnded != nil {
		b.committed()
		return nil, leaseEnded
	}
	b.poke()
	b.decided(r)
	return r, nil
}

// Deny ends a pending request with a reason the requester is told. Only an
// eligible approver of its current step, or an admin, may deny it; the
// requester withdraws a request with Cancel.
func (b *Broker) Deny(ctx context.Context, c Caller, id, reason string) (*mayfly.Request, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "a denial needs a reason: the requester is told why")
	}
	if err := CheckText("reason", reason); err != nil {
		return nil, err
	}
	var r *mayfly.Request
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		var err error
		if r, err = b.deniable(tx, c, id); err != nil {
			return err
		}
		return b.closeRequest(tx, c, r, mayfly.RequestDenied, "request.deny", reason, nil)
	})
	if err != nil {
		return nil, err
	}
	b.decided(r)
	return r, nil
}

// CanDeny reports, with the error Deny would return, whether c may deny
// request id now; it changes nothing (a form asking for the reason is
// shown only to someone who may deny).
func (b *Broker) CanDeny(ctx context.Context, c Caller, id string) error {
	return b.store.View(ctx, func(tx mayfly.Tx) error {
		_, err := b.deniable(tx, c, id)
		return err
	})
}

// deniable re-reads request id and checks that c may deny it now.
func (b *Broker) deniable(tx mayfly.Tx, c Caller, id string) (*mayfly.Request, error) {
	r, err := tx.GetRequest(id)
	if err != nil {
		return nil, err
	}
	if r.Requester == c.User {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "you cannot deny your own request %s; withdraw it with cancel", id)
	}
	if !b.canSee(c, r) {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", id)
	}
	if r.State != mayfly.RequestPending {
		return nil, mayfly.Errorf(mayfly.ECONFLICT, "request %s is %s, not pending", id, r.State)
	}
	if !c.Admin && !b.canDecide(c, r) {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "%s may not deny request %s now: it waits for %s", c.User, id, stepText(r))
	}
	return r, nil
}

// Cancel withdraws c's own request while it is pending, or approved and
// not yet activated. Only the requester may cancel; approvers deny.
func (b *Broker) Cancel(ctx context.Context, c Caller, id, reason string) (*mayfly.Request, error) {
	if err := CheckText("reason", reason); err != nil {
		return nil, err
	}
	var r *mayfly.Request
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		var err error
		if r, err = tx.GetRequest(id); err != nil {
			return err
		}
		if !b.canSee(c, r) {
			return mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", id)
		}
		if r.Requester != c.User {
			return mayfly.Errorf(mayfly.EFORBIDDEN, "only %s, who made request %s, can cancel it; deny it with a reason instead", r.Requester, id)
		}
		if r.State != mayfly.RequestPending && !(r.State == mayfly.RequestApproved && r.LeaseID == "") {
			return mayfly.Errorf(mayfly.ECONFLICT, "request %s is %s; only a pending request, or an approved one not yet used, can be cancelled", id, r.State)
		}
		return b.closeRequest(tx, c, r, mayfly.RequestCancelled, "request.cancel", reason, nil)
	})
	if err != nil {
		return nil, err
	}
	b.decided(r)
	return r, nil
}

// closeRequest records, in tx, that c ended request r in state (denied,
// cancelled) for reason, with its audit event.
func (b *Broker) closeRequest(tx mayfly.Tx, c Caller, r *mayfly.Request, state mayfly.RequestState, action, reason string, data map[string]string) error {
	r.State = state
	r.Decider, r.DecisionReason, r.DecidedAt = c.User, reason, b.clock.Now().UTC()
	if err := tx.UpdateRequest(r); err != nil {
		return fmt.Errorf("%s request %s: %w", action, r.ID, err)
	}
	return b.audit(tx, c, action, r, nil, reason, data)
}
