package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

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
//
// Where the target can create an account in an open transaction, the
// creation is staged while the intent is recorded, as in CreateAndActivate
// (see activateStaged); otherwise the intent is recorded, then the
// account created, then the activation recorded.
func (b *Broker) Activate(ctx context.Context, c Caller, requestID string, o ActivateOptions) (*Activation, error) {
	if a, done, err := b.activateStaged(ctx, c, requestID, o); done {
		return a, err
	}
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

// errStageRaced ends the transaction of activateStaged when the request
// changed since it was read: the activation starts over without staging.
var errStageRaced = errors.New("request changed while its account was staged")

// activateStaged is Activate for a request whose target can stage the
// account's creation (mayfly.PreparedProvisioner): the request is read and
// checked, the creation sent to the target in an open transaction, and the
// intent recorded meanwhile, in a transaction that takes the request
// again, locked, and goes on only if it is still approved and unused. On
// a durable store, when the credential is known before the target answers
// (recordedActivation), that transaction records the activation too, and
// the target's commit follows it (commitRecorded): one store commit
// instead of two, overlapped with the creation, with the lease durable
// before the account can exist. done is false when Activate must take its
// usual path: nothing to stage, the request unfit (the usual path gives the
// precise error, from a locked read), or changed meanwhile; what was staged
// is then rolled back.
func (b *Broker) activateStaged(ctx context.Context, c Caller, requestID string, o ActivateOptions) (_ *Activation, done bool, _ error) {
	if !b.canStage() {
		return nil, false, nil
	}
	var r *mayfly.Request
	if err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = tx.GetRequest(requestID)
		return err
	}); err != nil || r.LeaseID != "" {
		return nil, false, nil
	}
	if _, ok := b.connectors[r.Target].(mayfly.PreparedProvisioner); !ok {
		return nil, false, nil
	}
	l, grant, err := b.newLease(c, r, true)
	if err != nil {
		return nil, false, nil
	}
	st, serr := b.stage(ctx, l, grant, o)
	if st == nil && serr == nil {
		return nil, false, nil
	}
	act, cred, data := b.recordedActivation(l, o, st)
	release := func() {}
	if act != nil {
		// Revocations of the lease, active once this commits, wait until
		// the target has committed its account.
		release = b.holdRevocations(l.ID)
	}
	uctx := ctx
	if act == nil && b.intentSyncSkippable(r.Target) {
		uctx = mayfly.SkipIntentSync(ctx)
	}
	err = b.store.Update(uctx, func(tx mayfly.Tx) error {
		cur, err := tx.GetRequest(requestID)
		if err != nil {
			return err
		}
		if lapsed, _ := b.lapsed(cur, b.clock.Now()); lapsed || cur.State != mayfly.RequestApproved || cur.LeaseID != "" || cur.Requester != r.Requester {
			return errStageRaced
		}
		cur.LeaseID = l.ID
		if err := tx.UpdateRequest(cur); err != nil {
			return err
		}
		return b.recordStaged(tx, c, cur, l, act, data)
	})
	if err != nil {
		st.abort()
		release()
		if errors.Is(err, errStageRaced) {
			return nil, false, nil
		}
		return nil, true, err
	}
	if serr != nil {
		return nil, true, b.provisionFailed(ctx, c, l, serr)
	}
	if act != nil {
		b.committed()
		a, err := b.commitRecorded(ctx, c, act, cred, st, release)
		return a, true, err
	}
	a, err := b.provision(ctx, c, l, grant, o, st)
	return a, true, err
}

// recordStaged records in tx the intent of lease l of request r or, when
// its activation is recorded with it (act and its audit data, from
// recordedActivation), act with its lease.intent and lease.activate
// events.
func (b *Broker) recordStaged(tx mayfly.Tx, c Caller, r *mayfly.Request, l, act *mayfly.Lease, data map[string]string) error {
	if act == nil {
		return b.recordIntent(tx, c, r, l)
	}
	if err := b.recordIntent(tx, c, r, act); err != nil {
		return err
	}
	return b.audit(tx, c, "lease.activate", nil, act, "", data)
}

// intentSyncSkippable reports whether the intent of a staged creation on
// target need not wait for the sync of the store's log. A PostgreSQL role
// carries this installation's mark in its comment, committed with the
// role, and VALID UNTIL: an intent lost to an OS crash leaves a role the
// reconciler recognises as its own and that expires by itself
// (docs/benchmarks.md, Durability). Without an installation key the role
// would only be reported, so the intent is synced.
func (b *Broker) intentSyncSkippable(target string) bool {
	t := b.cfg.Load().Targets[target]
	return t.Kind == mayfly.KindPostgres && t.InstanceKeyEnv != ""
}

// canStage reports whether any target's connector can stage a creation
// (mayfly.PreparedProvisioner): only then does Activate read the request
// before its transaction.
func (b *Broker) canStage() bool {
	for _, cn := range b.connectors {
		if _, ok := cn.(mayfly.PreparedProvisioner); ok {
			return true
		}
	}
	return false
}

// CreateAndActivate records a request and, when policy approves it at once,
// activates it in the same transaction: one commit from request to intent.
// On a target that can create an account in an open transaction, the
// creation is sent while that commit runs and committed after it (see
// mayfly.PreparedProvisioner). Where the store's commits are durable
// anyway (mayfly.DurableCommitter) and the credential is known before the
// target answers (mayfly.PreparedCredential), that commit records the
// activation too: one commit in all, then the target's (see
// commitRecorded). A request that needs approval is returned pending with
// a nil Activation.
func (b *Broker) CreateAndActivate(ctx context.Context, c Caller, in RequestInput, o ActivateOptions) (*mayfly.Request, policy.Decision, *Activation, error) {
	var l, act *mayfly.Lease
	var grant mayfly.Grant
	var st *staged
	var serr error
	var cred mayfly.Credential
	release := func() {}
	r, d, err := b.createRequest(ctx, c, in, func(r *mayfly.Request) (func(mayfly.Tx) error, bool, error) {
		if r.State != mayfly.RequestApproved {
			return nil, false, nil
		}
		var err error
		if l, grant, err = b.newLease(c, r, false); err != nil {
			return nil, false, err
		}
		r.LeaseID = l.ID
		st, serr = b.stage(ctx, l, grant, o)
		var data map[string]string
		act, cred, data = b.recordedActivation(l, o, st)
		if act != nil {
			// Revocations of the lease, active once this commits, wait
			// until the target has committed its account.
			release = b.holdRevocations(l.ID)
		}
		skip := act == nil && b.intentSyncSkippable(r.Target)
		return func(tx mayfly.Tx) error { return b.recordStaged(tx, c, r, l, act, data) }, skip, nil
	})
	if err != nil {
		st.abort()
		release()
		return r, d, nil, err
	}
	if l == nil {
		return r, d, nil, nil
	}
	if serr != nil {
		return r, d, nil, b.provisionFailed(ctx, c, l, serr)
	}
	if act != nil {
		a, err := b.commitRecorded(ctx, c, act, cred, st, release)
		return r, d, a, err
	}
	a, err := b.provision(ctx, c, l, grant, o, st)
	return r, d, a, err
}

// recordedActivation returns l as it is once active, its credential and
// its activation's audit data, when the activation can be recorded in the
// commit of l's intent: the creation is staged, its credential known, the
// store's commits durable, and the user receives the account's own
// credential (not the gateway's). Otherwise act is nil.
func (b *Broker) recordedActivation(l *mayfly.Lease, o ActivateOptions, st *staged) (act *mayfly.Lease, cred mayfly.Credential, data map[string]string) {
	if st == nil || b.viaGateway(l) {
		return nil, cred, nil
	}
	if dc, ok := b.store.(mayfly.DurableCommitter); !ok || !dc.CommitsDurably() {
		return nil, cred, nil
	}
	pc, ok := st.p.(mayfly.PreparedCredential)
	if !ok {
		return nil, cred, nil
	}
	cred = pc.Credential()
	if cred.Username == "" {
		cred.Username = l.Username
	}
	var secretHMAC string
	data = activationData(l, o)
	if s := cred.Secrets(); len(s) > 0 {
		secretHMAC = b.HashSecret(s[0])
		data["secret_hmac"] = secretHMAC
	}
	a := *l
	b.activated(&a, secretHMAC, o)
	return &a, cred, data
}

// commitRecorded finishes a one-call issue whose activation was recorded
// with its intent: once the target has made the account, its commit is
// sent and awaited, and the credential returned. The store knew of the
// lease before the account could exist, as always (intent before action).
// A creation that fails, or whose commit's outcome is unknown, makes the
// lease revoking (provisioning_failed) for the scheduler to undo, as when
// the target's commit fails after a separate activation.
func (b *Broker) commitRecorded(ctx context.Context, c Caller, act *mayfly.Lease, cred mayfly.Credential, st *staged, release func()) (*Activation, error) {
	defer st.cancel()
	if b.afterIntent != nil {
		b.afterIntent(act)
	}
	res, err := st.p.Wait()
	switch {
	case errors.Is(err, mayfly.ErrNotStaged):
		err = mayfly.Errorf(mayfly.ECONFLICT, "account %s already exists on target %q", act.Username, act.Target)
	case err == nil && res.Account != "" && res.Account != act.Username:
		st.p.Abort()
		err = fmt.Errorf("provision %s: the target made account %s instead", act.Username, res.Account)
	case err == nil:
		err = st.p.Commit()()
	}
	if err == nil {
		// Before release: a revocation through this broker, waiting for
		// the commit, then takes the lease off.
		b.recheckLater(act)
	}
	release()
	if err != nil {
		return nil, b.provisionFailed(ctx, c, act, err)
	}
	b.pokeAt(act.DueAt)
	return &Activation{Lease: act, Credential: cred}, nil
}

// recheckDelay is how long after the target committed the account of an
// activation recorded before it the broker reads the lease again.
const recheckDelay = 500 * time.Millisecond

// recheckLater reads l again recheckDelay from now, with the other leases
// committed meanwhile (one store read for them all). The activation was
// recorded before the target committed the account: a revocation through
// this broker waits for the commit (holdRevocations), but one through
// another replica sharing the store cannot, finds no account yet, and
// records the lease ended; the account committed after it is removed
// here.
func (b *Broker) recheckLater(l *mayfly.Lease) {
	b.recheckMu.Lock()
	defer b.recheckMu.Unlock()
	b.recheck = append(b.recheck, l)
	if len(b.recheck) == 1 {
		time.AfterFunc(recheckDelay, b.recheckCommitted)
	}
}

// forgetRecheck drops lease id from what recheckLater holds.
func (b *Broker) forgetRecheck(id string) {
	b.recheckMu.Lock()
	defer b.recheckMu.Unlock()
	b.recheck = slices.DeleteFunc(b.recheck, func(l *mayfly.Lease) bool { return l.ID == id })
}

// recheckRetries is how many more times a recheck that could not read
// the leases, or remove an account, is tried: recheckRetryDelay later,
// then twice as long each time (31 s in all). What still fails is left to
// the reconciler, which removes the accounts of ended leases, and to the
// account's own expiry (VALID UNTIL).
const (
	recheckRetries    = 5
	recheckRetryDelay = time.Second
)

// recheckCommitted removes again the accounts of the leases recheckLater
// holds that ended meanwhile.
func (b *Broker) recheckCommitted() {
	b.recheckMu.Lock()
	held := b.recheck
	b.recheck = nil
	b.recheckMu.Unlock()
	b.recheckLeases(held, 0)
}

// recheckLeases reads held again, with one store read, and removes the
// accounts of those that ended; what it could not read or remove is tried
// again later (see recheckRetries). attempt counts the tries before.
func (b *Broker) recheckLeases(held []*mayfly.Lease, attempt int) {
	if len(held) == 0 {
		return
	}
	ids := make([]string, len(held))
	for i, l := range held {
		ids[i] = l.ID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ls []*mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		ls, err = tx.ListLeases(mayfly.LeaseFilter{IDs: ids})
		return err
	})
	if err != nil {
		b.log.Warn("read again the leases whose accounts were just committed", "leases", len(ids), "attempt", attempt+1, "err", err)
		b.retryRecheck(held, attempt)
		return
	}
	var failed []*mayfly.Lease
	for _, l := range ls {
		if l.State == mayfly.LeaseActive {
			continue
		}
		// Ended since: perhaps through another replica before the account
		// existed, which then found nothing to remove. Removing it again
		// is harmless where it is already gone.
		b.log.Info("lease ended within moments of its account's commit: removing the account again, in case it ended before the account existed",
			"lease", l.ID, "target", l.Target, "account", l.Username, "state", l.State)
		if err := b.revokeOnTarget(ctx, l); err != nil {
			b.log.Error("remove again the account of a lease ended while it was committed", "lease", l.ID, "attempt", attempt+1, "err", err)
			failed = append(failed, l)
		}
	}
	b.retryRecheck(failed, attempt)
}

// retryRecheck runs recheckLeases on ls again after the delay of the
// attempt that failed, unless it was the last.
func (b *Broker) retryRecheck(ls []*mayfly.Lease, attempt int) {
	if len(ls) == 0 {
		return
	}
	if attempt >= recheckRetries {
		ids := make([]string, len(ls))
		for i, l := range ls {
			ids[i] = l.ID
		}
		b.log.Error("gave up removing again the accounts of leases ended while they were committed: left to the reconciler and to their expiry",
			"leases", ids, "attempts", attempt+1)
		return
	}
	time.AfterFunc(recheckRetryDelay<<attempt, func() { b.recheckLeases(ls, attempt+1) })
}

// activationData is the audit data of l's activation.
func activationData(l *mayfly.Lease, o ActivateOptions) map[string]string {
	data := map[string]string{"username": l.Username, "expires_at": l.ExpiresAt.Format(time.RFC3339)}
	if o.SessionTimeout > 0 {
		data["session_bound"] = "true"
		data["heartbeat_timeout"] = o.SessionTimeout.String()
	}
	return data
}

// activated makes l active with the keyed hash of its secret, due at its
// expiry or, bound to its client's session, at the session's timeout.
func (b *Broker) activated(l *mayfly.Lease, secretHMAC string, o ActivateOptions) {
	l.State, l.DueAt, l.SecretHMAC = mayfly.LeaseActive, l.ExpiresAt, secretHMAC
	if o.SessionTimeout > 0 {
		l.DueAt = sessionDue(l, b.clock.Now().UTC(), o.SessionTimeout)
	}
}

// staged is an account creation sent to the target, uncommitted, while the
// lease's intent is being recorded.
type staged struct {
	p      mayfly.PreparedProvision
	cancel context.CancelFunc
}

// stage sends the creation of l's account in an open transaction to its
// target, when its connector can; nil, nil when it cannot (Provision then
// makes the account after the intent is recorded, as usual; see
// mayfly.ErrCannotStage). An error says the creation could not be sent
// (the target unreachable or hung, or the grant unusable): the caller
// records the intent and then the provisioning failure, rather than a
// second attempt that would fail, or hang for as long, the same way.
func (b *Broker) stage(ctx context.Context, l *mayfly.Lease, grant mayfly.Grant, o ActivateOptions) (*staged, error) {
	pp, ok := b.connectors[l.Target].(mayfly.PreparedProvisioner)
	if !ok {
		return nil, nil
	}
	pctx, cancel := context.WithTimeout(ctx, b.provisionTimeout())
	p, err := pp.PrepareProvision(pctx, provisionRequest(l, grant, o))
	if err != nil {
		cancel()
		if errors.Is(err, mayfly.ErrCannotStage) {
			return nil, nil
		}
		return nil, err
	}
	return &staged{p: p, cancel: cancel}, nil
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
	l, grant, err := b.newLease(c, r, true)
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
// recorded. recheck asks for the policy to be decided again (an activation
// after an approval, which a reload or a group change may have overtaken).
func (b *Broker) newLease(c Caller, r *mayfly.Request, recheck bool) (*mayfly.Lease, mayfly.Grant, error) {
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
	if recheck {
		if err := b.stillAllowed(cfg, c, r); err != nil {
			return nil, mayfly.Grant{}, err
		}
	}
	now := b.clock.Now().UTC()
	l := &mayfly.Lease{
		ID: NewID("lse_"), RequestID: r.ID, Requester: r.Requester, Target: r.Target, Grant: r.Grant,
		Username: AccountName(target, r.Requester), State: mayfly.LeaseProvisioning,
		CreatedAt: now, ExpiresAt: now.Add(r.Duration), DueAt: now.Add(b.provTO),
	}
	return l, grant, nil
}

// stillAllowed re-checks, at activation, that the policy which approved r
// still exists and still allows it for c as c is now (groups, duration,
// time of day): an approval does not outlive a reload that removed its
// policy, nor the requester leaving the groups it named. A request decided
// in the same call (CreateAndActivate) is not checked twice.
func (b *Broker) stillAllowed(cfg *Config, c Caller, r *mayfly.Request) error {
	if r.Policy == "" || cfg.Policies == nil {
		return nil
	}
	in := policy.Input{
		User: c.User, Groups: c.Groups, Target: r.Target, Grant: r.Grant, Duration: r.Duration,
		Reason: r.Reason, Now: b.clock.Now(), Explain: true,
	}
	found := false
	var why string
	for _, breakGlass := range []bool{false, true} {
		in.BreakGlass = breakGlass
		d := cfg.Policies.Decide(in)
		for _, p := range d.Considered {
			if p.Name != r.Policy {
				continue
			}
			found = true
			if p.Matched {
				return nil
			}
			if why == "" {
				why = p.Why
			}
		}
	}
	if !found {
		return mayfly.Errorf(mayfly.EFORBIDDEN, "request %s was approved under policy %q, which is no longer configured; request access again", r.ID, r.Policy)
	}
	return mayfly.Errorf(mayfly.EFORBIDDEN, "request %s was approved under policy %q, which no longer allows it: %s; request access again", r.ID, r.Policy, why)
}

// recordIntent writes a new provisioning lease and its audit event.
// The requester's status is read in the same transaction, so an intent
// never follows a committed suspension (which would miss the lease).
//
// The status is checked (locked) and the lease written together, sent
// with the audit events and the commit (PostgreSQL; in one round trip when
// the store knows the head of the audit chain): a refused status rolls the
// lease back with the rest.
func (b *Broker) recordIntent(tx mayfly.Tx, c Caller, r *mayfly.Request, l *mayfly.Lease) error {
	if l.Requester != r.Requester {
		return fmt.Errorf("lease %s of %s recorded for request %s of %s", l.ID, l.Requester, r.ID, r.Requester)
	}
	if err := mayfly.WriteIntentUnless(tx, l, UserSuspended, UserDeprovisioned); err != nil {
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
	pctx, cancel := context.WithTimeout(ctx, b.provisionTimeout())
	res, err := b.connectors[l.Target].Provision(pctx, provisionRequest(l, grant, o))
	cancel()
	if err != nil {
		return nil, b.provisionFailed(ctx, c, l, err)
	}
	a, ended, err := b.activate(ctx, c, l, res, o)
	if ended != nil {
		b.undoEnded(ctx, ended)
	}
	if err != nil {
		// The account exists but is not recorded active: either the lease
		// ended meanwhile (undone above), or the store failed and the
		// lease stays provisioning, which the scheduler undoes at its
		// deadline and recovery at start-up.
		return nil, err
	}
	return a, nil
}

// provisionTimeout bounds one creation on a target. It ends before the
// lease's provisioning deadline (its DueAt, provTO after the intent), when
// the scheduler takes the lease over, so the two never overlap.
func (b *Broker) provisionTimeout() time.Duration { return b.provTO * 9 / 10 }

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
	// Until the target has committed, a revocation of this lease (an end
	// recorded meanwhile) would find no account and pass, and the commit
	// would then make one: revocations of the lease wait for it.
	release := b.holdRevocations(l.ID)
	committed := st.p.Commit()
	a, ended, aerr := b.activate(ctx, c, l, res, o)
	cerr := committed()
	release()
	if ended != nil {
		// Ended while the account was being made: undone now that it is
		// committed (or rolled back).
		b.undoEnded(ctx, ended)
	}
	if cerr != nil {
		// The outcome is unknown: undo whatever may exist, whether or not
		// the activation was recorded.
		failed := l
		if a != nil {
			failed = a.Lease
		}
		return nil, true, b.provisionFailed(ctx, c, failed, cerr)
	}
	if aerr != nil {
		// As in provision: the account was undone, or the lease stays
		// provisioning for the scheduler and recovery to undo.
		return nil, true, aerr
	}
	return a, true, nil
}

// holdRevocations makes revocations of lease id wait until the returned
// function is called: the lease's account is being committed on its
// target.
func (b *Broker) holdRevocations(id string) (release func()) {
	ch := make(chan struct{})
	b.committing.Store(id, ch)
	return func() {
		b.committing.Delete(id)
		close(ch)
	}
}

// awaitCommit waits while lease id's account is being committed on its
// target (see holdRevocations).
func (b *Broker) awaitCommit(ctx context.Context, id string) {
	if ch, ok := b.committing.Load(id); ok {
		select {
		case <-ch.(chan struct{}):
		case <-ctx.Done():
		}
	}
}

// provisionFailed records that creating l's account failed and hands the
// lease to the scheduler, which revokes whatever may exist and marks it
// failed. It returns the error for the caller.
//
// It is a compare-and-set on the state the caller knows l in: provisioning,
// or active when the caller recorded the activation itself and then learnt
// that the target's commit failed. Only then does the lease become
// revoking (provisioning_failed). A lease that something else ended
// meanwhile (a suspension, revoke or done) keeps its state and end reason;
// it is only made due now, since its activation is over.
func (b *Broker) provisionFailed(ctx context.Context, c Caller, l *mayfly.Lease, perr error) error {
	b.log.Error("provision failed", "lease", l.ID, "target", l.Target, "err", Scrub(perr.Error()))
	uerr := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		cur, err := tx.GetLease(l.ID)
		if err != nil {
			return err
		}
		now := b.clock.Now().UTC()
		switch {
		case cur.State == l.State && (cur.State == mayfly.LeaseProvisioning || cur.State == mayfly.LeaseActive):
			cur.State, cur.EndReason, cur.DueAt = mayfly.LeaseRevoking, mayfly.EndFailed, now
		case cur.State == mayfly.LeaseRevoking:
			if !cur.DueAt.After(now) {
				return nil
			}
			cur.DueAt = now
		default:
			return nil // already ended; nothing of this activation is left
		}
		cur.LastError = Scrub(perr.Error())
		if err := tx.UpdateLease(cur); err != nil {
			return err
		}
		*l = *cur
		return b.audit(tx, c, "lease.provision_failed", nil, cur, cur.LastError, nil)
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
//
// When something else ended the lease meanwhile, nothing is recorded and
// ended is the lease as it is now: the caller must undo the account
// (undoEnded) once the target's creation is final.
func (b *Broker) activate(ctx context.Context, c Caller, l *mayfly.Lease, res mayfly.ProvisionResponse, o ActivateOptions) (a *Activation, ended *mayfly.Lease, err error) {
	cred := res.Credential
	if cred.Username == "" {
		cred.Username = l.Username
	}
	data := activationData(l, o)
	var verifier string
	if b.viaGateway(l) {
		// The user receives a gateway credential; the account's own
		// stays with the gateway, in memory.
		g := b.gatewayIssuer()
		if g == nil {
			return nil, nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "grant %s/%s is reached through the gateway, which is not running", l.Target, l.Grant)
		}
		if cred, verifier, err = g.Issue(l, cred); err != nil {
			return nil, nil, err
		}
		data["via"] = mayfly.ViaGateway
	}
	var secretHMAC string
	if s := cred.Secrets(); len(s) > 0 {
		secretHMAC = b.HashSecret(s[0])
		data["secret_hmac"] = secretHMAC
	}
	// Compare-and-set: the lease becomes active only if it is still
	// provisioning. A suspension, revoke or done that reached it meanwhile
	// wins, and the account just made is undone.
	var active *mayfly.Lease
	activated := func(cur *mayfly.Lease) { b.activated(cur, secretHMAC, o) }
	// The lease as this broker wrote it is the one to change, unless
	// something else changed it since: then its update writes nothing
	// (ErrLeaseChanged) and the lease is read again below. It saves the
	// read: with PostgreSQL, the update travels with the lock of the
	// audit chain's head, and the events with the commit.
	fast := l.State == mayfly.LeaseProvisioning && (res.Account == "" || res.Account == l.Username)
	if fast {
		err = b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
			active = nil
			cur := *l
			activated(&cur)
			mayfly.DeferNextWrite(tx)
			if err := tx.UpdateLeaseFrom(l, &cur); err != nil {
				return err
			}
			active = &cur
			if verifier != "" {
				if err := tx.PutSetting(GatewayVerifierKey(cur.ID), verifier); err != nil {
					return err
				}
			}
			return b.audit(tx, c, "lease.activate", nil, &cur, "", data)
		})
		if err == nil {
			b.pokeAt(active.DueAt)
			b.committed()
			return &Activation{Lease: active, Credential: cred}, nil, nil
		}
		if !errors.Is(err, mayfly.ErrLeaseChanged) {
			return nil, nil, fmt.Errorf("record activation of lease %s: %w", l.ID, err)
		}
	}
	err = b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		active, ended = nil, nil
		cur, err := tx.GetLease(l.ID)
		if err != nil {
			return err
		}
		if res.Account != "" && res.Account != cur.Username {
			// The account the target made is the one to revoke, whether
			// this activation is recorded or undone.
			if err := tx.SetLeaseUsername(cur.ID, res.Account); err != nil {
				return err
			}
			data["requested_username"], data["username"] = cur.Username, res.Account
			cur.Username = res.Account
		}
		if cur.State != mayfly.LeaseProvisioning {
			ended = cur
			return nil
		}
		activated(cur)
		// Sent with the next statement (PostgreSQL): what follows does
		// not depend on it, and its error still fails the transaction.
		mayfly.DeferNextWrite(tx)
		if err := tx.UpdateLease(cur); err != nil {
			return err
		}
		active = cur
		if verifier != "" {
			if err := tx.PutSetting(GatewayVerifierKey(cur.ID), verifier); err != nil {
				return err
			}
		}
		return b.audit(tx, c, "lease.activate", nil, cur, "", data)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("record activation of lease %s: %w", l.ID, err)
	}
	if ended != nil {
		return nil, ended, mayfly.Errorf(mayfly.ECONFLICT, "lease %s was ended (%s) while its account was being created; the account was removed and no credential is issued",
			l.ID, orUnknown(ended.EndReason))
	}
	b.pokeAt(active.DueAt)
	b.committed()
	return &Activation{Lease: active, Credential: cred}, nil, nil
}

// undoEnded removes the account just created for a lease that something
// else ended while it was being created. A lease still revoking is revoked
// now, recorded as usual (and retried by the scheduler if the target
// fails). A lease already recorded as ended was revoked before this account
// existed: the account is removed directly, and if that fails it is
// alerted on and left to the reconciler, which recognises the name as one
// this broker issued with no live lease.
func (b *Broker) undoEnded(ctx context.Context, l *mayfly.Lease) {
	ctx = context.WithoutCancel(ctx)
	if l.State == mayfly.LeaseRevoking {
		l.DueAt = b.clock.Now().UTC()
		b.RevokeNow(ctx, l)
		return
	}
	if err := b.revokeOnTarget(ctx, l); err != nil {
		b.Alert(ctx, "alert.undo_failed", l.Target, l.ID,
			fmt.Sprintf("account %s of ended lease %s could not be removed", l.Username, l.ID),
			Scrub(err.Error()), "run mayfly reconcile "+l.Target+" once the target is reachable")
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
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
