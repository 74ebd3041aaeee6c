package broker_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/clocktest"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// slowClaimStore is a store whose claims of due leases take claimTakes of
// the fake clock's time when they return any: a pass over hundreds of due
// leases on a loaded machine.
type slowClaimStore struct {
	mayfly.Store
	clock      *clocktest.Fake
	claimTakes time.Duration
}

func (s *slowClaimStore) Update(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	return s.Store.Update(ctx, func(tx mayfly.Tx) error { return fn(slowClaimTx{tx, s}) })
}

func (s *slowClaimStore) View(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	return s.Store.View(ctx, func(tx mayfly.Tx) error { return fn(slowClaimTx{tx, s}) })
}

type slowClaimTx struct {
	mayfly.Tx
	s *slowClaimStore
}

func (t slowClaimTx) ClaimDue(now time.Time, states []mayfly.LeaseState, holder string, until time.Time, after mayfly.DueCursor, limit int) ([]*mayfly.Lease, error) {
	due, err := t.Tx.ClaimDue(now, states, holder, until, after, limit)
	if len(due) > 0 {
		t.s.clock.Set(t.s.clock.Now().Add(t.s.claimTakes))
	}
	return due, err
}

// TestSchedulerWakesAtTheNextDeadlineAfterASlowPass: while a lease is in
// flight on a target that hangs, the scheduler sleeps until the next
// lease falls due, even when that deadline is less than busyPoll (250 ms)
// from the end of a slow pass but more than busyPoll from its start. It
// used to look for the next deadline within 250 ms of the pass's start
// only, and then slept the whole 250 ms from its end: the next lease was
// revoked up to 250 ms late.
func TestSchedulerWakesAtTheNextDeadlineAfterASlowPass(t *testing.T) {
	ctx := context.Background()
	sqlt, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqlt.Close() })
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	clk := clocktest.New(t0)
	st := &slowClaimStore{Store: sqlt, clock: clk, claimTakes: 200 * time.Millisecond}

	hung := newHungListener(t)
	target := mayfly.Target{Name: "hung-pg", Kind: mayfly.KindPostgres, Prefix: "mfh_",
		DSN:    "postgres://postgres@" + hung.addr() + "/postgres?sslmode=disable",
		Grants: map[string]mayfly.Grant{"ro": {Name: "ro", Roles: []string{"pg_read_all_data"}}}}
	conn, err := postgres.New(target, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	b := broker.New(&broker.Config{Targets: map[string]mayfly.Target{"hung-pg": target}}, broker.Options{
		Store: st, Clock: clk, Connectors: map[string]mayfly.Connector{"hung-pg": conn},
		HMACKey: []byte("k"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	// The first lease is due now; its revocation hangs and stays in
	// flight. The next falls due 300 ms later: 100 ms after the end of the
	// pass that claims the first.
	next := t0.Add(300 * time.Millisecond)
	err = sqlt.Update(ctx, func(tx mayfly.Tx) error {
		for i, due := range []time.Time{t0, next} {
			l := &mayfly.Lease{ID: broker.NewID("lse_"), RequestID: broker.NewID("req_"), Requester: "alice", Target: "hung-pg", Grant: "ro",
				Username: "mfh_wake_" + string(rune('a'+i)), State: mayfly.LeaseActive, CreatedAt: t0.Add(-time.Hour), ExpiresAt: due, DueAt: due}
			if err := tx.CreateLease(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.RunScheduler(sctx, broker.SchedulerOptions{AttemptTimeout: time.Minute}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunScheduler = %v", err)
		}
	})

	select {
	case <-hung.first:
	case <-time.After(10 * time.Second):
		t.Fatal("the first lease's revocation did not reach its target within 10s")
	}
	wake := clk.WaitArmed()
	if wake.IsZero() {
		t.Fatal("the scheduler did not go to sleep within 10s")
	}
	if !wake.Equal(next) {
		t.Fatalf("the scheduler sleeps until %s after the slow pass (the clock is at %s); want %s, when the next lease falls due",
			wake.Sub(t0), clk.Now().Sub(t0), next.Sub(t0))
	}
}
