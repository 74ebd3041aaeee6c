package sqlite

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
)

// runBatchOf commits ps as one batch, as concurrent calls of Update would.
func runBatchOf(db *DB, ps ...*pendingUpdate) {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	db.runBatch(ps)
}

func appendEvent(e *mayfly.AuditEvent) func(tx mayfly.Tx) error {
	return func(tx mayfly.Tx) error { return tx.AppendAudit(e) }
}

func event(subject string) *mayfly.AuditEvent {
	return &mayfly.AuditEvent{Time: time.Now(), Actor: "u", Action: "x", Subject: subject}
}

// fillAudit appends n events in one transaction.
func fillAudit(t *testing.T, db *DB, n int) {
	t.Helper()
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		for i := range n {
			if err := tx.AppendAudit(event(fmt.Sprintf("bulk:%d", i))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// hasEvent reports whether the event with e's sequence number and hash is
// stored.
func hasEvent(t *testing.T, db *DB, e *mayfly.AuditEvent) bool {
	t.Helper()
	var found bool
	if err := db.View(context.Background(), func(tx mayfly.Tx) error {
		evs, err := tx.ListAudit(mayfly.AuditFilter{AfterSeq: e.Seq - 1, UntilSeq: e.Seq})
		found = len(evs) == 1 && evs[0].Hash == e.Hash && e.Hash != ""
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

func verifyChain(t *testing.T, db *DB, step string) {
	t.Helper()
	if res, err := audit.Verify(context.Background(), db, 0, 0); err != nil || !res.OK {
		t.Fatalf("%s: audit chain %+v, %v", step, res, err)
	}
}

// A member of a batch whose context ends while it writes fails alone: the
// members before and after it commit, and say so.
func TestBatchMemberCancelledWhileWriting(t *testing.T) {
	db := openTemp(t)
	fillAudit(t, db, 20000)
	for round := range 3 {
		ea, ec := event("a"), event("c")
		a := &pendingUpdate{ctx: context.Background(), fn: appendEvent(ea)}
		ctx, cancel := context.WithCancel(context.Background())
		b := &pendingUpdate{ctx: ctx, fn: func(tx mayfly.Tx) error {
			go cancel()
			_, err := tx.DeleteAuditBefore(1 << 62)
			cancel()
			return err
		}}
		c := &pendingUpdate{ctx: context.Background(), fn: appendEvent(ec)}
		runBatchOf(db, a, b, c)
		if a.err != nil || c.err != nil || b.err == nil {
			t.Fatalf("round %d: errors %v, %v, %v; want only the cancelled one to fail", round, a.err, b.err, c.err)
		}
		if !hasEvent(t, db, ea) || !hasEvent(t, db, ec) {
			t.Fatalf("round %d: events of the committed members missing", round)
		}
		verifyChain(t, db, fmt.Sprintf("round %d", round))
	}
}

// When something rolls the whole transaction of a batch back (here an
// interrupted write, the way any I/O error would), every member learns
// whether its update committed, nothing the failed member writes after
// the rollback is committed on its own, later members chain to the events
// really stored, and so does the store's memory of the last event.
func TestBatchTransactionLost(t *testing.T) {
	db := openTemp(t)
	fillAudit(t, db, 20000)
	ea, ec := event("a"), event("c")
	lost := false
	a := &pendingUpdate{ctx: context.Background(), fn: appendEvent(ea)}
	b := &pendingUpdate{ctx: context.Background(), fn: func(mt mayfly.Tx) error {
		// Interrupt a long write on the connection itself until that
		// rolls the transaction back: until the member's savepoint is
		// gone.
		c := mt.(*tx).c.c
		for range 200 {
			ctx, cancel := context.WithCancel(context.Background())
			go cancel()
			c.ExecContext(ctx, "UPDATE audit_events SET actor = actor")
			cancel()
			if _, err := c.ExecContext(context.Background(), "ROLLBACK TO mayfly_update"); err != nil {
				lost = true
				break
			}
		}
		// A member that ignores the error and writes on.
		mt.PutSetting("stray", "x")
		return nil
	}}
	c := &pendingUpdate{ctx: context.Background(), fn: appendEvent(ec)}
	runBatchOf(db, a, b, c)
	if !lost {
		t.Fatal("the write was never interrupted")
	}
	if b.err == nil {
		t.Errorf("member whose transaction was rolled back: no error")
	}
	if got := hasEvent(t, db, ea); got != (a.err == nil) {
		t.Errorf("member before: error %v, but committed = %v", a.err, got)
	}
	if got := hasEvent(t, db, ec); got != (c.err == nil) {
		t.Errorf("member after: error %v, but committed = %v", c.err, got)
	}
	if err := db.View(context.Background(), func(tx mayfly.Tx) error {
		_, err := tx.GetSetting("stray")
		if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			return fmt.Errorf("setting written after the rollback: %v; want ENOTFOUND", err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	verifyChain(t, db, "after the lost batch")

	// The next update chains to the last event stored.
	ed := event("d")
	if err := db.Update(context.Background(), appendEvent(ed)); err != nil {
		t.Fatal(err)
	}
	var last *mayfly.AuditEvent
	db.View(context.Background(), func(tx mayfly.Tx) error {
		evs, err := tx.ListAudit(mayfly.AuditFilter{AfterSeq: ed.Seq - 2})
		if len(evs) == 2 {
			last = evs[0]
		}
		return err
	})
	if last == nil || ed.PrevHash != last.Hash {
		t.Errorf("next event: prev %q; want the hash of the event before it, %+v", ed.PrevHash, last)
	}
	verifyChain(t, db, "after the next update")
}

// A commit that records an intent (a lease created as provisioning) syncs
// the log before Update returns, once per batch; other commits do not.
func TestIntentCommitSyncsLog(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	syncs := func() int {
		db.wmu.Lock()
		defer db.wmu.Unlock()
		return db.logSyncs
	}
	lease := func(id string, st mayfly.LeaseState) func(tx mayfly.Tx) error {
		return func(tx mayfly.Tx) error {
			return tx.CreateLease(&mayfly.Lease{ID: id, State: st, CreatedAt: time.Now(), DueAt: time.Now()})
		}
	}
	steps := []struct {
		name string
		run  func() error
		want int // syncs after the step
	}{
		{"setting", func() error { return db.Update(ctx, func(tx mayfly.Tx) error { return tx.PutSetting("k", "v") }) }, 0},
		{"active lease", func() error { return db.Update(ctx, lease("l1", mayfly.LeaseActive)) }, 0},
		{"intent", func() error { return db.Update(ctx, lease("l2", mayfly.LeaseProvisioning)) }, 1},
		{"failed intent", func() error {
			db.Update(ctx, func(tx mayfly.Tx) error { lease("l3", mayfly.LeaseProvisioning)(tx); return errors.New("refused") })
			return nil
		}, 1},
		{"batch with two intents", func() error {
			ps := []*pendingUpdate{
				{ctx: ctx, fn: lease("l4", mayfly.LeaseProvisioning)},
				{ctx: ctx, fn: lease("l5", mayfly.LeaseActive)},
				{ctx: ctx, fn: lease("l6", mayfly.LeaseProvisioning)},
			}
			runBatchOf(db, ps...)
			return errors.Join(ps[0].err, ps[1].err, ps[2].err)
		}, 2},
		{"batch without intents", func() error {
			ps := []*pendingUpdate{{ctx: ctx, fn: lease("l7", mayfly.LeaseActive)}, {ctx: ctx, fn: lease("l8", mayfly.LeaseActive)}}
			runBatchOf(db, ps...)
			return errors.Join(ps[0].err, ps[1].err)
		}, 2},
		{"intent, sync skipped", func() error {
			return db.Update(mayfly.SkipIntentSync(ctx), lease("l10", mayfly.LeaseProvisioning))
		}, 2},
		{"intent, sync off", func() error {
			db.SetIntentSync(false)
			defer db.SetIntentSync(true)
			return db.Update(ctx, lease("l9", mayfly.LeaseProvisioning))
		}, 2},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := syncs(); got != s.want {
			t.Errorf("after %s: %d syncs of the log; want %d", s.name, got, s.want)
		}
	}
}
