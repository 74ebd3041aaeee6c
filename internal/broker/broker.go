// Package broker orchestrates requests, approvals, activation and
// revocation: the lease state machine. Every state change is committed with
// its audit event in one store transaction, the lease row is committed as
// provisioning before a target is touched, and revocation is handed to the
// scheduler, which retries until it succeeds.
package broker

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// Caller is the authenticated identity behind an API call.
type Caller struct {
	User   string
	Groups []string
	Admin  bool
	// Source is the remote address of the call.
	Source string
}

// Config is the part of the configuration the broker acts on. It can be
// swapped at run time (policy reload) with SetConfig.
type Config struct {
	Targets  map[string]mayfly.Target
	Policies *policy.Set
	// Users maps a user name to its groups, for approver eligibility.
	Users map[string][]string
	// UserOrder lists user names in configuration order.
	UserOrder []string
}

// Options tune a Broker.
type Options struct {
	Store      mayfly.Store
	Clock      mayfly.Clock
	Logger     *slog.Logger
	Connectors map[string]mayfly.Connector
	// HMACKey keys the hashes of issued secrets kept for correlation.
	HMACKey []byte
	// ProvisionTimeout bounds one provisioning call; a provisioning lease
	// older than this is undone by recovery (default 2m).
	ProvisionTimeout time.Duration
	// MaxBackoff caps the delay between revocation retries (default 1m).
	MaxBackoff time.Duration
	// Hooks for fault-injection tests; nil in production.
	AfterIntent func(l *mayfly.Lease)
	// Hooks observe what happens, for metrics and alerts.
	Hooks Hooks
}

// Hooks observe the broker; every field may be nil.
type Hooks struct {
	// Revoked is called after a revocation attempt: lag is how late a
	// successful revocation of an expired lease was; err is the failure.
	Revoked func(l *mayfly.Lease, lag time.Duration, err error)
	// Orphan is called for each orphan account found on a target.
	Orphan func(target, account string)
	// Requested is called for each policy decision on a new request.
	Requested func(decision string)
	// Decided is called when a request reaches approved or denied after
	// waiting for people.
	Decided func(r *mayfly.Request)
	// Committed is called after each committed state change, so audit
	// sinks and notifiers can look for new events now.
	Committed func()
}

// Broker is the request/lease state machine.
type Broker struct {
	store       mayfly.Store
	clock       mayfly.Clock
	log         *slog.Logger
	connectors  map[string]mayfly.Connector
	hmacKey     []byte
	provTO      time.Duration
	maxBackoff  time.Duration
	cfg         atomic.Pointer[Config]
	afterIntent func(l *mayfly.Lease)
	hooks       Hooks

	wake     chan struct{}
	nextWake atomic.Int64 // unix ns the scheduler sleeps until; 0 while awake
	changeMu sync.Mutex
	changed  chan struct{}
	users    userStatuses
	overdue  overdue
	idle     idleTracker
}

// New returns a Broker.
func New(cfg *Config, o Options) *Broker {
	if o.Clock == nil {
		o.Clock = mayfly.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ProvisionTimeout == 0 {
		o.ProvisionTimeout = 2 * time.Minute
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = time.Minute
	}
	b := &Broker{
		store: o.Store, clock: o.Clock, log: o.Logger, connectors: o.Connectors,
		hmacKey: o.HMACKey, provTO: o.ProvisionTimeout, maxBackoff: o.MaxBackoff,
		afterIntent: o.AfterIntent, hooks: o.Hooks,
		wake:    make(chan struct{}, 1),
		changed: make(chan struct{}),
	}
	b.cfg.Store(cfg)
	return b
}

// SetConfig swaps the configuration (targets, policies, users).
func (b *Broker) SetConfig(cfg *Config) { b.cfg.Store(cfg) }

// Config returns the configuration in force.
func (b *Broker) Config() *Config { return b.cfg.Load() }

// Now is the broker's clock.
func (b *Broker) Now() time.Time { return b.clock.Now() }

// Store returns the broker's store.
func (b *Broker) Store() mayfly.Store { return b.store }

// Wake returns a channel that receives when a new deadline may be nearer
// than the scheduler's current sleep.
func (b *Broker) Wake() <-chan struct{} { return b.wake }

func (b *Broker) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// pokeAt wakes the scheduler only when a deadline at t is earlier than the
// one it sleeps until (or it is awake), so issuing long leases does not
// wake it at all.
func (b *Broker) pokeAt(t time.Time) {
	if nw := b.nextWake.Load(); nw == 0 || t.UnixNano() < nw {
		b.poke()
	}
}

var idEncoding = base32.NewEncoding("abcdefghijkmnpqrstuvwxyz23456789").WithPadding(base32.NoPadding)

// NewID returns a random id with the given prefix, e.g. "req_…".
func NewID(prefix string) string {
	b := make([]byte, 10)
	rand.Read(b)
	return prefix + idEncoding.EncodeToString(b)
}

// HashSecret returns the keyed HMAC by which an issued secret is recorded.
func (b *Broker) HashSecret(secret string) string {
	m := hmac.New(sha256.New, b.hmacKey)
	m.Write([]byte(secret))
	return hex.EncodeToString(m.Sum(nil))
}

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

// Activation is the result of Activate: the lease and its credential,
// shown once.
type Activation struct {
	Lease      *mayfly.Lease
	Credential mayfly.Credential
}

// ActivateOptions carry optional inputs to activation.
type ActivateOptions struct {
	// PublicKey is an SSH public key to sign instead of generating a pair.
	PublicKey string
	// SessionTimeout, when set, binds the lease to its client's session:
	// without a heartbeat for this long the lease is revoked (end reason
	// session_lost).
	SessionTimeout time.Duration
}

// Activate creates the account for an approved request now and returns
// the credential once. A second activation of the same request is refused.
func (b *Broker) Activate(ctx context.Context, c Caller, requestID string, o ActivateOptions) (*Activation, error) {
	var l *mayfly.Lease
	var grant mayfly.Grant
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		r, err := tx.GetRequest(requestID)
		if err != nil {
			return err
		}
		l, grant, err = b.intent(tx, c, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	return b.provision(ctx, c, l, grant, o, nil)
}

// CreateAndActivate records a request and, when policy approves it at once,
// activates it in the same transaction: one commit from request to intent.
// On a target that can create an account in an open transaction, the
// creation is sent while that commit runs and committed after it (see
// mayfly.PreparedProvisioner). A request that needs approval is returned
// pending with a nil Activation.
func (b *Broker) CreateAndActivate(ctx context.Context, c Caller, in RequestInput, o ActivateOptions) (*mayfly.Request, policy.Decision, *Activation, error) {
	var l *mayfly.Lease
	var grant mayfly.Grant
	var st *staged
	r, d, err := b.createRequest(ctx, c, in, func(r *mayfly.Request) (func(mayfly.Tx) error, error) {
		if r.State != mayfly.RequestApproved {
			return nil, nil
		}
		var err error
		if l, grant, err = b.newLease(c, r); err != nil {
			return nil, err
		}
		r.LeaseID = l.ID
		st = b.stage(ctx, l, grant, o)
		return func(tx mayfly.Tx) error { return b.recordIntent(tx, c, r, l) }, nil
	})
	if err != nil {
		st.abort()
		return r, d, nil, err
	}
	if l == nil {
		return r, d, nil, nil
	}
	a, err := b.provision(ctx, c, l, grant, o, st)
	return r, d, a, err
}

// staged is an account creation sent to the target, uncommitted, while the
// lease's intent is being recorded.
type staged struct {
	p      mayfly.PreparedProvision
	cancel context.CancelFunc
}

// stage sends the creation of l's account in an open transaction to its
// target, when its connector can; nil otherwise, or when it could not be
// sent (Provision then tries after the intent is recorded, as usual).
func (b *Broker) stage(ctx context.Context, l *mayfly.Lease, grant mayfly.Grant, o ActivateOptions) *staged {
	pp, ok := b.connectors[l.Target].(mayfly.PreparedProvisioner)
	if !ok {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, b.provTO)
	p, err := pp.PrepareProvision(pctx, provisionRequest(l, grant, o))
	if err != nil {
		cancel()
		return nil
	}
	return &staged{p: p, cancel: cancel}
}

// abort rolls a staged creation back.
func (st *staged) abort() {
	if st == nil {
		return
	}
	st.p.Abort()
	st.cancel()
}

func provisionRequest(l *mayfly.Lease, grant mayfly.Grant, o ActivateOptions) mayfly.ProvisionRequest {
	return mayfly.ProvisionRequest{
		LeaseID: l.ID, Username: l.Username, Grant: grant, ExpiresAt: l.ExpiresAt, PublicKey: o.PublicKey,
	}
}

// intent checks that r can be activated by c and records the lease as
// provisioning, with its account name, in tx: intent before action.
func (b *Broker) intent(tx mayfly.Tx, c Caller, r *mayfly.Request) (*mayfly.Lease, mayfly.Grant, error) {
	if r.LeaseID != "" {
		prev, err := tx.GetLease(r.LeaseID)
		if err != nil {
			return nil, mayfly.Grant{}, err
		}
		if prev.State != mayfly.LeaseFailed {
			return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.ECONFLICT, "credentials for request %s were already issued (lease %s); they are shown only once — request access again for new ones", r.ID, prev.ID)
		}
	}
	l, grant, err := b.newLease(c, r)
	if err != nil {
		return nil, mayfly.Grant{}, err
	}
	r.LeaseID = l.ID
	if err := tx.UpdateRequest(r); err != nil {
		return nil, mayfly.Grant{}, err
	}
	return l, grant, b.recordIntent(tx, c, r, l)
}

// newLease checks that c may activate r now and builds its lease, not yet
// recorded.
func (b *Broker) newLease(c Caller, r *mayfly.Request) (*mayfly.Lease, mayfly.Grant, error) {
	cfg := b.cfg.Load()
	if r.ExtendsLease != "" {
		return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.ECONFLICT, "request %s extends lease %s; it takes effect when approved, there is nothing to activate", r.ID, r.ExtendsLease)
	}
	if r.Requester != c.User {
		if !b.canSee(c, r) {
			return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", r.ID)
		}
		return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.EFORBIDDEN, "only %s, who requested %s, can activate it", r.Requester, r.ID)
	}
	if ok, why := b.lapsed(r, b.clock.Now()); ok {
		return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.ECONFLICT, "request %s has lapsed: %s; request access again", r.ID, why)
	}
	switch r.State {
	case mayfly.RequestApproved:
	case mayfly.RequestPending:
		return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.ECONFLICT, "request %s is still pending approval (%d of %d approvals)", r.ID, r.StepApprovals, r.ApprovalsRequired)
	default:
		return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.ECONFLICT, "request %s is %s", r.ID, r.State)
	}
	target, ok := cfg.Targets[r.Target]
	if !ok {
		return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.ENOTFOUND, "target %q is no longer configured", r.Target)
	}
	grant, ok := target.Grants[r.Grant]
	if !ok {
		return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.ENOTFOUND, "target %q no longer has grant %q", r.Target, r.Grant)
	}
	if _, ok := b.connectors[r.Target]; !ok {
		return nil, mayfly.Grant{}, mayfly.Errorf(mayfly.EUNAVAILABLE, "target %q has no connector", r.Target)
	}
	now := b.clock.Now().UTC()
	l := &mayfly.Lease{
		ID: NewID("lse_"), RequestID: r.ID, Requester: r.Requester, Target: r.Target, Grant: r.Grant,
		Username: AccountName(target, r.Requester), State: mayfly.LeaseProvisioning,
		CreatedAt: now, ExpiresAt: now.Add(r.Duration), DueAt: now.Add(b.provTO),
	}
	return l, grant, nil
}

// recordIntent writes a new provisioning lease and its audit event.
func (b *Broker) recordIntent(tx mayfly.Tx, c Caller, r *mayfly.Request, l *mayfly.Lease) error {
	if err := tx.CreateLease(l); err != nil {
		return err
	}
	return b.audit(tx, c, "lease.intent", nil, l, r.Reason, map[string]string{"username": l.Username, "expires_at": l.ExpiresAt.Format(time.RFC3339)})
}

// provision creates the account of a lease recorded as provisioning and
// marks it active; on failure the lease is handed to the scheduler to undo.
// With st, the creation was staged on the target while the intent was
// recorded: it is committed now, while the activation is recorded.
func (b *Broker) provision(ctx context.Context, c Caller, l *mayfly.Lease, grant mayfly.Grant, o ActivateOptions, st *staged) (*Activation, error) {
	if b.afterIntent != nil {
		b.afterIntent(l)
	}
	if st != nil {
		if a, done, err := b.commitStaged(ctx, c, l, o, st); done {
			return a, err
		}
	}
	pctx, cancel := context.WithTimeout(ctx, b.provTO)
	res, err := b.connectors[l.Target].Provision(pctx, provisionRequest(l, grant, o))
	cancel()
	if err != nil {
		return nil, b.provisionFailed(ctx, c, l, err)
	}
	a, err := b.activate(ctx, c, l, res.Credential, o)
	if err != nil {
		// The account exists but is not recorded active: the lease stays
		// provisioning in the store and recovery undoes it.
		return nil, err
	}
	return a, nil
}

// commitStaged finishes a creation staged while the intent was recorded:
// once the target has done it, the commit is sent and the activation
// recorded while the target commits. done is false when the creation could
// not be staged (the account existed) and must be provisioned normally.
func (b *Broker) commitStaged(ctx context.Context, c Caller, l *mayfly.Lease, o ActivateOptions, st *staged) (*Activation, bool, error) {
	defer st.cancel()
	res, err := st.p.Wait()
	if errors.Is(err, mayfly.ErrNotStaged) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, b.provisionFailed(ctx, c, l, err)
	}
	committed := st.p.Commit()
	a, aerr := b.activate(ctx, c, l, res.Credential, o)
	if err := committed(); err != nil {
		// The outcome is unknown: undo whatever may exist, whether or not
		// the activation was recorded.
		return nil, true, b.provisionFailed(ctx, c, l, err)
	}
	if aerr != nil {
		// As in provision: recovery undoes the lease left provisioning.
		return nil, true, aerr
	}
	return a, true, nil
}

// provisionFailed records that creating l's account failed and hands the
// lease to the scheduler, which revokes whatever may exist and marks it
// failed. It returns the error for the caller.
func (b *Broker) provisionFailed(ctx context.Context, c Caller, l *mayfly.Lease, perr error) error {
	b.log.Error("provision failed", "lease", l.ID, "target", l.Target, "err", Scrub(perr.Error()))
	uerr := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		l.State, l.EndReason, l.DueAt = mayfly.LeaseRevoking, mayfly.EndFailed, b.clock.Now().UTC()
		l.LastError = Scrub(perr.Error())
		if err := tx.UpdateLease(l); err != nil {
			return err
		}
		return b.audit(tx, c, "lease.provision_failed", nil, l, l.LastError, nil)
	})
	b.poke()
	if uerr != nil {
		return fmt.Errorf("record provisioning failure of lease %s: %w", l.ID, uerr)
	}
	if mayfly.ErrorCode(perr) != mayfly.EINTERNAL {
		return perr
	}
	return mayfly.Errorf(mayfly.EUNAVAILABLE, "could not create the account on target %q: %s", l.Target, Scrub(perr.Error()))
}

// activate records l active with cred's fingerprint and returns the
// activation.
func (b *Broker) activate(ctx context.Context, c Caller, l *mayfly.Lease, cred mayfly.Credential, o ActivateOptions) (*Activation, error) {
	if cred.Username == "" {
		cred.Username = l.Username
	}
	// The lease and its credential's fingerprint as they will be recorded.
	active := *l
	active.State, active.DueAt = mayfly.LeaseActive, l.ExpiresAt
	data := map[string]string{"username": l.Username, "expires_at": l.ExpiresAt.Format(time.RFC3339)}
	if o.SessionTimeout > 0 {
		active.DueAt = sessionDue(l, b.clock.Now().UTC(), o.SessionTimeout)
		data["session_bound"] = "true"
		data["heartbeat_timeout"] = o.SessionTimeout.String()
	}
	if s := cred.Secrets(); len(s) > 0 {
		active.SecretHMAC = b.HashSecret(s[0])
		data["secret_hmac"] = active.SecretHMAC
	}
	err := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		if err := tx.UpdateLease(&active); err != nil {
			return err
		}
		return b.audit(tx, c, "lease.activate", nil, &active, "", data)
	})
	if err != nil {
		return nil, fmt.Errorf("record activation of lease %s: %w", l.ID, err)
	}
	b.pokeAt(active.DueAt)
	b.committed()
	return &Activation{Lease: &active, Credential: cred}, nil
}

// AccountName builds an account name for user from the target's template:
// {prefix}{user}_{random}, with the user part reduced to [a-z0-9] and the
// whole within the target kind's limit.
func AccountName(t mayfly.Target, user string) string {
	limit := 63
	switch t.Kind {
	case mayfly.KindMySQL:
		limit = 32
	case mayfly.KindSSH:
		limit = 32 // Linux user names
	}
	var clean strings.Builder
	for _, r := range strings.ToLower(user) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			clean.WriteRune(r)
		}
	}
	u := clean.String()
	if u == "" {
		u = "u"
	}
	rnd := make([]byte, 5)
	rand.Read(rnd)
	random := idEncoding.EncodeToString(rnd) // 8 chars
	tmpl := t.NameTemplate
	if tmpl == "" {
		tmpl = "{prefix}{user}_{random}"
	}
	prefix := t.Prefix
	if prefix == "" {
		prefix = mayfly.DefaultPrefix
	}
	fixed := len(strings.NewReplacer("{prefix}", prefix, "{user}", "", "{random}", random).Replace(tmpl))
	if room := limit - fixed; len(u) > room {
		if room < 1 {
			room = 1
		}
		u = u[:room]
	}
	name := strings.NewReplacer("{prefix}", prefix, "{user}", u, "{random}", random).Replace(tmpl)
	if len(name) > limit {
		name = name[:limit]
	}
	return name
}

// FindLease resolves id, a lease id or a request id, to a lease the caller
// may act on.
func (b *Broker) FindLease(ctx context.Context, c Caller, id string) (*mayfly.Lease, error) {
	var l *mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		if strings.HasPrefix(id, "req_") {
			r, err := tx.GetRequest(id)
			if err != nil {
				return err
			}
			if r.LeaseID == "" {
				return mayfly.Errorf(mayfly.ENOTFOUND, "request %s has no lease (credentials were never issued)", id)
			}
			id = r.LeaseID
		}
		var err error
		l, err = tx.GetLease(id)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !c.Admin && l.Requester != c.User {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "lease %q not found", id)
	}
	return l, nil
}

// ListLeases returns leases the caller may see: admins all, others their own.
func (b *Broker) ListLeases(ctx context.Context, c Caller, f mayfly.LeaseFilter) ([]*mayfly.Lease, error) {
	if !c.Admin {
		f.Requester = c.User
	}
	var out []*mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		out, err = tx.ListLeases(f)
		return err
	})
	if out == nil {
		out = []*mayfly.Lease{}
	}
	return out, err
}

// EndLease ends a lease early: "done" by its holder (or an admin), or
// "revoked" by an admin. The account is revoked right away; if the target
// fails, the scheduler keeps retrying.
func (b *Broker) EndLease(ctx context.Context, c Caller, id, endReason, note string) (*mayfly.Lease, error) {
	// A lease whose activation is being recorded right now is given a
	// moment to finish.
	for wait := 0; ; wait++ {
		l, err := b.endLease(ctx, c, id, endReason, note)
		if err != errProvisioning {
			return l, err
		}
		if wait == 200 {
			return nil, mayfly.Errorf(mayfly.ECONFLICT, "lease %s is still being provisioned; try again in a moment", id)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var errProvisioning = errors.New("lease is provisioning")

func (b *Broker) endLease(ctx context.Context, c Caller, id, endReason, note string) (*mayfly.Lease, error) {
	l, err := b.FindLease(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if endReason == mayfly.EndRevoked && !c.Admin && l.Requester != c.User {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "only an admin can revoke another user's lease")
	}
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		cur, err := tx.GetLease(l.ID)
		if err != nil {
			return err
		}
		l = cur
		switch l.State {
		case mayfly.LeaseActive:
		case mayfly.LeaseRevoking:
			return nil // already on its way out
		case mayfly.LeaseProvisioning:
			return errProvisioning
		default:
			return mayfly.Errorf(mayfly.ECONFLICT, "lease %s has already ended (%s, %s)", l.ID, l.State, l.EndReason)
		}
		l.State, l.EndReason, l.DueAt = mayfly.LeaseRevoking, endReason, b.clock.Now().UTC()
		if err := tx.UpdateLease(l); err != nil {
			return err
		}
		action := "lease.done"
		if endReason == mayfly.EndRevoked {
			action = "lease.revoke"
		}
		return b.audit(tx, c, action, nil, l, note, nil)
	})
	if err != nil {
		return nil, err
	}
	if l.State == mayfly.LeaseRevoking {
		b.RevokeNow(ctx, l)
	}
	return b.getLease(ctx, l.ID)
}

func (b *Broker) getLease(ctx context.Context, id string) (*mayfly.Lease, error) {
	var l *mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		l, err = tx.GetLease(id)
		return err
	})
	return l, err
}

// RevokeNow attempts the revocation of a lease already marked revoking and
// records the outcome: revoked (or failed, when undoing a provisioning), or
// a failed attempt with the next retry time.
func (b *Broker) RevokeNow(ctx context.Context, l *mayfly.Lease) {
	err := b.revokeOnTarget(ctx, l)
	if rerr := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		return b.recordRevocation(tx, l, err)
	}); rerr != nil {
		b.log.Error("record revocation", "lease", l.ID, "err", rerr)
	}
	b.poke()
	b.committed()
}

// revokeOnTarget calls the target's connector.
func (b *Broker) revokeOnTarget(ctx context.Context, l *mayfly.Lease) error {
	conn, ok := b.connectors[l.Target]
	if !ok {
		return fmt.Errorf("target %q has no connector (removed from the configuration?)", l.Target)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return conn.Revoke(rctx, mayfly.RevokeRequest{LeaseID: l.ID, Username: l.Username, ExpiresAt: l.ExpiresAt})
}

// recordRevocation writes the outcome of one revocation attempt in tx. l
// carries the end reason the scheduler decided (expired, session_lost,
// provisioning_failed) when the stored lease does not have one yet.
func (b *Broker) recordRevocation(tx mayfly.Tx, l *mayfly.Lease, rerr error) error {
	cur, err := tx.GetLease(l.ID)
	if err != nil {
		return err
	}
	if !cur.State.Live() {
		return nil // someone else finished it
	}
	now := b.clock.Now().UTC()
	if cur.EndReason == "" {
		cur.EndReason = l.EndReason
	}
	if cur.State == mayfly.LeaseProvisioning && cur.EndReason == "" {
		cur.EndReason = mayfly.EndFailed
	}
	if cur.State == mayfly.LeaseActive && rerr != nil {
		// The expiry (or lost session) is recorded before the failure; on
		// success the single lease.revoked event says both (end_reason).
		action, why := "lease.expire", "lease expired"
		if cur.EndReason == mayfly.EndSessionLost {
			action, why = "lease.session_lost", "no heartbeat from the client"
		}
		if err := b.audit(tx, System, action, nil, cur, why, map[string]string{"expires_at": cur.ExpiresAt.Format(time.RFC3339Nano)}); err != nil {
			return err
		}
	}
	if rerr != nil {
		cur.State = mayfly.LeaseRevoking
		cur.RevokeAttempts++
		cur.LastError = Scrub(rerr.Error())
		delay := Backoff(cur.RevokeAttempts, b.maxBackoff)
		cur.DueAt = now.Add(delay)
		*l = *cur
		if err := tx.UpdateLease(cur); err != nil {
			return err
		}
		b.log.Warn("revocation failed; will retry", "lease", cur.ID, "target", cur.Target, "attempt", cur.RevokeAttempts, "retry_in", delay.String(), "err", cur.LastError)
		if b.hooks.Revoked != nil {
			b.hooks.Revoked(cur, 0, rerr)
		}
		return b.audit(tx, System, "lease.revoke_failed", nil, cur, cur.LastError,
			map[string]string{"attempt": fmt.Sprint(cur.RevokeAttempts), "retry_at": cur.DueAt.Format(time.RFC3339Nano)})
	}
	cur.State = mayfly.LeaseRevoked
	action := "lease.revoked"
	if cur.EndReason == mayfly.EndFailed {
		cur.State, action = mayfly.LeaseFailed, "lease.undone"
	}
	cur.EndedAt, cur.LastError = now, ""
	*l = *cur
	if err := tx.UpdateLease(cur); err != nil {
		return err
	}
	data := map[string]string{"username": cur.Username, "end_reason": cur.EndReason, "verified_absent": "true"}
	var lag time.Duration = -1
	if !cur.ExpiresAt.IsZero() && cur.EndReason == mayfly.EndExpired {
		lag = now.Sub(cur.ExpiresAt)
		data["lag"] = lag.String()
	}
	if b.hooks.Revoked != nil {
		b.hooks.Revoked(cur, lag, nil)
	}
	return b.audit(tx, System, action, nil, cur, cur.EndReason, data)
}

// Backoff returns the delay before revocation attempt n+1: exponential from
// 1s, capped at max, with up to 20% jitter.
func Backoff(attempt int, max time.Duration) time.Duration {
	d := time.Second
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	var j [2]byte
	rand.Read(j[:])
	jitter := time.Duration(int64(d) / 5 * int64(uint16(j[0])<<8|uint16(j[1])) / 65536)
	return d - jitter
}

// Scrub removes what looks like a password from error text: URL userinfo
// passwords and password=... settings.
func Scrub(s string) string {
	s = scrubURL.ReplaceAllString(s, "$1:[REDACTED]@")
	s = scrubKV.ReplaceAllString(s, "${1}[REDACTED]")
	return s
}

var (
	scrubURL = regexp.MustCompile(`(://[^:/@\s]+):[^@\s]*@`)
	scrubKV  = regexp.MustCompile(`(?i)((?:password|passwd|pwd)\s*[=:]\s*)\S+`)
)
