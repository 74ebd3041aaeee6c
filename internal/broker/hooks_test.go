package broker

import (
	"context"
	"errors"
	"path/filepath"
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
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
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
