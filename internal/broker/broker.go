// Package broker orchestrates requests, approvals, activation and
// revocation: the lease state machine. Every state change is committed with
// its audit event in one store transaction, the lease row is committed as
// provisioning before a target is touched, and revocation is handed to the
// scheduler, which retries until it succeeds.
package broker

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"log/slog"
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
	// MaxTokenTTL bounds API tokens (default DefaultMaxTokenTTL).
	MaxTokenTTL time.Duration
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
	// Watching is called when a live view of the broker's changes opens
	// (an audit stream, the web app's live updates); it returns what to
	// call when the view closes. With a shared store it keeps this
	// replica listening to the others' commits while views are open.
	Watching func() (release func())
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
	tokens      tokenCache
	// directory gives the groups the identity provider manages (SCIM), by
	// user name; nil without SCIM.
	directory atomic.Pointer[func() map[string][]string]

	wake     chan struct{}
	nextWake atomic.Int64 // unix ns the scheduler sleeps until; 0 while awake
	changeMu sync.Mutex
	changed  chan struct{}
	users    userStatuses
	overdue  overdue
	idle     idleTracker
	// committing holds a channel per lease whose account is being
	// committed on its target; revocations of it wait for it to close.
	committing sync.Map
	// recheck holds the leases whose account was committed after their
	// recorded activation, to be read again (see recheckLater).
	recheckMu sync.Mutex
	recheck   []*mayfly.Lease
	// targetsDown holds, per target the scheduler found not answering,
	// the error it last saw (see setTargetDown).
	targetsDown sync.Map
	// gateway issues the credentials of grants with via: gateway.
	gateway atomic.Pointer[GatewayIssuer]
}

// setTargetDown records whether the scheduler finds target down, with the
// error its last attempt saw.
func (b *Broker) setTargetDown(target string, down bool, lastErr string) {
	if down {
		b.targetsDown.Store(target, lastErr)
	} else {
		b.targetsDown.Delete(target)
	}
}

// targetDown reports whether the scheduler last found target not
// answering, and why.
func (b *Broker) targetDown(target string) (string, bool) {
	v, ok := b.targetsDown.Load(target)
	if !ok {
		return "", false
	}
	return v.(string), true
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
