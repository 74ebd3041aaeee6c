package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/metrics"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
)

// appendOne appends one audit event through db and returns how many
// times Update ran its function.
func appendOne(t *testing.T, db *DB, action string) int {
	t.Helper()
	runs := 0
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		runs++
		return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Actor: "t", Action: action})
	}); err != nil {
		t.Fatalf("append %s: %v", action, err)
	}
	return runs
}

// verifyChain checks that db's audit chain is intact and holds n events.
func verifyChain(t *testing.T, db *DB, n int) {
	t.Helper()
	res, err := audit.Verify(context.Background(), db, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Checked != int64(n) || res.Last != int64(n) {
		t.Fatalf("audit.Verify = %+v; want an intact chain of %d events", res, n)
	}
}

// TestHeadCacheStale: a handle whose cached head another handle (a
// replica) moved chains its events to it, finds the head moved, writes
// nothing, and runs the transaction again on the head it reads; the chain
// stays intact, and the handle rests its cache for movedRest, then uses it
// again.
func TestHeadCacheStale(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	if n := appendOne(t, a, "a.1"); n != 1 {
		t.Fatalf("first append ran %d times; want 1", n)
	}
	if _, _, ok := a.cache.get(); !ok {
		t.Fatal("the head is not cached after a commit")
	}
	appendOne(t, b, "b.1")
	appendOne(t, b, "b.2")
	if n := appendOne(t, a, "a.2"); n != 2 {
		t.Errorf("append on a stale head ran %d times; want 2 (the cached head, then the head read)", n)
	}
	if cached, moved, locked := a.AuditHeadStats(); cached != 1 || moved != 1 || locked != 2 {
		t.Errorf("AuditHeadStats = %d cached, %d moved, %d locked; want 1, 1, 2", cached, moved, locked)
	}
	if _, _, ok := a.cache.get(); ok {
		t.Error("the cached head is used right after it was found moved")
	}
	if n := appendOne(t, a, "a.3"); n != 1 {
		t.Errorf("append after the head was read again ran %d times; want 1", n)
	}
	a.cache.mu.Lock()
	a.cache.movedAt = a.cache.movedAt.Add(-movedRest)
	a.cache.mu.Unlock()
	if n := appendOne(t, a, "a.4"); n != 1 {
		t.Errorf("append after the rest ran %d times; want 1", n)
	}
	if cached, moved, locked := a.AuditHeadStats(); cached != 2 || moved != 1 || locked != 3 {
		t.Errorf("AuditHeadStats = %d cached, %d moved, %d locked; want 2, 1, 3", cached, moved, locked)
	}
	verifyChain(t, a, 6)
	var actions []string
	if err := b.View(context.Background(), func(tx mayfly.Tx) error {
		es, err := tx.ListAudit(mayfly.AuditFilter{})
		for _, e := range es {
			actions = append(actions, e.Action)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(actions); got != "[a.1 b.1 b.2 a.2 a.3 a.4]" {
		t.Errorf("events %s; want [a.1 b.1 b.2 a.2 a.3 a.4], each once", got)
	}
}

// TestHeadCachePruned: when the events after a handle's cached head were
// pruned by another replica (retention), so that no event of the same
// sequence number stops its insert, the compare-and-set of the head still
// refuses the stale head, and the chain does not fork.
func TestHeadCachePruned(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	appendOne(t, a, "a.1")
	appendOne(t, b, "b.1")
	appendOne(t, b, "b.2")
	if err := b.Update(context.Background(), func(tx mayfly.Tx) error {
		_, err := tx.DeleteAuditBefore(3)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n := appendOne(t, a, "a.2"); n != 2 {
		t.Errorf("append on a stale head ran %d times; want 2", n)
	}
	if err := a.View(context.Background(), func(tx mayfly.Tx) error {
		es, err := tx.ListAudit(mayfly.AuditFilter{})
		if err != nil {
			return err
		}
		if len(es) != 2 || es[0].Action != "b.2" || es[1].Action != "a.2" || es[1].Seq != 4 || es[1].PrevHash != es[0].Hash {
			t.Errorf("events after the prune: %+v; want b.2 (3), then a.2 (4) chained to it", es)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestHeadCacheListener: a handle that hears, through its audit
// listener, that another replica appended chains its next events to the
// head that replica notified, without reading it; a forged or stale
// notification costs a run on the head read, never the chain; and the
// cache is not used while the listener is not listening.
func TestHeadCacheListener(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	ctx, cancel := context.WithCancel(context.Background())
	heard := make(chan int64, 100)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		a.ListenAudit(ctx, func(seq int64) { heard <- seq }, nil)
	}()
	defer func() { cancel(); <-stopped }()
	wait := func(seq int64) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case s := <-heard:
				if s == seq {
					return
				}
			case <-deadline:
				t.Fatalf("the listener did not hear of event %d", seq)
			}
		}
	}
	// The head notification follows the one appended hears of.
	waitHead := func(seq int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if s, _, ok := a.cache.get(); ok && s == seq {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the cache does not hold the head %d", seq)
			}
		}
	}
	stats := func(want string) {
		t.Helper()
		if c, m, l := a.AuditHeadStats(); fmt.Sprint(c, m, l) != want {
			t.Errorf("AuditHeadStats (cached, moved, locked) = %d %d %d; want %s", c, m, l, want)
		}
	}
	wait(0)
	appendOne(t, a, "a.1") // the head unknown: read
	wait(1)
	if n := appendOne(t, a, "a.2"); n != 1 {
		t.Errorf("append on a's own head ran %d times; want 1", n)
	}
	wait(2)
	appendOne(t, b, "b.1")
	wait(3)
	waitHead(3)
	if n := appendOne(t, a, "a.3"); n != 1 {
		t.Errorf("append after another replica's was heard ran %d times; want 1", n)
	}
	stats("2 0 1")
	wait(4)
	waitHead(4)
	// A forged notification of a head that is not the head.
	if _, err := b.pool.Exec(context.Background(), "SELECT pg_notify($1, '99 forged')", HeadChannel); err != nil {
		t.Fatal(err)
	}
	waitHead(99)
	if n := appendOne(t, a, "a.4"); n != 2 {
		t.Errorf("append on a forged head ran %d times; want 2", n)
	}
	stats("3 1 2")
	// Known again from that commit, once the cache has rested.
	a.cache.mu.Lock()
	a.cache.movedAt = a.cache.movedAt.Add(-movedRest)
	a.cache.mu.Unlock()
	if n := appendOne(t, a, "a.5"); n != 1 {
		t.Errorf("append after the forged head ran %d times; want 1", n)
	}
	stats("4 1 2")
	cancel()
	<-stopped
	if _, _, ok := a.cache.get(); ok {
		t.Error("the cached head is used once the listener stopped, before a commit of the handle")
	}
	// Stopped for good, the handle chains to the head its own commits
	// leave, as one that never listened.
	if n := appendOne(t, a, "a.6"); n != 1 {
		t.Errorf("first append after the listener stopped ran %d times; want 1", n)
	}
	stats("4 1 3")
	if n := appendOne(t, a, "a.7"); n != 1 {
		t.Errorf("append on the head of the handle's own commit ran %d times; want 1", n)
	}
	stats("5 1 3")
	appendOne(t, b, "b.2")
	// Unheard, the move costs one try on the old head.
	if n := appendOne(t, a, "a.8"); n != 2 {
		t.Errorf("append after an unheard move ran %d times; want 2", n)
	}
	stats("6 2 4")
	verifyChain(t, a, 10)
}

// TestHeadCacheDeferredWriteFails: a counted write sent with the COMMIT on
// the cached head fails the transaction when it writes nothing: nothing
// is committed, the transaction is not run again, and the error is the
// write's own.
func TestHeadCacheDeferredWriteFails(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	l := testLease("l1", mayfly.LeaseProvisioning)
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.CreateLease(l); err != nil {
			return err
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "lease.intent", LeaseID: l.ID})
	}); err != nil {
		t.Fatal(err)
	}
	stale := *l
	stale.State = mayfly.LeaseRevoking
	active := *l
	active.State = mayfly.LeaseActive
	cases := []struct {
		name string
		fn   func(tx mayfly.Tx) error
		is   func(error) bool
	}{
		{"stale compare-and-set", func(tx mayfly.Tx) error { return tx.UpdateLeaseFrom(&stale, &active) },
			func(err error) bool { return errors.Is(err, mayfly.ErrLeaseChanged) }},
		{"lease that exists", func(tx mayfly.Tx) error { return tx.CreateLease(l) },
			func(err error) bool { return mayfly.ErrorCode(err) == mayfly.ECONFLICT }},
		{"missing lease", func(tx mayfly.Tx) error { return tx.UpdateLease(testLease("nope", mayfly.LeaseActive)) },
			func(err error) bool { return mayfly.ErrorCode(err) == mayfly.ENOTFOUND }},
	}
	for _, c := range cases {
		if _, _, ok := db.cache.get(); !ok {
			t.Fatalf("%s: the head is not cached", c.name)
		}
		runs := 0
		err := db.Update(ctx, func(tx mayfly.Tx) error {
			runs++
			mayfly.DeferNextWrite(tx)
			if err := c.fn(tx); err != nil {
				return err
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "should.not.commit", LeaseID: l.ID})
		})
		if !c.is(err) || runs != 1 {
			t.Errorf("%s: Update = %v after %d runs; want the write's error after 1", c.name, err, runs)
		}
	}
	if n := appendOne(t, db, "after"); n != 1 {
		t.Errorf("append after the failures ran %d times; want 1", n)
	}
	verifyChain(t, db, 2)
	if err := db.View(ctx, func(tx mayfly.Tx) error {
		got, err := tx.GetLease(l.ID)
		if err != nil {
			return err
		}
		if got.State != mayfly.LeaseProvisioning {
			t.Errorf("lease is %s; want provisioning (nothing committed)", got.State)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestHeadStatsMetric: the counts are exported as
// mayfly_store_audit_head_total{how}.
func TestHeadStatsMetric(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	appendOne(t, db, "one")
	appendOne(t, db, "two")
	mfs, err := metrics.New(db).Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "mayfly_store_audit_head_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if want := map[string]float64{"cached": 1, "moved": 0, "locked": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("mayfly_store_audit_head_total = %v; want %v", got, want)
	}
}
