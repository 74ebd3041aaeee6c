package mayfly

import (
	"context"
	"time"
)

// Store keeps requests, leases and the audit trail. Every state change and
// its audit event are written in one Update transaction.
type Store interface {
	// Update runs fn in a read-write transaction, committed when fn returns
	// nil and rolled back otherwise.
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
	// CountLeases counts leases by state.
	CountLeases() (map[LeaseState]int, error)

	// AppendAudit sets e.Seq, e.PrevHash and e.Hash and appends e.
	AppendAudit(e *AuditEvent) error
	// ListAudit returns events matching f in sequence order.
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
}

// DueCursor is a position in the order of Tx.DueLeases, so that a long
// list of due leases can be read in pages without reading any twice.
type DueCursor struct {
	DueAt time.Time
	ID    string
}

// DueCursorOf is the position of l in the order of Tx.DueLeases.
func DueCursorOf(l *Lease) DueCursor { return DueCursor{DueAt: l.DueAt, ID: l.ID} }
