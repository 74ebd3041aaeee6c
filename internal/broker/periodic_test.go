package broker

import (
	"context"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/clocktest"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// periodicEnv is a broker on a fake clock with tickers, so the periodic
// loops run when the test moves time, not after real sleeps.
func periodicEnv(t *testing.T, policies []policy.Policy) (*Broker, *clocktest.Fake, *gateConnector) {
	t.Helper()
	st := openSQLite(t)
	clk := clocktest.New(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	conn := newGateConnector()
	b := New(casConfig(t, policies, map[string][]string{"alice": {"eng"}, "bob": {"dba"}}), Options{
		Store: st, Clock: clk, Connectors: map[string]mayfly.Connector{"t": conn}, HMACKey: []byte("k"),
	})
	return b, clk, conn
}

// runLoop starts a periodic loop and stops it when the test ends.
func runLoop(t *testing.T, loop func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		loop(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// tickAndWait moves the clock by d and waits for the state change the tick
// causes (the broker signals every commit).
func tickAndWait(t *testing.T, b *Broker, clk *clocktest.Fake, d time.Duration) {
	t.Helper()
	changed := b.Changed()
	clk.Advance(d)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatalf("no state change within 10s of moving the clock by %s", d)
	}
}

func TestLapserRunsOnTheClock(t *testing.T) {
	policies := []policy.Policy{{Name: "approve", Groups: []string{"eng"}, Targets: []string{"t"}, Grants: []string{"ro"},
		MaxDuration: time.Hour, Approvals: 1, ApproverGroups: []string{"dba"}, PendingTTL: 30 * time.Minute}}
	b, clk, _ := periodicEnv(t, policies)
	ctx := context.Background()
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	r, _, err := b.CreateRequest(ctx, alice, RequestInput{Target: "t", Grant: "ro", Duration: time.Hour, Reason: "x"})
	if err != nil || r.State != mayfly.RequestPending {
		t.Fatalf("request = %+v, %v; want pending", r, err)
	}
	runLoop(t, func(ctx context.Context) error { return b.RunLapser(ctx, time.Minute, time.Hour) })
	clk.WaitTickers(1)

	// Before pending_ttl the tick leaves the request pending.
	clk.Advance(20 * time.Minute)
	// Past it, the next tick lapses it.
	tickAndWait(t, b, clk, 11*time.Minute)
	got, err := b.GetRequest(ctx, alice, r.ID)
	if err != nil || got.State != mayfly.RequestLapsed {
		t.Fatalf("request after pending_ttl on the clock = %+v, %v; want lapsed", got, err)
	}
}

func TestIdleCheckerRunsOnTheClock(t *testing.T) {
	policies := []policy.Policy{{Name: "auto", Groups: []string{"eng"}, Targets: []string{"t"}, Grants: []string{"ro"},
		MaxDuration: 8 * time.Hour, IdleTimeout: 10 * time.Minute}}
	b, clk, _ := periodicEnv(t, policies)
	ctx := context.Background()
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	r, _, a, err := b.CreateAndActivate(ctx, alice, RequestInput{Target: "t", Grant: "ro", Duration: 4 * time.Hour, Reason: "x"}, ActivateOptions{})
	if err != nil || a == nil {
		t.Fatalf("activation = %+v, %v", r, err)
	}
	runLoop(t, func(ctx context.Context) error { return b.RunIdleChecker(ctx, time.Minute) })
	clk.WaitTickers(1)

	// Five idle minutes are not ten (moving the clock without a tick).
	clk.Set(clk.Now().Add(5 * time.Minute))
	if n, err := b.CheckIdle(ctx); err != nil || n != 0 {
		t.Fatalf("CheckIdle after 5 idle minutes = %d, %v; want 0", n, err)
	}
	tickAndWait(t, b, clk, 6*time.Minute)
	l, err := b.getLease(ctx, a.Lease.ID)
	if err != nil || l.State != mayfly.LeaseRevoking || l.EndReason != mayfly.EndIdle {
		t.Fatalf("lease after 11 idle minutes = %+v, %v; want revoking/idle", l, err)
	}
}

// The scheduler sleeps on the broker's clock until the nearest deadline,
// not polling, and revokes the lease when the clock reaches its expiry.
func TestSchedulerRunsOnTheClock(t *testing.T) {
	policies := []policy.Policy{{Name: "auto", Groups: []string{"eng"}, Targets: []string{"t"}, Grants: []string{"ro"}, MaxDuration: 8 * time.Hour}}
	b, clk, conn := periodicEnv(t, policies)
	ctx := context.Background()
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	_, _, a, err := b.CreateAndActivate(ctx, alice, RequestInput{Target: "t", Grant: "ro", Duration: 10 * time.Minute, Reason: "x"}, ActivateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runLoop(t, func(ctx context.Context) error { return b.RunScheduler(ctx, SchedulerOptions{MaxSleep: time.Hour}) })

	if when := clk.WaitArmed(); !when.Equal(a.Lease.ExpiresAt) {
		t.Fatalf("scheduler sleeps until %s; want the lease's expiry %s", when, a.Lease.ExpiresAt)
	}
	// A second before expiry nothing fires: the scheduler is still asleep
	// until the same deadline and the account is there.
	clk.Advance(a.Lease.ExpiresAt.Sub(clk.Now()) - time.Second)
	if when := clk.WaitArmed(); !when.Equal(a.Lease.ExpiresAt) {
		t.Fatalf("a second before expiry the scheduler sleeps until %s; want %s", when, a.Lease.ExpiresAt)
	}
	if l, _ := b.getLease(ctx, a.Lease.ID); l.State != mayfly.LeaseActive || !conn.exists(l.Username) {
		t.Fatalf("lease a second before its expiry = %s, account present %v; want active and present", l.State, conn.exists(l.Username))
	}
	deadline := time.Now().Add(10 * time.Second)
	changed := b.Changed()
	clk.Advance(time.Second)
	for {
		l, _ := b.getLease(ctx, a.Lease.ID)
		if l.State == mayfly.LeaseRevoked {
			if l.EndReason != mayfly.EndExpired || !l.EndedAt.Equal(a.Lease.ExpiresAt) || conn.exists(l.Username) {
				t.Fatalf("lease after expiry = %s/%s ended %s, account present %v; want revoked/expired at %s and gone",
					l.State, l.EndReason, l.EndedAt, conn.exists(l.Username), a.Lease.ExpiresAt)
			}
			return
		}
		select {
		case <-changed:
			changed = b.Changed()
		case <-time.After(time.Until(deadline)):
			t.Fatalf("lease still %s 10s after the clock reached its expiry", l.State)
		}
	}
}
