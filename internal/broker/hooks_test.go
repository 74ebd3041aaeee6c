package broker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// rerunStore runs every write transaction twice, the first run rolled
// back, as a store does when a transaction is chosen as a deadlock's
// victim and retried.
type rerunStore struct{ *sqlite.DB }

var errRerun = errors.New("rolled back to be run again")

func (s rerunStore) Update(ctx context.Context, fn func(mayfly.Tx) error) error {
	if err := s.DB.Update(ctx, func(tx mayfly.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errRerun
	}); !errors.Is(err, errRerun) {
		return err
	}
	return s.DB.Update(ctx, fn)
}

// TestRevokedHookOncePerOutcome: the Revoked hook (the revocation metrics)
// runs once per recorded outcome, after the commit, even when the store
// ran the transaction twice.
func TestRevokedHookOncePerOutcome(t *testing.T) {
	ctx := context.Background()
	st := openSQLite(t)
	var mu sync.Mutex
	calls := map[string]int{}
	conn := newGateConnector()
	b := New(casConfig(t, casPolicies, map[string][]string{"alice": {"eng"}}), Options{
		Store: rerunStore{st}, Clock: &fakeClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)},
		Connectors: map[string]mayfly.Connector{"t": conn}, HMACKey: []byte("k"),
		Hooks: Hooks{Revoked: func(l *mayfly.Lease, _ time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				calls[l.ID]++
			}
		}},
	})
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	_, _, a, err := b.CreateAndActivate(ctx, alice, RequestInput{Target: "t", Grant: "ro", Duration: 30 * time.Minute, Reason: "x"}, ActivateOptions{})
	if err != nil || a == nil {
		t.Fatalf("CreateAndActivate = %+v, %v", a, err)
	}
	l, err := b.EndLease(ctx, alice, a.Lease.ID, mayfly.EndDone, "")
	if err != nil || l.State != mayfly.LeaseRevoked {
		t.Fatalf("EndLease = %+v, %v; want revoked", l, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := calls[a.Lease.ID]; n != 1 {
		t.Fatalf("Revoked hook ran %d times for one revocation; want 1", n)
	}
}

// refuseAuditStore fails every transaction that appends an audit event
// with action, as a store does when it cannot write.
type refuseAuditStore struct {
	mayfly.Store
	action string
}

type refuseAuditTx struct {
	mayfly.Tx
	action string
}

func (s refuseAuditStore) Update(ctx context.Context, fn func(mayfly.Tx) error) error {
	return s.Store.Update(ctx, func(tx mayfly.Tx) error { return fn(refuseAuditTx{tx, s.action}) })
}

func (t refuseAuditTx) AppendAudit(e *mayfly.AuditEvent) error {
	if e.Action == t.action {
		return errors.New("disk full")
	}
	return t.Tx.AppendAudit(e)
}

// markedConnector reports every account as carrying this installation's
// mark.
type markedConnector struct{ *gateConnector }

func (m markedConnector) Accounts(ctx context.Context, req mayfly.AccountsRequest) ([]mayfly.Account, error) {
	as, err := m.gateConnector.Accounts(ctx, req)
	for i := range as {
		as[i].Marked = true
	}
	return as, err
}

// TestReconcileReportsUnrecordedOrphanRemoval: an orphan removed while the
// store refuses its audit event is still removed, and the reconciliation
// says the event is missing instead of dropping it silently.
func TestReconcileReportsUnrecordedOrphanRemoval(t *testing.T) {
	ctx := context.Background()
	st := openSQLite(t)
	conn := newGateConnector()
	conn.accounts["mf_left_behind"] = true
	b := New(casConfig(t, casPolicies, map[string][]string{"root": {"admin"}}), Options{
		Store: refuseAuditStore{st, "account.orphan_removed"}, Clock: &fakeClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)},
		Connectors: map[string]mayfly.Connector{"t": markedConnector{conn}}, HMACKey: []byte("k"),
	})
	res, err := b.Reconcile(ctx, Caller{User: "root", Admin: true}, "t")
	if err != nil || len(res) != 1 {
		t.Fatalf("Reconcile = %+v, %v", res, err)
	}
	if conn.exists("mf_left_behind") || !slices.Equal(res[0].OrphansRemoved, []string{"mf_left_behind"}) {
		t.Errorf("orphans removed = %v; want mf_left_behind, gone from the target", res[0].OrphansRemoved)
	}
	if len(res[0].Errors) != 1 || !strings.Contains(res[0].Errors[0], "account.orphan_removed of mf_left_behind in the audit trail: disk full") {
		t.Errorf("errors = %q; want the unrecorded audit event reported", res[0].Errors)
	}
}
