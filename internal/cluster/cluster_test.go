package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/clocktest"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// replicaStore is one replica's view of the shared store: it reports the
// outcome of each leader-lease attempt, and once dead it answers nothing
// (a replica frozen or cut off, which cannot release its leases).
type replicaStore struct {
	mayfly.Store
	dead     atomic.Bool
	attempts chan bool // whether an attempt took the lease
}

func (s *replicaStore) Update(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	if s.dead.Load() {
		s.attempts <- false
		return errors.New("store unreachable")
	}
	acquired := -1
	err := s.Store.Update(ctx, func(tx mayfly.Tx) error { return fn(spyTx{tx, &acquired}) })
	if acquired >= 0 {
		s.attempts <- err == nil && acquired == 1
	}
	return err
}

type spyTx struct {
	mayfly.Tx
	acquired *int
}

func (t spyTx) AcquireLeader(name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	ok, err := t.Tx.AcquireLeader(name, holder, now, ttl)
	*t.acquired = 0
	if ok {
		*t.acquired = 1
	}
	return ok, err
}

func wait[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
		panic("unreachable")
	}
}

// TestRunWhileLeaderFailover runs one singleton on two replicas over one
// store on a fake clock: only the first runs it; the other is refused
// while the lease is held; when the first dies without releasing, its
// work stops and the second takes the lease over once it lapses, within
// ttl + ttl/3; when the second stops cleanly it releases the lease and the
// first (alive again) takes over at its next renewal.
func TestRunWhileLeaderFailover(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	clk := clocktest.New(t0)
	const ttl = 9 * time.Second
	type event struct {
		who     string
		running bool
	}
	events := make(chan event, 16)
	fn := func(who string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			events <- event{who, true}
			<-ctx.Done()
			events <- event{who, false}
			return nil
		}
	}
	sa := &replicaStore{Store: st, attempts: make(chan bool, 16)}
	sb := &replicaStore{Store: st, attempts: make(chan bool, 16)}
	a := New(sa, clk, nil, "A", "a:1", "test")
	b := New(sb, clk, nil, "B", "b:1", "test")
	run := func(r *Replica) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.RunWhileLeader(ctx, "reconciler", ttl, fn(r.ID())) }()
		return func() { cancel(); <-done }
	}

	stopA := run(a)
	t.Cleanup(stopA)
	if !wait(t, sa.attempts, "first attempt of A") {
		t.Fatal("A did not take the free lease")
	}
	if e := wait(t, events, "start of A's work"); e != (event{"A", true}) {
		t.Fatalf("event %+v; want A running", e)
	}
	stopB := run(b)
	if wait(t, sb.attempts, "first attempt of B") {
		t.Fatal("B took the lease A holds")
	}
	clk.WaitTickers(2)

	// A renews; B is refused.
	clk.Advance(ttl / 3)
	if !wait(t, sa.attempts, "renewal by A") {
		t.Fatal("A could not renew its own lease")
	}
	if wait(t, sb.attempts, "attempt of B") {
		t.Fatal("B took the lease while A renews it")
	}
	renewed := clk.Now() // A's lease runs until renewed+ttl

	// A dies (its store answers nothing): its work stops at its next
	// renewal; B gets the lease only once it has lapsed.
	sa.dead.Store(true)
	for {
		clk.Advance(ttl / 3)
		wait(t, sa.attempts, "attempt of A")
		took := wait(t, sb.attempts, "attempt of B")
		if !took {
			if clk.Now().After(renewed.Add(ttl)) {
				t.Fatalf("B still refused at %s, after A's lease lapsed at %s", clk.Now().Sub(t0), renewed.Add(ttl).Sub(t0))
			}
			continue
		}
		if !clk.Now().After(renewed.Add(ttl)) {
			t.Fatalf("B took the lease at %s, before A's lapsed at %s", clk.Now().Sub(t0), renewed.Add(ttl).Sub(t0))
		}
		if lag := clk.Now().Sub(renewed); lag > ttl+ttl/3 {
			t.Fatalf("B took over %s after A's last renewal; want at most %s", lag, ttl+ttl/3)
		}
		break
	}
	got := map[event]bool{}
	for range 2 {
		got[wait(t, events, "A stopping and B starting")] = true
	}
	if !got[event{"A", false}] || !got[event{"B", true}] {
		t.Fatalf("events %v; want A stopped and B running", got)
	}

	// A comes back: refused while B holds the lease. B stops cleanly and
	// releases it: A takes it at its next attempt.
	sa.dead.Store(false)
	clk.Advance(ttl / 3)
	if wait(t, sa.attempts, "attempt of A") {
		t.Fatal("A took the lease B holds")
	}
	wait(t, sb.attempts, "renewal by B")
	stopB()
	if e := wait(t, events, "B stopping"); e != (event{"B", false}) {
		t.Fatalf("event %+v; want B stopped", e)
	}
	clk.Advance(ttl / 3)
	if !wait(t, sa.attempts, "attempt of A") {
		t.Fatal("A did not take the lease B released")
	}
	if e := wait(t, events, "A starting again"); e != (event{"A", true}) {
		t.Fatalf("event %+v; want A running", e)
	}

	// The status lists the replicas that beat, with the work each leads.
	for _, r := range []*Replica{a, b} {
		if err := r.Beat(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	status, err := b.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if status.Self != "B" || len(status.Replicas) != 2 {
		t.Fatalf("status = %+v; want self B and two replicas", status)
	}
	for _, r := range status.Replicas {
		want := map[string]string{"A": "reconciler", "B": ""}[r.ID]
		if !r.Alive || strings.Join(r.Leads, ",") != want || r.Address != strings.ToLower(r.ID)+":1" {
			t.Errorf("replica %+v; want alive, leading %q", r, want)
		}
	}
}

// TestWorkThatReturnsIsRunAgainQuietly: work whose fn returns by itself
// while the lease is held is run again at a later renewal, and the log
// says once that this replica leads it, not at every run.
//
// fn signals its run before it returns, so a renewal may look while its
// goroutine is still finishing and leave the rerun to the next renewal:
// the test renews until it has seen four runs, never more renewals than
// twice the three reruns it asks for.
func TestWorkThatReturnsIsRunAgainQuietly(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clocktest.New(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	rs := &replicaStore{Store: st, attempts: make(chan bool, 16)}
	r := New(rs, clk, log, "A", "a:1", "test")
	runs := make(chan struct{}, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.RunWhileLeader(ctx, "audit-sinks", 9*time.Second, func(context.Context) error { runs <- struct{}{}; return nil })
	}()
	defer func() { cancel(); <-done }()
	wait(t, rs.attempts, "first attempt")
	wait(t, runs, "first run")
	clk.WaitTickers(1)
	ran, renewals := 1, 0
	for ran < 4 {
		if renewals == 6 {
			t.Fatalf("%d runs after %d renewals of a held lease; want 4", ran, renewals)
		}
		clk.Advance(3 * time.Second)
		renewals++
		if !wait(t, rs.attempts, "renewal") {
			t.Fatal("the renewal of a held lease failed")
		}
		select {
		case <-runs:
			ran++
		case <-time.After(time.Second):
			// fn had not returned when the renewal looked: the next one reruns it.
		}
	}
	mu.Lock()
	n := strings.Count(logs.String(), "this replica leads the work")
	mu.Unlock()
	if n != 1 {
		t.Errorf("%d log lines saying this replica leads the work after 4 runs under one lease; want 1:\n%s", n, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestOthersAlive: a replica sees the others that beat recently, not
// itself nor one silent for three heartbeat intervals.
func TestOthersAlive(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clocktest.New(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	for _, id := range []string{"A", "B", "C"} {
		if err := New(st, clk, nil, id, id+":1", "test").Beat(context.Background()); err != nil {
			t.Fatal(err)
		}
		if id == "A" {
			clk.Advance(3 * HeartbeatEvery) // A falls silent
		}
	}
	got, err := OthersAlive(context.Background(), st, clk.Now(), "B")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "C" {
		t.Errorf("OthersAlive(B) = %v; want [C]", got)
	}
}

// listeningStore is a store whose audit notifications the test sends.
type listeningStore struct {
	mayfly.Store
	notes chan int64
}

func (s listeningStore) ListenAudit(ctx context.Context, appended func(seq int64), onErr func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case seq := <-s.notes:
			appended(seq)
		}
	}
}

// TestWatchAuditListens: on a store that notifies audit appends,
// WatchAudit calls changed at a notification of a newer event, without
// waiting for its poll (the fake clock never ticks), not at one it has
// seen; when the listener (re)starts it reads the newest event and calls
// changed if it moved meanwhile.
func TestWatchAuditListens(t *testing.T) {
	sq, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	appendOne := func() int64 {
		e := &mayfly.AuditEvent{Time: time.Now(), Action: "test.event"}
		if err := sq.Update(context.Background(), func(tx mayfly.Tx) error { return tx.AppendAudit(e) }); err != nil {
			t.Fatal(err)
		}
		return e.Seq
	}
	appendOne()
	st := listeningStore{Store: sq, notes: make(chan int64)}
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchAudit(ctx, st, nil, clocktest.New(time.Now()), time.Second, nil, func() { changed <- struct{}{} })
	}()
	expect := func(want bool, what string) {
		t.Helper()
		wait := 5 * time.Second
		if !want {
			wait = 100 * time.Millisecond
		}
		select {
		case <-changed:
			if !want {
				t.Fatalf("%s: changed called", what)
			}
		case <-time.After(wait):
			if want {
				t.Fatalf("%s: changed not called within %v", what, wait)
			}
		}
	}
	st.notes <- 0 // listening: reads the head, which has not moved
	st.notes <- 0 // (sent once the first one was taken)
	expect(false, "listening, nothing new")
	seq := appendOne()
	st.notes <- seq
	expect(true, "notified of a new event")
	st.notes <- seq
	expect(false, "notified again of the same event")
	appendOne()
	st.notes <- 0 // listening again after missing the notification
	expect(true, "listening again after an event was missed")
	cancel()
	<-done
}

// startStopStore is a store whose audit listener reports when it starts
// and when it stops.
type startStopStore struct {
	mayfly.Store
	started, stopped chan struct{}
}

func (s startStopStore) ListenAudit(ctx context.Context, appended func(seq int64), onErr func(error)) {
	s.started <- struct{}{}
	appended(0)
	<-ctx.Done()
	s.stopped <- struct{}{}
}

// TestWatchAuditDemand: WatchAudit listens only while its demand is held,
// and stops DemandLinger after the last holder let go, not before.
func TestWatchAuditDemand(t *testing.T) {
	sq, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	st := startStopStore{Store: sq, started: make(chan struct{}, 1), stopped: make(chan struct{}, 1)}
	clk := clocktest.New(time.Now())
	var demand Demand
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchAudit(ctx, st, &demand, clk, time.Second, nil, func() {})
	}()
	clk.WaitTickers(1)
	wait := func(c chan struct{}, what string) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatalf("the listener did not %s", what)
		}
	}
	select {
	case <-st.started:
		t.Fatal("listening with nothing holding the demand")
	case <-time.After(100 * time.Millisecond):
	}
	release := demand.Hold()
	wait(st.started, "start when the demand was held")
	second := demand.Hold()
	release()
	release() // a second release does nothing
	select {
	case <-st.stopped:
		t.Fatal("stopped while one holder remains")
	case <-time.After(100 * time.Millisecond):
	}
	second()
	// Let go at the clock's present: the listener stops once the clock
	// has passed DemandLinger from it, not before.
	from := clk.Now()
	deadline := time.After(10 * time.Second)
	for stopped := false; !stopped; {
		clk.Advance(time.Second)
		select {
		case <-st.stopped:
			stopped = true
			if gone := clk.Now().Sub(from); gone < DemandLinger {
				t.Fatalf("the listener stopped %v after the demand was let go; want at least %v", gone, DemandLinger)
			}
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("the listener did not stop; the clock is %v past the release", clk.Now().Sub(from))
		}
	}
	defer demand.Hold()()
	wait(st.started, "start again when the demand was held again")
	cancel()
	wait(st.stopped, "stop when the watch ends")
	<-done
}

// TestFollowReportsEachRunOfFailures: a refresh that keeps failing is
// reported once, and again after one has succeeded in between.
func TestFollowReportsEachRunOfFailures(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := []error{errors.New("a"), errors.New("b"), nil, errors.New("c"), errors.New("d"), nil}
	var calls, reported []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(ctx, time.Millisecond, func(context.Context) error {
			i := len(calls)
			calls = append(calls, "x")
			if i == len(results)-1 {
				cancel()
			}
			return results[min(i, len(results)-1)]
		}, func(err error) { reported = append(reported, err.Error()) })
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return when its context ended")
	}
	if want := []string{"a", "c"}; !slices.Equal(reported, want) {
		t.Fatalf("reported %v, want %v", reported, want)
	}
}
