// Package mayfly holds the domain of the Mayfly just-in-time access broker:
// requests, leases, targets, grants, users and audit events, and the
// interfaces (Store, Connector, Clock) that the internal packages implement.
package mayfly

import (
	"context"
	"errors"
	"time"
)

// RequestState is where a request stands in its workflow.
type RequestState string

// Request states. A request starts pending (or approved, when policy approves
// it automatically) and ends approved, denied, cancelled or lapsed.
const (
	RequestPending   RequestState = "pending"
	RequestApproved  RequestState = "approved"
	RequestDenied    RequestState = "denied"
	RequestCancelled RequestState = "cancelled"
	RequestLapsed    RequestState = "lapsed"
)

// LeaseState is where the account behind a lease stands.
type LeaseState string

// Lease states: provisioning → active → revoking → revoked, or failed when
// provisioning did not complete (and was undone).
const (
	LeaseProvisioning LeaseState = "provisioning"
	LeaseActive       LeaseState = "active"
	LeaseRevoking     LeaseState = "revoking"
	LeaseRevoked      LeaseState = "revoked"
	LeaseFailed       LeaseState = "failed"
)

// Live reports whether an account may exist on the target for a lease in
// this state.
func (s LeaseState) Live() bool {
	return s == LeaseProvisioning || s == LeaseActive || s == LeaseRevoking
}

// End reasons: why a lease ended. The set is documented in the README.
const (
	EndExpired       = "expired"
	EndDone          = "done"
	EndRevoked       = "revoked"
	EndIdle          = "idle"
	EndUserSuspended = "user_suspended"
	EndOrphan        = "orphan"
	EndMissing       = "missing"
	EndFailed        = "provisioning_failed"
	// EndSessionLost: a session-bound lease (mayfly connect) stopped
	// receiving its client's heartbeats.
	EndSessionLost = "session_lost"
	// EndUserRemoved: its holder was removed from the configuration and
	// the configuration reloaded.
	EndUserRemoved = "user_removed"
)

// Request is a person's ask for access: target/grant, reason, duration.
type Request struct {
	ID        string        `json:"id"`
	Requester string        `json:"requester"`
	Target    string        `json:"target"`
	Grant     string        `json:"grant"`
	Reason    string        `json:"reason"`
	Duration  time.Duration `json:"-"`
	State     RequestState  `json:"state"`
	// Policy is the name of the policy that decided the request.
	Policy string `json:"policy"`
	// ApprovalsRequired is how many distinct approvers the current step
	// needs.
	ApprovalsRequired int `json:"approvals_required"`
	// ApproverGroups are the groups whose members may approve the current
	// step.
	ApproverGroups []string `json:"approver_groups"`
	// Steps are every approval step, in order; Step is the index of the
	// current one. StepApprovals counts approvals within the current step.
	Steps         []ApprovalStep `json:"steps"`
	Step          int            `json:"step"`
	StepApprovals int            `json:"step_approvals"`
	// Approvers are the users who approved so far.
	Approvers []string `json:"approvers"`
	// Decider is who denied or cancelled the request, with DecisionReason.
	Decider        string    `json:"decider,omitempty"`
	DecisionReason string    `json:"decision_reason,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	DecidedAt      time.Time `json:"decided_at,omitzero"`
	// LeaseID is the lease activated for this request, if any.
	LeaseID string `json:"lease_id,omitempty"`
	// ExtendsLease, when set, makes this an extension of that lease:
	// approving it lengthens the lease by Duration instead of creating one.
	ExtendsLease string `json:"extends_lease,omitempty"`
	// BreakGlass marks emergency access taken without approval.
	BreakGlass bool `json:"break_glass"`
}

// ApprovalStep is one stage of approval: N distinct approvers from groups.
type ApprovalStep struct {
	Approvals      int      `json:"approvals"`
	ApproverGroups []string `json:"approver_groups"`
}

// Lease is the ephemeral account behind an approved request.
type Lease struct {
	ID        string     `json:"id"`
	RequestID string     `json:"request_id"`
	Requester string     `json:"requester"`
	Target    string     `json:"target"`
	Grant     string     `json:"grant"`
	Username  string     `json:"username"`
	State     LeaseState `json:"state"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	// DueAt is when the scheduler must next act on the lease: the expiry
	// while active, the next retry while revoking, a claim timeout while
	// provisioning. It is indexed.
	DueAt     time.Time `json:"-"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	EndReason string    `json:"end_reason,omitempty"`
	// RevokeAttempts counts failed revocation attempts.
	RevokeAttempts int    `json:"revoke_attempts"`
	LastError      string `json:"last_error,omitempty"`
	// SecretHMAC is a keyed hash of the issued secret, for correlating a
	// leaked credential; never the secret itself.
	SecretHMAC string `json:"-"`
}

// Approval records one approver's decision on a request.
type Approval struct {
	RequestID string    `json:"request_id"`
	Approver  string    `json:"approver"`
	CreatedAt time.Time `json:"created_at"`
}

// User is a person or automation identity.
type User struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	Status string   `json:"status"`
}

// Credential is what the requester receives, once, when a lease activates.
type Credential struct {
	Username    string `json:"username"`
	Password    string `json:"password,omitempty"`
	Host        string `json:"host,omitempty"`
	Port        int    `json:"port,omitempty"`
	Database    string `json:"database,omitempty"`
	Certificate string `json:"certificate,omitempty"`
	PrivateKey  string `json:"private_key,omitempty"`
	// HostKey is the public key (authorized_keys format) of the server to
	// connect to, for pinning, when Mayfly knows it: the SSH gateway's.
	HostKey string `json:"host_key,omitempty"`
}

// Secrets returns the secret values in c, for scrubbing and hashing.
func (c Credential) Secrets() []string {
	var s []string
	for _, v := range []string{c.Password, c.PrivateKey} {
		if v != "" {
			s = append(s, v)
		}
	}
	return s
}

// Clock tells the time; tests inject a fake.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }

// NewTicker returns a real ticker.
func (SystemClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// TickerClock is a Clock that also makes tickers, so that periodic work
// (idle checks, lapses, reconciliation) runs on a fake clock in tests.
type TickerClock interface {
	Clock
	NewTicker(d time.Duration) Ticker
}

// Ticker delivers the clock's time on C at every period, dropping ticks a
// slow reader misses, like time.Ticker.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// NewTicker returns a ticker of clock c: its own when it makes them, a
// real one otherwise.
func NewTicker(c Clock, d time.Duration) Ticker {
	if tc, ok := c.(TickerClock); ok {
		return tc.NewTicker(d)
	}
	return realTicker{time.NewTicker(d)}
}

// TimerClock is a Clock that also makes timers, so that the scheduler
// sleeps on it until the next deadline and runs on a fake clock in tests.
// SystemClock implements it.
type TimerClock interface {
	Clock
	NewTimer(d time.Duration) Timer
}

// Timer delivers the clock's time on C once, d after it was made or last
// reset, like time.Timer (Go 1.23 semantics: Stop and Reset leave no stale
// value to drain).
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// NewTimer returns a timer of clock c: its own when it makes them, a real
// one otherwise.
func NewTimer(c Clock, d time.Duration) Timer {
	if tc, ok := c.(TimerClock); ok {
		return tc.NewTimer(d)
	}
	return realTimer{time.NewTimer(d)}
}

// NewTimer returns a real timer.
func (SystemClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// ProvisionRequest asks a connector to create the account for a lease.
type ProvisionRequest struct {
	LeaseID   string
	Username  string
	Grant     Grant
	ExpiresAt time.Time
	// PublicKey is an SSH public key (authorized_keys format) to sign, when
	// the user brings their own.
	PublicKey string
}

// ProvisionResponse carries the issued credential.
type ProvisionResponse struct {
	Credential Credential
	// Account is the account created on the target when it is not the
	// name asked for (a script that names accounts itself); empty means
	// ProvisionRequest.Username. The broker records it on the lease, and
	// revocation and reconciliation use it.
	Account string
}

// RevokeRequest asks a connector to end sessions and remove an account.
type RevokeRequest struct {
	LeaseID  string
	Username string
	// ExpiresAt is the lease's expiry (an SSH certificate stays on the
	// revocation list until then).
	ExpiresAt time.Time
}

// AccountsRequest lists accounts whose name starts with Prefix ("" for all).
type AccountsRequest struct {
	Prefix string
}

// Account is an account present on a target.
type Account struct {
	Name string `json:"name"`
	// LastActivity is when the account was last seen in use, zero if never
	// or unknown.
	LastActivity time.Time `json:"last_activity,omitzero"`
	// Sessions is how many live sessions the account has.
	Sessions  int  `json:"sessions"`
	CanLogin  bool `json:"can_login"`
	Superuser bool `json:"superuser"`
	// Privileges describes what the account can do, where known.
	Privileges []string `json:"privileges,omitempty"`
	// Marked is true when the account carries the mark of this Mayfly
	// installation (see Target.InstanceKeyEnv): it was made by this broker,
	// whatever its store remembers.
	Marked bool `json:"marked,omitempty"`
}

// Connector creates and removes ephemeral accounts on one target.
// Implementations must be idempotent: provisioning a username that already
// exists for the same lease replaces its credential instead of failing, and
// revoking an account that does not exist succeeds.
type Connector interface {
	// Provision creates the account with the grant's rights and returns the
	// credential. The target-side expiry is set where the target has one.
	Provision(ctx context.Context, req ProvisionRequest) (ProvisionResponse, error)
	// Revoke blocks new logins, ends live sessions, removes the account and
	// what it owns, and verifies it is gone.
	Revoke(ctx context.Context, req RevokeRequest) error
	// Accounts lists accounts present on the target.
	Accounts(ctx context.Context, req AccountsRequest) ([]Account, error)
	// Check reports whether the target is reachable with the admin credential.
	Check(ctx context.Context) error
	// Close releases connections.
	Close() error
}

// RefusingConnector is the connector of a target that cannot be used: a
// target with no admin credential yet, or one this replica must not touch.
// Every call but Close fails with Err.
type RefusingConnector struct{ Err error }

func (c RefusingConnector) Provision(context.Context, ProvisionRequest) (ProvisionResponse, error) {
	return ProvisionResponse{}, c.Err
}
func (c RefusingConnector) Revoke(context.Context, RevokeRequest) error { return c.Err }
func (c RefusingConnector) Accounts(context.Context, AccountsRequest) ([]Account, error) {
	return nil, c.Err
}
func (c RefusingConnector) Check(context.Context) error { return c.Err }
func (c RefusingConnector) Close() error                { return nil }

// PreparedProvisioner is implemented by connectors whose target can create
// an account inside a transaction and commit it later (PostgreSQL). The
// broker sends the creation just before it commits the lease's intent,
// and sends the commit only once the intent is durable, so the target's
// work overlaps the store's and an account still never exists without its
// recorded intent: if Mayfly dies before the commit, the target rolls the
// creation back.
type PreparedProvisioner interface {
	// PrepareProvision sends the creation without waiting for its outcome.
	// ctx must stay live until the creation is finished.
	PrepareProvision(ctx context.Context, req ProvisionRequest) (PreparedProvision, error)
}

// PreparedProvision is an account creation sent in a transaction not yet
// committed. Either Wait, then (when Wait succeeds) Commit and the
// function it returns; or Abort.
type PreparedProvision interface {
	// Wait waits for the creation and returns the credential it will have
	// once committed. On error nothing was created; ErrNotStaged means the
	// account existed already, and the caller should use Provision.
	Wait() (ProvisionResponse, error)
	// Commit sends the commit without waiting for it. The function it
	// returns waits; its error means the outcome is unknown (the account
	// may exist).
	Commit() func() error
	// Abort rolls the creation back. It may be called after Wait failed.
	Abort()
}

// PreparedCredential is implemented by a PreparedProvision whose
// credential is the connector's own making, known before the target has
// answered: the broker may then record the activation in the commit of
// the lease's intent, before it reads the creation's outcome (see
// broker.CreateAndActivate).
type PreparedCredential interface {
	// Credential is the credential the account will have once committed.
	Credential() Credential
}

// ErrNotStaged is returned by PreparedProvision.Wait when the creation could
// not be staged and was rolled back (the account exists already).
var ErrNotStaged = errors.New("creation not staged: the account exists; provision it normally")

// ErrCannotStage is returned by PreparedProvisioner.PrepareProvision when
// the connector cannot stage this creation after all (a wrapper whose
// connector in force has no such method): the caller provisions the usual
// way. Any other error says the creation could not be sent.
var ErrCannotStage = errors.New("the connector cannot stage a creation")

// BatchRevoker is implemented by connectors that revoke many accounts at
// once more cheaply than one by one. The result has one error (or nil) per
// request, in order; the same guarantees as Revoke hold for each.
type BatchRevoker interface {
	RevokeBatch(ctx context.Context, reqs []RevokeRequest) []error
}

// ExtendRequest moves the target-side expiry of an account.
type ExtendRequest struct {
	LeaseID   string
	Username  string
	ExpiresAt time.Time
}

// Extender is implemented by connectors whose target enforces an expiry of
// its own (PostgreSQL VALID UNTIL), so an extension moves it too.
// Connectors without it either have no target-side expiry (Redis, scripts)
// or cannot extend (SSH certificates: request new access).
type Extender interface {
	Extend(ctx context.Context, req ExtendRequest) error
}

// FinishTimeout bounds work under way that a worker finishes rather than
// cuts off when it stops or its replica loses the lead (a delivery to a
// sink, a notification, a Slack call). The server's stop budget (30 s in
// the packaged systemd unit, after 5 s for the HTTP server) covers it.
const FinishTimeout = 15 * time.Second

// Finishing returns the context for such work: it does not end with ctx,
// so a call under way is finished and its outcome saved (a cursor moved
// past what was delivered) rather than cut off after its receiver may
// have acted on it, which would make the next run do it again. It ends
// after FinishTimeout instead.
func Finishing(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), FinishTimeout)
}
