package sink

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

func openStore(t testing.TB) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "mayfly.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// testEvent returns a varied event: odd values test escaping in every
// format.
func testEvent(i int) *mayfly.AuditEvent {
	e := &mayfly.AuditEvent{
		Time:    time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		Actor:   fmt.Sprintf("user%d", i%7),
		Action:  []string{"request.create", "request.approve", "lease.activate", "lease.revoke"}[i%4],
		Subject: fmt.Sprintf("lease:l%d", i),
		LeaseID: fmt.Sprintf("l%d", i),
		Reason:  "ticket OPS-1 <urgent> & \"quoted\"",
	}
	if i%3 == 0 {
		e.Actor = `we"ird\actor]` + "é"
		e.RequestID = fmt.Sprintf("r%d", i)
		e.Target = "pg-prod"
		e.Data = map[string]string{"grant": "readonly", "n": strconv.Itoa(i)}
	}
	return e
}

// appendEvents appends n events in one transaction and returns them with
// their sequence numbers set.
func appendEvents(t testing.TB, s mayfly.Store, n int) []*mayfly.AuditEvent {
	t.Helper()
	var out []*mayfly.AuditEvent
	err := s.Update(context.Background(), func(tx mayfly.Tx) error {
		for i := range n {
			e := testEvent(i)
			if err := tx.AppendAudit(e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func allEvents(t testing.TB, s mayfly.Store) []*mayfly.AuditEvent {
	t.Helper()
	var out []*mayfly.AuditEvent
	err := s.View(context.Background(), func(tx mayfly.Tx) error {
		var err error
		out, err = tx.ListAudit(mayfly.AuditFilter{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func storedCursor(t testing.TB, s mayfly.Store, name string) string {
	t.Helper()
	var v string
	err := s.View(context.Background(), func(tx mayfly.Tx) error {
		var err error
		v, err = tx.GetSetting(CursorKey(name))
		return err
	})
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// newRunner returns a Runner with short intervals for tests.
func newRunner(t testing.TB, s mayfly.Store, getenv func(string) string, cfgs ...Config) *Runner {
	t.Helper()
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	r, err := New(s, cfgs, getenv, log)
	if err != nil {
		t.Fatal(err)
	}
	r.poll = 20 * time.Millisecond
	r.minBackoff = 10 * time.Millisecond
	r.maxBackoff = 40 * time.Millisecond
	return r
}

// start runs r until the returned stop function is called (or the test
// ends) and checks that Run returns nil.
func start(t testing.TB, r *Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v; want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkAtLeastOnceInOrder checks that got delivers sequence numbers 1..n
// in order, allowing a batch to be repeated from the cursor: every number
// follows its predecessor or restarts at or below it, and never skips
// ahead. It returns how many deliveries were repeats.
func checkAtLeastOnceInOrder(t testing.TB, got []int64, n int64) int {
	t.Helper()
	var top int64
	repeats := 0
	for i, s := range got {
		if s > top+1 {
			t.Fatalf("delivery %d is event %d after events up to %d: events were skipped (got %v)", i, s, top, got)
		}
		if i > 0 && s != got[i-1]+1 && s > got[i-1] {
			t.Fatalf("delivery %d is event %d after event %d: out of order", i, s, got[i-1])
		}
		if s <= top {
			repeats++
		}
		top = max(top, s)
	}
	if top != n {
		t.Fatalf("delivered events up to %d; want up to %d", top, n)
	}
	return repeats
}

func seqs(events []*mayfly.AuditEvent) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Seq
	}
	return out
}
