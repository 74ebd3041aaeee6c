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

// TestClaimOfDeadReplicaLapses: a lease claimed by a replica that died
// mid-attempt (its claim stays in the store) is left alone by another
// replica's scheduler until the claim's deadline, then revoked by it.
func TestClaimOfDeadReplicaLapses(t *testing.T) {
	policies := []policy.Policy{{Name: "auto", Groups: []string{"eng"}, Targets: []string{"t"}, Grants: []string{"ro"}, MaxDuration: 8 * time.Hour}}
	b, clk, conn := periodicEnv(t, policies)
	ctx := context.Background()
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	_, _, a, err := b.CreateAndActivate(ctx, alice, RequestInput{Target: "t", Grant: "ro", Duration: 10 * time.Minute, Reason: "x"}, ActivateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(11 * time.Minute)
	const claimFor = 2 * time.Minute
	deadline := clk.Now().Add(claimFor)
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		ls, err := tx.ClaimDue(clk.Now(), dueStates, "dead", deadline, mayfly.DueCursor{}, 0)
		if err == nil && (len(ls) != 1 || ls[0].ID != a.Lease.ID) {
			err = fmt.Errorf("the dead replica claimed %d leases; want %s", len(ls), a.Lease.ID)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	runLoop(t, func(ctx context.Context) error {
		return b.RunScheduler(ctx, SchedulerOptions{Holder: "alive", MaxSleep: time.Hour})
	})
	// Asleep with the lease claimed elsewhere: nothing revoked.
	for clk.Now().Before(deadline) {
		if when := clk.WaitArmed(); when.IsZero() {
			t.Fatal("the scheduler does not sleep while the due lease is claimed by another replica")
		}
		if l, _ := b.getLease(ctx, a.Lease.ID); l.State != mayfly.LeaseActive || !conn.exists(l.Username) {
			t.Fatalf("at %s, before the dead replica's claim lapsed: lease %s, account present %v; want active and present",
				clk.Now().Sub(deadline), l.State, conn.exists(l.Username))
		}
		clk.Advance(time.Minute)
	}
	// The claim has lapsed (at the deadline exactly it still holds). The
	// scheduler, woken by the last minute, must be asleep again before the
	// clock moves on: had it read the leases at the deadline and armed its
	// timer after the next step, nothing would move the clock to wake it.
	if when := clk.WaitArmed(); when.IsZero() {
		t.Fatal("the scheduler does not sleep again at the dead replica's claim deadline")
	}
	changed := b.Changed()
	clk.Advance(time.Second)
	stop := time.After(10 * time.Second)
	for {
		l, _ := b.getLease(ctx, a.Lease.ID)
		if l.State == mayfly.LeaseRevoked {
			if conn.exists(l.Username) {
				t.Fatal("lease revoked but its account is still on the target")
			}
			return
		}
		select {
		case <-changed:
			changed = b.Changed()
		case <-stop:
			t.Fatalf("lease still %s 10s after the dead replica's claim lapsed", l.State)
		}
	}
}

// TestSlowRevocationKeepsItsClaim: a replica whose revocation takes many
// claim terms keeps its claim renewed, so another replica's scheduler,
// polling all along, never attempts that lease; once the attempt ends the
// lease is revoked once. (Claims that were not renewed would lapse after
// one term and the second replica would attempt the lease too.)
func TestSlowRevocationKeepsItsClaim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
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
			Store: st, Clock: mayfly.SystemClock{}, Connectors: map[string]mayfly.Connector{"t": &countingConnector{gateConnector: conn, calls: calls}}, HMACKey: []byte("k"),
		}))
	}
	ctx := context.Background()
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	_, _, a, err := bs[0].CreateAndActivate(ctx, alice, RequestInput{Target: "t", Grant: "ro", Duration: 10 * time.Minute, Reason: "slow"}, ActivateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	in := make(chan string, 8)
	conn.mu.Lock()
	conn.revGate, conn.revIn = gate, in
	conn.mu.Unlock()
	// Due now.
	err = st.Update(ctx, func(tx mayfly.Tx) error {
		l, err := tx.GetLease(a.Lease.ID)
		if err != nil {
			return err
		}
		l.ExpiresAt, l.DueAt = time.Now().UTC(), time.Now().UTC()
		return tx.UpdateLease(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	const claimFor = 900 * time.Millisecond
	runLoop(t, func(ctx context.Context) error {
		return bs[0].RunScheduler(ctx, SchedulerOptions{Holder: "r1", ClaimFor: claimFor, AttemptTimeout: time.Minute, MaxSleep: time.Second})
	})
	select {
	case <-in:
	case <-time.After(10 * time.Second):
		t.Fatal("r1 did not attempt the due lease")
	}
	runLoop(t, func(ctx context.Context) error {
		return bs[1].RunScheduler(ctx, SchedulerOptions{Holder: "r2", ClaimFor: claimFor, AttemptTimeout: time.Minute, MaxSleep: time.Second})
	})
	select {
	case u := <-in:
		t.Fatalf("r2 attempted %s while r1's attempt was running (its claim lapsed)", u)
	case <-time.After(5 * claimFor):
	}
	close(gate)
	stop := time.After(10 * time.Second)
	for {
		l, err := bs[1].getLease(ctx, a.Lease.ID)
		if err != nil {
			t.Fatal(err)
		}
		if l.State == mayfly.LeaseRevoked {
			break
		}
		select {
		case <-stop:
			t.Fatalf("lease still %s 10s after its attempt was let go", l.State)
		case <-time.After(20 * time.Millisecond):
		}
	}
	calls.mu.Lock()
	defer calls.mu.Unlock()
	if n := calls.n[a.Lease.ID]; n != 1 {
		t.Errorf("%d Revoke calls of the lease; want 1", n)
	}
}
