package broker_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// TestCheckIdleManyActiveLeases checks that the idle check copes with more
// active leases than one query may have parameters (SQLite allows 32766):
// it reads their requests in batches.
func TestCheckIdleManyActiveLeases(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 33,000 leases")
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	set, err := policy.Compile([]policy.Policy{{Name: "p", Groups: []string{"eng"}, Targets: []string{"pg"}, Grants: []string{"ro"},
		MaxDuration: time.Hour, IdleTimeout: time.Minute}},
		[]policy.TargetInfo{{Name: "pg", Kind: "postgres", Grants: []string{"ro"}}})
	if err != nil {
		t.Fatal(err)
	}
	tgt := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: "mf_", Grants: map[string]mayfly.Grant{"ro": {Name: "ro"}}}
	b := broker.New(&broker.Config{Targets: map[string]mayfly.Target{"pg": tgt}, Policies: set}, broker.Options{Store: st})
	t0 := time.Now().UTC()
	err = st.Update(ctx, func(tx mayfly.Tx) error {
		for i := range 33000 {
			id := fmt.Sprintf("%05d", i)
			if err := tx.CreateRequest(&mayfly.Request{ID: "r" + id, Requester: "alice", Target: "pg", Grant: "ro", Policy: "p",
				State: mayfly.RequestApproved, LeaseID: "l" + id, CreatedAt: t0}); err != nil {
				return err
			}
			if err := tx.CreateLease(&mayfly.Lease{ID: "l" + id, RequestID: "r" + id, Requester: "alice", Target: "pg", Grant: "ro",
				Username: "mf_" + id, State: mayfly.LeaseActive, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), DueAt: t0.Add(time.Hour)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// No connector for pg: nothing is found idle, but every request of an
	// active lease must have been read.
	if n, err := b.CheckIdle(ctx); err != nil || n != 0 {
		t.Errorf("CheckIdle with 33,000 active leases = %d, %v; want 0, nil", n, err)
	}
}
