package mayfly

import (
	"context"
	"slices"
	"time"
)

// Store keeps requests, leases and the audit trail. Every state change and
// its audit event are written in one Update transaction.
//
// Durability: a commit survives a crash of the broker once Update returns.
// A transaction that creates a lease in state provisioning (the intent of
// an account) survives an OS crash or a power loss too, unless its context
// comes from SkipIntentSync; other commits made just before such a crash
// may be lost.
type Store interface {
	// Update runs fn in a read-write transaction, committed when fn returns
	// nil and rolled back otherwise. It returns nil exactly when the
	// transaction committed, whatever other callers do meanwhile; the one
	// exception is an intent that committed but could not be made durable
	// (see Store), which returns an error. fn may run more than once (the
	// PostgreSQL store runs a transaction again after a deadlock, or when
	// another replica appended to the audit trail first); what it keeps
	// outside the transaction starts afresh on each run.
	Update(ctx context.Context, fn func(tx Tx) error) error
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(tx Tx) error) error
	Close() error
}

// Tx is a store transaction. Getters return an *Error with ENOTFOUND when
// nothing matches.
type Tx interface {
	CreateRequest(r *Request) error
	// UpdateRequest writes every mutable field of r (state, approvers,
	// decision, lease id).
	UpdateRequest(r *Request) error
	GetRequest(id string) (*Request, error)
	ListRequests(f RequestFilter) ([]*Request, error)

	CreateLease(l *Lease) error
	// UpdateLease writes every mutable field of l.
	UpdateLease(l *Lease) error
	// UpdateLeaseFrom is UpdateLease as a compare-and-set on the whole
	// lease: it writes l only when the stored lease still holds prev's
	// values of every field UpdateLease writes and of its Username, and
	// otherwise writes nothing and returns an error matching
	// ErrLeaseChanged (also when there is no such lease). A caller that
	// holds the lease as it last wrote it changes it without reading it
	// again; on ErrLeaseChanged it reads it and decides again. It can be
	// deferred like UpdateLease (DeferNextWrite).
	UpdateLeaseFrom(prev, l *Lease) error
	GetLease(id string) (*Lease, error)
	// SetLeaseUsername records the account a connector actually created for
	// a lease, when it differs from the name Mayfly asked for; revocation
	// and reconciliation then use it.
	SetLeaseUsername(id, username string) error
	ListLeases(f LeaseFilter) ([]*Lease, error)
	// DueLeases returns up to limit leases in the given states whose DueAt
	// is at or before now, in (DueAt, ID) order, starting after the
	// position after (from the start when it is the zero DueCursor), with
	// an indexed query.
	DueLeases(now time.Time, states []LeaseState, after DueCursor, limit int) ([]*Lease, error)
	// NextDue returns the earliest DueAt of leases in the given states;
	// ok is false when there is none.
	NextDue(states []LeaseState) (t time.Time, ok bool, err error)
	// CountLeases counts leases by state, from counts kept as leases
	// change, so its cost does not grow with the history of leases.
	CountLeases() (map[LeaseState]int, error)

	// AppendAudit sets e.Seq, e.PrevHash and e.Hash and appends e.
	AppendAudit(e *AuditEvent) error
	// ListAudit returns events matching f in sequence order (newest
	// first with f.Newest).
	ListAudit(f AuditFilter) ([]*AuditEvent, error)
	// DeleteAuditBefore removes the events with Seq < seq (retention) and
	// returns how many it removed. The chain stays verifiable from the
	// first retained event.
	DeleteAuditBefore(seq int64) (int64, error)

	// GetUserStatus returns a user's stored status ("" when none is stored).
	GetUserStatus(name string) (string, error)
	SetUserStatus(name, status string) error

	// UserStatuses returns every stored user status by name.
	UserStatuses() (map[string]string, error)

	// GetSetting and PutSetting keep small values (keys, cursors).
	GetSetting(key string) (string, error)
	PutSetting(key, value string) error
	// ListSettings returns the settings whose key starts with prefix.
	ListSettings(prefix string) (map[string]string, error)
	// DeleteSetting removes a setting; a missing key is not an error.
	DeleteSetting(key string) error

	// CreateToken stores t (its hash, never a plaintext); ECONFLICT when
	// its id or hash exists.
	CreateToken(t *Token) error
	// GetToken returns the token with id; ENOTFOUND when there is none.
	GetToken(id string) (*Token, error)
	// GetTokenByHash returns the token whose Hash is hash; ENOTFOUND when
	// there is none.
	GetTokenByHash(hash string) (*Token, error)
	// ListTokens returns the tokens matching f, oldest first.
	ListTokens(f TokenFilter) ([]*Token, error)
	// UpdateToken writes t's LastUsedAt and RevokedAt; ENOTFOUND when
	// there is no such token.
	UpdateToken(t *Token) error
	// RevokeUserTokens sets RevokedAt to at on every token of user not yet
	// revoked and returns how many it revoked.
	RevokeUserTokens(user string, at time.Time) (int, error)

	// ClaimDue is DueLeases for replicas sharing the store: it returns the
	// due leases not claimed by another holder (a claim lapses at its
	// until), claims each for holder until until in the same transaction
	// (renewing the claims holder already has), so that no two holders
	// revoke one lease at once. Recording an outcome clears a lease's
	// claim: an UpdateLease that changes RevokeAttempts, or moves the lease
	// out of the states active, revoking and provisioning, removes it.
	ClaimDue(now time.Time, states []LeaseState, holder string, until time.Time, after DueCursor, limit int) ([]*Lease, error)

	// AcquireLeader takes or renews the leader lease of the singleton
	// name for holder until now+ttl, when it is free, lapsed (its until is
	// before now) or already holder's, and reports whether holder has it.
	AcquireLeader(name, holder string, now time.Time, ttl time.Duration) (bool, error)
	// ReleaseLeader gives up holder's leader lease of name; it is not an
	// error when holder does not hold it.
	ReleaseLeader(name, holder string) error
	// ListLeaders returns the leader leases, lapsed or not, by name.
	ListLeaders() ([]*Leader, error)

	// Heartbeat records r (by r.ID), replacing what was recorded.
	Heartbeat(r *Replica) error
	// ListReplicas returns the replicas recorded, by id.
	ListReplicas() ([]*Replica, error)
	// DeleteReplica removes a replica's record; a missing one is not an
	// error.
	DeleteReplica(id string) error

	// PutChatMessage records where the chat message about m.RequestID is,
	// replacing what was recorded.
	PutChatMessage(m *ChatMessage) error
	// GetChatMessage returns the chat message about a request; ENOTFOUND
	// when none was recorded.
	GetChatMessage(requestID string) (*ChatMessage, error)
	// UseNonce records that key (a signature of a signed request) was
	// seen, until until: ECONFLICT when it is recorded already with an
	// until at or after now, so a request replayed to any replica sharing
	// the store is refused. Keys whose until is before now are removed.
	UseNonce(key string, now, until time.Time) error

	SessionTx
}

// ClaimReleaser is a Tx that can give claims up before they lapse. A
// scheduler stopping with attempts not recorded releases their claims
// when its store's Tx is one, so that a replica (this one restarted, or
// another) revokes those leases at once rather than after the claims'
// term.
type ClaimReleaser interface {
	// ReleaseClaims removes holder's claims of the leases ids; claims of
	// other holders stay.
	ReleaseClaims(holder string, ids []string) error
}

// ClaimRenewer is a Tx that can extend claims. A scheduler whose store's
// Tx is one keeps its claims short (seconds) and renews those of the
// leases it has in flight, so that the claims of a replica that died lapse
// within seconds and another replica revokes those leases then.
type ClaimRenewer interface {
	// RenewClaims extends to until holder's claims of the leases ids. A
	// claim another holder took, or one cleared by a recorded outcome,
	// is left as it is. It returns how many claims it extended.
	RenewClaims(holder string, ids []string, until time.Time) (int, error)
}

// LeaseBatcher is implemented by the Tx of a store where every statement
// is a round trip to a server (PostgreSQL): recording a batch of
// revocation outcomes then reads and writes its leases in one statement
// each, instead of two per lease.
type LeaseBatcher interface {
	// LockLeases returns the leases ids that exist, each read as GetLease
	// reads it in a write transaction (locked until the transaction
	// ends), locking them in id order.
	LockLeases(ids []string) ([]*Lease, error)
	// UpdateLeases is UpdateLease for each of ls (distinct leases), in
	// one statement; ENOTFOUND when one of them does not exist.
	UpdateLeases(ls []*Lease) error
}

// Replica is one server process sharing the store, as its heartbeats
// record it.
type Replica struct {
	ID        string    `json:"id"`
	Address   string    `json:"address"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	LastSeen  time.Time `json:"last_seen"`
}

// Leader is the leader lease of a singleton (work that runs on one replica
// at a time): Holder has it until Until.
type Leader struct {
	Name   string    `json:"name"`
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// DurableCommitter is implemented by stores each of whose commits waits
// for the flush of the store's log unless SkipIntentSync says otherwise
// (PostgreSQL): there a second commit costs a second flush, so the broker
// records a one-call issue's intent and activation in one commit.
type DurableCommitter interface {
	CommitsDurably() bool
}

// Locker is implemented by stores that several processes share
// (PostgreSQL), for work that must not interleave across replicas and
// spans more than one transaction. Lock returns once no other holder of
// the lock named name, in any process sharing the store, holds it;
// unlock releases it. A holder that dies or loses its connection to the
// store releases it too.
type Locker interface {
	Lock(ctx context.Context, name string) (unlock func(), err error)
}

type skipIntentSyncKey struct{}

// SkipIntentSync returns a context for Store.Update under which an intent
// is made durable against a crash of the broker only, not against an OS
// crash or a power loss, saving the sync of the store's log. It is for
// targets where an intent lost that way leaves nothing undetected: the
// account carries a marker the reconciler recognises, committed with the
// account, and expires by itself.
func SkipIntentSync(ctx context.Context) context.Context {
	return context.WithValue(ctx, skipIntentSyncKey{}, true)
}

// IntentSyncSkipped reports whether ctx comes from SkipIntentSync.
func IntentSyncSkipped(ctx context.Context) bool {
	v, _ := ctx.Value(skipIntentSyncKey{}).(bool)
	return v
}

// RequestFilter selects requests; zero fields match everything.
type RequestFilter struct {
	IDs       []string
	Requester string
	States    []RequestState
	// Open selects the requests still waiting for a decision or an
	// activation: pending, or approved without a lease.
	Open  bool
	Limit int
	// Viewer, when set, keeps the requests this user may see without
	// being an admin: their own, those they approved, and those with one
	// of ViewerGroups among the approver groups of the current step or of
	// any step. Limit counts only these.
	Viewer       string
	ViewerGroups []string
	// After, when not zero, starts the list after this position in the
	// (CreatedAt, ID) order.
	After PageCursor
}

// LeaseFilter selects leases; zero fields match everything.
type LeaseFilter struct {
	IDs       []string
	RequestID string
	Requester string
	Target    string
	Username  string
	States    []LeaseState
	Limit     int
	// After, when not zero, starts the list after this position in the
	// (CreatedAt, ID) order.
	After PageCursor
}

// AuditFilter selects audit events; zero fields match everything.
type AuditFilter struct {
	AfterSeq  int64 // events with Seq > AfterSeq
	UntilSeq  int64 // events with Seq <= UntilSeq, when not zero
	Actor     string
	Action    string
	Target    string
	LeaseID   string
	RequestID string
	Since     time.Time
	Until     time.Time
	Limit     int
	// Involving, when set, keeps the events this user may see without
	// being an admin: those they did (Actor) and those about requests they
	// made. Limit counts only these.
	Involving string
	// Newest lists the newest events first (Seq descending); AfterSeq and
	// UntilSeq still bound the range.
	Newest bool
}

// PageCursor is a position in the (CreatedAt, ID) order of ListRequests
// and ListLeases, so that a long list can be read in pages, each starting
// after the last item of the one before, without reading any item twice.
type PageCursor struct {
	CreatedAt time.Time
	ID        string
}

// IsZero reports whether c is the start of the list.
func (c PageCursor) IsZero() bool { return c.ID == "" && c.CreatedAt.IsZero() }

// DueCursor is a position in the order of Tx.DueLeases, so that a long
// list of due leases can be read in pages without reading any twice.
type DueCursor struct {
	DueAt time.Time
	ID    string
}

// DueCursorOf is the position of l in the order of Tx.DueLeases.
func DueCursorOf(l *Lease) DueCursor { return DueCursor{DueAt: l.DueAt, ID: l.ID} }

// ActivityTx is a Tx that keeps when leases were last seen in use at a
// gateway, so that the idle check, which runs on one replica, sees the
// activity of connections served by any other.
type ActivityTx interface {
	// TouchLeases records the last activity of each lease in at; a time
	// not after the one stored, or of a lease that does not exist, is
	// ignored.
	TouchLeases(at map[string]time.Time) error
	// LeaseActivity returns the last activity recorded of each of the
	// leases ids that has one.
	LeaseActivity(ids []string) (map[string]time.Time, error)
}

// LoginStateTx is a Tx that keeps the state of logins in progress (an
// OpenID Connect login's state, nonce and PKCE verifier, a finished login
// waiting for its CLI, an ID token already used), so that any replica
// sharing the store can finish a login another one started. Each entry is
// taken once and lapses at its expiry.
type LoginStateTx interface {
	// PutLoginState stores value under key until expires. It fails with
	// ECONFLICT when an unexpired entry has the key, and with
	// EUNAVAILABLE when max unexpired entries are stored already (expired
	// ones are removed first).
	PutLoginState(key string, value []byte, now, expires time.Time, max int) error
	// TakeLoginState removes the entry under key and returns its value;
	// ENOTFOUND when there is none or it expired.
	TakeLoginState(key string, now time.Time) ([]byte, error)
	// HasLoginState reports whether an unexpired entry has the key.
	HasLoginState(key string, now time.Time) (bool, error)
}

// WriteDeferrer is implemented by transactions of stores where each
// statement is a round trip (PostgreSQL). After DeferNextWrite, the next
// CreateRequest, CreateLease, UpdateLease or UpdateLeaseFrom returns at once and is sent with the
// transaction's next statement, in that round trip (at the end of the
// transaction, before the COMMIT is sent: with the audit events' lock, or
// alone); an error of the write is returned by that later call instead,
// and so by Update, and the transaction commits nothing.
// A caller asks for it only where nothing it does between the write and
// the end of its transaction depends on the write having succeeded.
type WriteDeferrer interface {
	DeferNextWrite()
}

// ErrLeaseChanged is the error of UpdateLeaseFrom when the stored lease
// is no longer the one the caller had.
var ErrLeaseChanged = &Error{Code: ECONFLICT, Message: "the lease was changed meanwhile"}

// IntentWriter is implemented by transactions of stores where each
// statement is a round trip (PostgreSQL); see WriteIntent.
type IntentWriter interface {
	WriteIntent(l *Lease) (status string, err error)
}

// WriteIntent reads the stored status of l.Requester as GetUserStatus
// does, then creates l as CreateLease does. Where tx is an IntentWriter
// it does both in one round trip, with what DeferNextWrite left waiting
// before them, in that order (the order in which every transaction takes
// these locks; the head of the audit chain is locked last, when the
// transaction commits): the caller checks the status, returning an error
// when it forbids l (the transaction then commits nothing), appends its
// audit events and commits, reading nothing else.
func WriteIntent(tx Tx, l *Lease) (string, error) {
	if w, ok := tx.(IntentWriter); ok {
		return w.WriteIntent(l)
	}
	st, err := tx.GetUserStatus(l.Requester)
	if err != nil && ErrorCode(err) != ENOTFOUND {
		return "", err
	}
	return st, tx.CreateLease(l)
}

// StatusRefused is the error of an intent whose requester's status is one
// the caller refuses (see WriteIntentUnless).
func StatusRefused(user, status string) error {
	return Errorf(EFORBIDDEN, "user %s is %s; no access can be activated", user, status)
}

// GuardedIntentWriter is implemented by transactions of stores where each
// statement is a round trip (PostgreSQL); see WriteIntentUnless.
type GuardedIntentWriter interface {
	DeferIntent(l *Lease, refused []string) error
}

// WriteIntentUnless creates l, the intent of an account, unless the stored
// status of l.Requester, read (and locked, where the store locks) in the
// same transaction before l is created, is one of refused: the
// transaction then fails with StatusRefused and commits nothing. Where tx
// is a GuardedIntentWriter the check and the creation are deferred, sent
// with the transaction's next statement or with its audit events and
// COMMIT (in one round trip when the store can), in the order in which
// every transaction takes these locks; a refusal or a conflict is then
// returned by that later call, and so by Update. The caller appends its
// audit events and commits, reading nothing else.
func WriteIntentUnless(tx Tx, l *Lease, refused ...string) error {
	if g, ok := tx.(GuardedIntentWriter); ok {
		return g.DeferIntent(l, refused)
	}
	st, err := WriteIntent(tx, l)
	if err != nil {
		return err
	}
	if slices.Contains(refused, st) {
		return StatusRefused(l.Requester, st)
	}
	return nil
}

// DeferNextWrite asks tx to defer its next such write when it can (see
// WriteDeferrer); it does nothing on other stores.
func DeferNextWrite(tx Tx) {
	if d, ok := tx.(WriteDeferrer); ok {
		d.DeferNextWrite()
	}
}
