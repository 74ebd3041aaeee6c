package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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

// actions lists the actions of db's audit events in sequence order.
func actions(t *testing.T, db *DB) string {
	t.Helper()
	var out []string
	if err := db.View(context.Background(), func(tx mayfly.Tx) error {
		es, err := tx.ListAudit(mayfly.AuditFilter{})
		for _, e := range es {
			out = append(out, e.Action)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(out)
}

// TestChainAcrossHandles: handles on one database (replicas) appending in
// turn chain to each other's events in one run each, with the hashes
// PostgreSQL computes equal to ComputeHash, for events with every field
// set, text that JSON escapes, and several events in one transaction; the
// events the caller passed get the Seq, PrevHash and Hash stored.
func TestChainAcrossHandles(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	if n := appendOne(t, a, "a.1"); n != 1 {
		t.Fatalf("first append ran %d times; want 1", n)
	}
	appendOne(t, b, "b.1")
	appendOne(t, b, "b.2")
	if n := appendOne(t, a, "a.2"); n != 1 {
		t.Errorf("append after another handle's ran %d times; want 1", n)
	}
	at := time.Date(2026, 12, 3, 4, 5, 6, 789, time.FixedZone("x", -7200))
	evs := []*mayfly.AuditEvent{
		{Time: at, Actor: "Zoë \"<admin>\"\u2028", Action: "b.3", Subject: "lease:l1", Target: "pg", RequestID: "r1", LeaseID: "l1",
			Reason: "line\nbreak\ttab \\ backslash", Source: "[::1]:1234", Data: map[string]string{"z": "1", "a": "é", "k\"": "<&>"}},
		{Time: at.Add(time.Nanosecond), Actor: "t", Action: "b.4"},
		{Time: at, Actor: strings.Repeat("x", 5000), Action: "b.5", Data: map[string]string{}},
	}
	appendAll(t, b, evs, 5)
	appendOne(t, a, "a.3")
	// More than chainUnrolled events: the recursive form.
	var many []*mayfly.AuditEvent
	want := "[a.1 b.1 b.2 a.2 b.3 b.4 b.5 a.3"
	for i := range chainUnrolled + 2 {
		many = append(many, &mayfly.AuditEvent{Time: at.Add(time.Duration(i) * time.Second), Actor: "Zoë", Action: fmt.Sprint("m.", i), Data: map[string]string{"i": fmt.Sprint(i)}})
		want += fmt.Sprint(" m.", i)
	}
	many[1].Data = nil
	many[2].Time = time.Time{} // stored as NULL, as AppendAudit allows
	appendAll(t, a, many, 9)
	appendOne(t, b, "b.6")
	verifyChain(t, a, 8+len(many)+1)
	if got, want := actions(t, b), want+" b.6]"; got != want {
		t.Errorf("events %s; want %s, each once", got, want)
	}
	if chained, locked := a.AuditHeadStats(); chained != 4 || locked != 0 {
		t.Errorf("AuditHeadStats = %d chained, %d locked; want 4, 0", chained, locked)
	}
}

// appendAll appends evs through db in one transaction and checks that
// they were given the stored Seq (from first on), PrevHash and Hash.
func appendAll(t *testing.T, db *DB, evs []*mayfly.AuditEvent, first int64) {
	t.Helper()
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		for _, e := range evs {
			if err := tx.AppendAudit(e); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		if e.Seq != first+int64(i) || e.Hash != e.ComputeHash() || (i > 0 && e.PrevHash != evs[i-1].Hash) {
			t.Errorf("%s after commit: seq %d, prev %.8s, hash %.8s (computed %.8s); want seq %d chained", e.Action, e.Seq, e.PrevHash, e.Hash, e.ComputeHash(), first+int64(i))
		}
	}
}

// TestChainConcurrent: transactions of several handles appending at once
// (one, three or, past chainUnrolled, more events each) form one chain: the lock of the head makes
// each chain to the head the one before it left, whatever the order in
// which they reached it.
func TestChainConcurrent(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	dbs := []*DB{open(t, dsn), open(t, dsn), open(t, dsn)}
	const workers, each = 9, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	total := 0
	for w := range workers {
		total += each * []int{1, 3, chainUnrolled + 3}[w%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := dbs[w%len(dbs)]
			for i := range each {
				if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
					for k := range []int{1, 3, chainUnrolled + 3}[w%3] {
						if err := tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Actor: fmt.Sprint("w", w), Action: fmt.Sprint(i, ".", k)}); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	verifyChain(t, dbs[0], total)
}

// TestChainPruned: after events were pruned (retention), appends chain
// to the head, which outlives its event.
func TestChainPruned(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	appendOne(t, a, "a.1")
	appendOne(t, b, "b.1")
	appendOne(t, b, "b.2")
	if err := b.Update(context.Background(), func(tx mayfly.Tx) error {
		_, err := tx.DeleteAuditBefore(4)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	appendOne(t, a, "a.2")
	if err := a.View(context.Background(), func(tx mayfly.Tx) error {
		es, err := tx.ListAudit(mayfly.AuditFilter{})
		if err != nil {
			return err
		}
		if len(es) != 1 || es[0].Action != "a.2" || es[0].Seq != 4 || es[0].PrevHash == "" || es[0].Hash != es[0].ComputeHash() {
			t.Errorf("events after the prune: %+v; want a.2 (4) chained to the pruned b.2", es)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestChainReadOwnEvents: a transaction that reads the audit trail after
// appending writes its events first, on the head it locks and reads, and
// chains what it appends after to them; it counts as locked.
func TestChainReadOwnEvents(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	appendOne(t, db, "one")
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		if err := tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "two"}); err != nil {
			return err
		}
		es, err := tx.ListAudit(mayfly.AuditFilter{})
		if err != nil {
			return err
		}
		if len(es) != 2 || es[1].Action != "two" {
			t.Errorf("the transaction reads %d events; want its own second", len(es))
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "three"})
	}); err != nil {
		t.Fatal(err)
	}
	appendOne(t, db, "four")
	verifyChain(t, db, 4)
	if chained, locked := db.AuditHeadStats(); chained != 2 || locked != 1 {
		t.Errorf("AuditHeadStats = %d chained, %d locked; want 2, 1", chained, locked)
	}
}

// TestChainMissingHead: without the head row, a transaction with audit
// events fails with a clear error and commits nothing, not even its other
// writes, in either form of the append.
func TestChainMissingHead(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	if _, err := db.pool.Exec(ctx, "DELETE FROM audit_head"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, chainUnrolled + 1} {
		l := testLease(fmt.Sprint("l", n), mayfly.LeaseProvisioning)
		err := db.Update(ctx, func(tx mayfly.Tx) error {
			if err := tx.CreateLease(l); err != nil {
				return err
			}
			for range n {
				if err := tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "lease.intent", LeaseID: l.ID}); err != nil {
					return err
				}
			}
			return nil
		})
		if !errors.Is(err, errMissingHead) {
			t.Errorf("%d events: Update = %v; want %v", n, err, errMissingHead)
		}
		if err := db.View(ctx, func(tx mayfly.Tx) error {
			_, err := tx.GetLease(l.ID)
			if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
				t.Errorf("%d events: GetLease = %v; want not found (nothing committed)", n, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestChainDeferredWriteFails: a counted write sent with the COMMIT and
// the events fails the transaction when it writes nothing: nothing is
// committed, the transaction is not run again, and the error is the
// write's own.
func TestChainDeferredWriteFails(t *testing.T) {
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
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		if err := tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "three"}); err != nil {
			return err
		}
		_, err := tx.ListAudit(mayfly.AuditFilter{Limit: 1})
		return err
	}); err != nil {
		t.Fatal(err)
	}
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
	if want := map[string]float64{"chained": 2, "locked": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("mayfly_store_audit_head_total = %v; want %v", got, want)
	}
}

// TestChainOldReplica: during a rolling upgrade, a replica of the build
// that cached the head chains its events to the head it remembers and
// moves the head by compare-and-set (the statement below is the one it
// sent). After a new replica appended, that compare-and-set fails and
// writes nothing (the old replica then runs the transaction again on the
// head it locks and reads); on the true head it succeeds; and the new
// replica chains to what the old one wrote.
func TestChainOldReplica(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	appendOne(t, db, "new.1")
	var seq int64
	var hash string
	if err := db.pool.QueryRow(ctx, "SELECT seq, hash FROM audit_head").Scan(&seq, &hash); err != nil {
		t.Fatal(err)
	}
	oldAppend := func(seq int64, hash, action string) error {
		now := time.Now()
		old := &tx{pending: []pendingEvent{{e: &mayfly.AuditEvent{Time: now, Actor: "t", Action: action}, at: now.UnixNano()}}}
		ins, args := old.chainFrom(seq, hash)
		k := len(args)
		q := ins + ", h AS (UPDATE audit_head SET seq = " + placeholders(k-1, 1) + ", hash = " + placeholders(k, 1) +
			" WHERE seq = " + placeholders(k+1, 1) + " AND hash = " + placeholders(k+2, 1) + " RETURNING 1) SELECT 1 / count(*) FROM h"
		_, err := db.pool.Exec(ctx, q, append(args, seq, hash)...)
		return err
	}
	appendOne(t, db, "new.2") // the old replica's remembered head is stale now
	var pe *pgconn.PgError
	if err := oldAppend(seq, hash, "old.stale"); !errors.As(err, &pe) || (pe.Code != "22012" && pe.Code != "23505") {
		t.Fatalf("old replica's append on a stale head: %v; want it refused", err)
	}
	if err := db.pool.QueryRow(ctx, "SELECT seq, hash FROM audit_head").Scan(&seq, &hash); err != nil {
		t.Fatal(err)
	}
	if err := oldAppend(seq, hash, "old.1"); err != nil {
		t.Fatalf("old replica's append on the true head: %v", err)
	}
	appendOne(t, db, "new.3")
	verifyChain(t, db, 4)
	if got, want := actions(t, db), "[new.1 new.2 old.1 new.3]"; got != want {
		t.Errorf("events %s; want %s", got, want)
	}
}
