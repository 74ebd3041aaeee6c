package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/clocktest"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// TestTwoSchedulersRevokeEachLeaseOnce runs two brokers on one store, each
// with its own scheduler (two replicas), over one target: every due lease
// is revoked exactly once (one Revoke call, one lease.revoked event),
// whichever scheduler claims it. (The SQLite store keeps the head of the
// audit chain in memory, so the two share one handle; replicas in separate
// processes share a PostgreSQL store.)
func TestTwoSchedulersRevokeEachLeaseOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	clk := clocktest.New(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	conn := newGateConnector()
	calls := &revokeCalls{n: map[string]int{}}
	policies := []policy.Policy{{Name: "auto", Groups: []string{"eng"}, Targets: []string{"t"}, Grants: []string{"ro"}, MaxDuration: 8 * time.Hour}}
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var bs []*Broker
	for range 2 {
		bs = append(bs, New(casConfig(t, policies, map[string][]string{"alice": {"eng"}}), Options{
			Store: st, Clock: clk, Connectors: map[string]mayfly.Connector{"t": &countingConnector{gateConnector: conn, calls: calls}}, HMACKey: []byte("k"),
		}))
	}
	ctx := context.Background()
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	const n = 60
	ids := map[string]bool{}
	for i := range n {
		_, _, a, err := bs[i%2].CreateAndActivate(ctx, alice, RequestInput{Target: "t", Grant: "ro", Duration: 10 * time.Minute, Reason: fmt.Sprint(i)}, ActivateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids[a.Lease.ID] = true
	}
	for i, b := range bs {
		// Batches of 7 leases: the schedulers interleave their claims.
		runLoop(t, func(ctx context.Context) error {
			return b.RunScheduler(ctx, SchedulerOptions{Holder: fmt.Sprintf("r%d", i+1), BatchSize: 7, PerTarget: 1, MaxSleep: time.Hour})
		})
	}
	c0, c1 := bs[0].Changed(), bs[1].Changed()
	clk.Advance(11 * time.Minute)
	deadline := time.After(20 * time.Second)
	for {
		var live int
		err := bs[0].store.View(ctx, func(tx mayfly.Tx) error {
			ls, err := tx.ListLeases(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseActive, mayfly.LeaseRevoking}})
			live = len(ls)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if live == 0 {
			break
		}
		select {
		case <-c0:
			c0 = bs[0].Changed()
		case <-c1:
			c1 = bs[1].Changed()
		case <-deadline:
			t.Fatalf("%d leases still live 20s after their expiry", live)
		}
	}
	var revoked map[string]int
	err = bs[1].store.View(ctx, func(tx mayfly.Tx) error {
		es, err := tx.ListAudit(mayfly.AuditFilter{Action: "lease.revoked"})
		revoked = map[string]int{}
		for _, e := range es {
			revoked[e.LeaseID]++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for id := range ids {
		if revoked[id] != 1 {
			t.Errorf("lease %s: %d lease.revoked events; want 1", id, revoked[id])
		}
	}
	calls.mu.Lock()
	for id := range ids {
		if calls.n[id] != 1 {
			t.Errorf("lease %s: %d Revoke calls; want 1", id, calls.n[id])
		}
	}
	calls.mu.Unlock()
	if conn.count() != 0 {
		t.Errorf("%d accounts left on the target; want none", conn.count())
	}
}

type revokeCalls struct {
	mu sync.Mutex
	n  map[string]int // lease id → Revoke calls
}

// countingConnector counts the Revoke calls of each lease.
type countingConnector struct {
	*gateConnector
	calls *revokeCalls
}

func (c *countingConnector) Revoke(ctx context.Context, req mayfly.RevokeRequest) error {
	c.calls.mu.Lock()
	c.calls.n[req.LeaseID]++
	c.calls.mu.Unlock()
	return c.gateConnector.Revoke(ctx, req)
}
