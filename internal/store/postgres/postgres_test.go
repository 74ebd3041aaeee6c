package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/store/storetest"
)

func open(t testing.TB, dsn string) *DB {
	t.Helper()
	db, err := Open(context.Background(), dsn, 4)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) mayfly.Store { return open(t, pgtest.NewDatabase(t)) })
}

// TestChainAcrossReplicas appends audit events from many goroutines
// through two handles on one database, as two replicas would, each event
// in a transaction with a state change: the trail is one intact chain
// holding every event, each lease's creation audited once.
func TestChainAcrossReplicas(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	dbs := []*DB{open(t, dsn), open(t, dsn)}
	const workers, each = 16, 25
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	start := make(chan struct{})
	for w := range workers {
		db := dbs[w%2]
		wg.Go(func() {
			<-start
			for i := range each {
				id := fmt.Sprintf("l-%d-%d", w, i)
				errs <- db.Update(ctx, func(tx mayfly.Tx) error {
					if err := tx.CreateLease(&mayfly.Lease{ID: id, State: mayfly.LeaseActive, Target: fmt.Sprintf("t%d", i%3)}); err != nil {
						return err
					}
					if err := tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "lease.create", LeaseID: id}); err != nil {
						return err
					}
					return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "lease.note", LeaseID: id})
				})
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	res, err := audit.Verify(ctx, dbs[1], 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Checked != 2*workers*each || res.First != 1 || res.Last != 2*workers*each {
		t.Fatalf("audit.Verify = %+v; want an intact chain of events 1 to %d", res, 2*workers*each)
	}
	var es []*mayfly.AuditEvent
	var counts map[mayfly.LeaseState]int
	if err := dbs[0].View(ctx, func(tx mayfly.Tx) error {
		var err error
		if es, err = tx.ListAudit(mayfly.AuditFilter{}); err != nil {
			return err
		}
		counts, err = tx.CountLeases()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The two events of one transaction are adjacent: appends of other
	// transactions wait for the head of the chain.
	created := map[string]bool{}
	for i := 0; i+1 < len(es); i += 2 {
		a, b := es[i], es[i+1]
		if a.Action != "lease.create" || b.Action != "lease.note" || a.LeaseID != b.LeaseID || created[a.LeaseID] {
			t.Fatalf("events %d and %d: %s %s, %s %s; want one transaction's create and note", a.Seq, b.Seq, a.Action, a.LeaseID, b.Action, b.LeaseID)
		}
		created[a.LeaseID] = true
	}
	if len(created) != workers*each || counts[mayfly.LeaseActive] != workers*each {
		t.Errorf("%d leases audited, %d counted active; want %d", len(created), counts[mayfly.LeaseActive], workers*each)
	}
}

// TestConcurrentOpen opens one fresh database from several handles at
// once, as replicas starting together: each migration is applied once and
// every handle works.
func TestConcurrentOpen(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	const n = 4
	dbs := make([]*DB, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range dbs {
		wg.Go(func() {
			<-start
			dbs[i], errs[i] = Open(context.Background(), dsn, 2)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		t.Cleanup(func() { dbs[i].Close() })
	}
	var versions []int32
	rows, err := dbs[0].pool.Query(context.Background(), "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int32
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	ms, _ := migrations()
	if len(versions) != len(ms) || int(versions[len(versions)-1]) != SchemaVersion() {
		t.Errorf("schema_migrations versions = %v; want each of %d migrations once", versions, len(ms))
	}
	for i, db := range dbs {
		if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
			return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: fmt.Sprintf("open.%d", i)})
		}); err != nil {
			t.Errorf("Update through handle %d: %v", i, err)
		}
	}
}

// TestNewerSchema: a database migrated by a newer build is refused with a
// clear error, not changed.
func TestNewerSchema(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db := open(t, dsn)
	if _, err := db.pool.Exec(context.Background(), "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), dsn, 1)
	if mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Fatalf("Open of a newer schema = %v; want an EINVALID error", err)
	}
}

// TestOpenExisting: opening a store for a diagnosis run changes nothing:
// no schema is made in an empty database (ENOTFOUND) nor migrated in one
// of another version (EINVALID, saying which way); this build's opens.
func TestOpenExisting(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	if _, err := OpenExisting(ctx, dsn, 1); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Fatalf("OpenExisting of an empty database = %v; want ENOTFOUND", err)
	}
	if _, err := OpenExisting(ctx, dsn, 1); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Fatalf("OpenExisting made the schema: the second call = %v; want ENOTFOUND", err)
	}
	db := open(t, dsn)
	got, err := OpenExisting(ctx, dsn, 1)
	if err != nil {
		t.Fatalf("OpenExisting of this build's schema: %v", err)
	}
	if err := got.View(ctx, func(tx mayfly.Tx) error { _, err := tx.ListSettings(""); return err }); err != nil {
		t.Errorf("a read through OpenExisting's store: %v", err)
	}
	got.Close()
	latest := SchemaVersion()
	if _, err := db.pool.Exec(ctx, "DELETE FROM schema_migrations WHERE version = $1", latest); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenExisting(ctx, dsn, 1); mayfly.ErrorCode(err) != mayfly.EINVALID || !strings.Contains(mayfly.ErrorMessage(err), "older") || !errors.Is(err, ErrOlderSchema) {
		t.Errorf("OpenExisting of an older schema = %v; want EINVALID saying it is older", err)
	}
	var n int
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM schema_migrations WHERE version = $1", latest).Scan(&n); err != nil || n != 0 {
		t.Errorf("OpenExisting migrated the older schema (%d rows of version %d, %v)", n, latest, err)
	}
	if _, err := db.pool.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", latest+1); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenExisting(ctx, dsn, 1); mayfly.ErrorCode(err) != mayfly.EINVALID || !strings.Contains(mayfly.ErrorMessage(err), "newer") {
		t.Errorf("OpenExisting of a newer schema = %v; want EINVALID saying it is newer", err)
	}
}

// TestClosed: a closed store refuses work.
func TestClosed(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	if err := db.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	db.Close()
	if err := db.View(context.Background(), func(mayfly.Tx) error { return nil }); err == nil {
		t.Errorf("View after Close succeeded")
	}
	if err := db.Update(context.Background(), func(mayfly.Tx) error { return nil }); err == nil {
		t.Errorf("Update after Close succeeded")
	}
}

// TestReadModifyWriteAcrossReplicas: what a write transaction reads by key
// stays as it read it until it commits, as on SQLite, so replicas that
// change one request at once (approvals) all count, and replicas that set
// a missing setting at once (a key made at first start) agree on one
// value.
func TestReadModifyWriteAcrossReplicas(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	dbs := []*DB{open(t, dsn), open(t, dsn)}
	ctx := context.Background()
	if err := dbs[0].Update(ctx, func(tx mayfly.Tx) error {
		return tx.CreateRequest(&mayfly.Request{ID: "r1", State: mayfly.RequestPending, CreatedAt: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	const n = 12
	got := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = dbs[i%2].Update(ctx, func(tx mayfly.Tx) error {
				r, err := tx.GetRequest("r1")
				if err != nil {
					return err
				}
				r.Approvers = append(r.Approvers, fmt.Sprintf("u%d", i))
				if err := tx.UpdateRequest(r); err != nil {
					return err
				}
				v, err := tx.GetSetting("key")
				if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
					v = fmt.Sprintf("v%d", i)
					err = tx.PutSetting("key", v)
				}
				got[i] = v
				return err
			})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Update %d: %v", i, err)
		}
	}
	var r *mayfly.Request
	var stored string
	if err := dbs[1].View(ctx, func(tx mayfly.Tx) (err error) {
		if r, err = tx.GetRequest("r1"); err != nil {
			return err
		}
		stored, err = tx.GetSetting("key")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(r.Approvers) != n {
		t.Errorf("approvers = %v; want all %d (none lost)", r.Approvers, n)
	}
	for i, v := range got {
		if v != stored {
			t.Errorf("update %d used setting %q; stored %q", i, v, stored)
		}
	}
}

// TestAuditReadOwnAppends: events appended are written at commit, but a
// transaction that lists the trail after appending sees its own events,
// chained, and appends after that continue the chain.
func TestAuditReadOwnAppends(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	a, b, c := &mayfly.AuditEvent{Action: "a"}, &mayfly.AuditEvent{Action: "b"}, &mayfly.AuditEvent{Action: "c"}
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.AppendAudit(a); err != nil {
			return err
		}
		if err := tx.AppendAudit(b); err != nil {
			return err
		}
		es, err := tx.ListAudit(mayfly.AuditFilter{})
		if err != nil {
			return err
		}
		if len(es) != 2 || es[0].Action != "a" || es[1].Action != "b" || es[1].PrevHash != es[0].Hash {
			t.Errorf("ListAudit in the appending transaction = %d events; want a and b, chained", len(es))
		}
		return tx.AppendAudit(c)
	}); err != nil {
		t.Fatal(err)
	}
	if a.Seq != 1 || b.Seq != 2 || c.Seq != 3 || c.PrevHash != b.Hash || b.PrevHash != a.Hash || a.PrevHash != "" {
		t.Errorf("seqs %d %d %d; want 1 2 3, chained", a.Seq, b.Seq, c.Seq)
	}
	if res, err := audit.Verify(ctx, db, 0, 0); err != nil || !res.OK || res.Checked != 3 {
		t.Errorf("audit.Verify = %+v, %v; want 3 events intact", res, err)
	}
}

// TestSkipIntentSync: an Update under mayfly.SkipIntentSync commits
// without waiting for the log's flush, and only that Update.
func TestSkipIntentSync(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	setting := func(ctx context.Context) string {
		var v string
		if err := db.Update(ctx, func(mtx mayfly.Tx) error {
			_, err := mtx.(*tx).queryRow("SHOW synchronous_commit", nil, &v)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	ctx := context.Background()
	if v := setting(mayfly.SkipIntentSync(ctx)); v != "off" {
		t.Errorf("synchronous_commit under SkipIntentSync = %q; want off", v)
	}
	for range 3 { // whichever pooled connection runs it
		if v := setting(ctx); v != "on" {
			t.Errorf("synchronous_commit of an ordinary Update = %q; want on", v)
		}
	}
}

// TestDeadlockRetried: two updates that lock two requests in opposite
// orders deadlock; PostgreSQL aborts one, and Update runs it again, so
// both succeed and both changes are kept.
func TestDeadlockRetried(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		for _, id := range []string{"r1", "r2"} {
			if err := tx.CreateRequest(&mayfly.Request{ID: id, State: mayfly.RequestPending}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var holding sync.WaitGroup // each first attempt holds its first lock
	holding.Add(2)
	attempts := make([]int, 2)
	update := func(i int, first, second string) error {
		return db.Update(ctx, func(tx mayfly.Tx) error {
			attempts[i]++
			r, err := tx.GetRequest(first)
			if err != nil {
				return err
			}
			if attempts[i] == 1 {
				holding.Done()
				holding.Wait()
			}
			r2, err := tx.GetRequest(second)
			if err != nil {
				return err
			}
			for _, r := range []*mayfly.Request{r, r2} {
				r.Approvers = append(r.Approvers, fmt.Sprintf("u%d", i))
				if err := tx.UpdateRequest(r); err != nil {
					return err
				}
			}
			return nil
		})
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = update(0, "r1", "r2") })
	wg.Go(func() { errs[1] = update(1, "r2", "r1") })
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("updates = %v, %v; want both to succeed", errs[0], errs[1])
	}
	// At least one run again. The one run again can take the freed row
	// before the winner, waking up, locks it, and deadlock a second time;
	// that is rare, and retried too.
	if n := attempts[0] + attempts[1]; n < 3 || n > 2+retries {
		t.Errorf("attempts = %v; want an update run again after the deadlock, at most %d times", attempts, retries)
	}
	if err := db.View(ctx, func(tx mayfly.Tx) error {
		for _, id := range []string{"r1", "r2"} {
			r, err := tx.GetRequest(id)
			if err != nil {
				return err
			}
			if len(r.Approvers) != 2 {
				t.Errorf("%s approvers = %v; want both updates' (u0, u1)", id, r.Approvers)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestLeaseBatcher checks that LockLeases reads what GetLease reads, and
// that UpdateLeases writes what UpdateLease writes (times, NULL ones too),
// refusing a batch with a lease that does not exist.
func TestLeaseBatcher(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	mk := func(id string) *mayfly.Lease { return testLease(id, mayfly.LeaseActive) }
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		for _, id := range []string{"l3", "l1", "l2"} {
			if err := tx.CreateLease(mk(id)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err := db.Update(ctx, func(mtx mayfly.Tx) error {
		tx := mtx.(mayfly.LeaseBatcher)
		ls, err := tx.LockLeases([]string{"l3", "l1", "nope", "l2"})
		if err != nil {
			return err
		}
		if len(ls) != 3 || ls[0].ID != "l1" || ls[1].ID != "l2" || ls[2].ID != "l3" {
			t.Fatalf("LockLeases = %d leases; want l1, l2, l3 in id order", len(ls))
		}
		for _, l := range ls {
			if want := mk(l.ID); *l != *want {
				t.Errorf("LockLeases read %+v; want %+v", l, want)
			}
		}
		ls[0].State, ls[0].EndedAt, ls[0].EndReason, ls[0].DueAt = mayfly.LeaseRevoked, t0.Add(2*time.Hour), mayfly.EndExpired, time.Time{}
		ls[1].State, ls[1].RevokeAttempts, ls[1].LastError, ls[1].DueAt = mayfly.LeaseRevoking, 3, "target down", t0.Add(3*time.Hour)
		if err := tx.UpdateLeases(ls[:2]); err != nil {
			return err
		}
		for _, id := range []string{"l1", "l2"} {
			got, err := mtx.GetLease(id)
			if err != nil {
				return err
			}
			if want := ls[map[string]int{"l1": 0, "l2": 1}[id]]; *got != *want {
				t.Errorf("after UpdateLeases %s = %+v; want %+v", id, got, want)
			}
		}
		if l3, _ := mtx.GetLease("l3"); *l3 != *mk("l3") {
			t.Errorf("UpdateLeases changed a lease it was not given: %+v", l3)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(mtx mayfly.Tx) error {
		return mtx.(mayfly.LeaseBatcher).UpdateLeases([]*mayfly.Lease{mk("l3"), mk("gone")})
	})
	if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Fatalf("UpdateLeases with a missing lease = %v; want not found", err)
	}
}

// TestDeferNextWrite: a deferred lease write is sent with the next
// statement or the commit; reads after it in the transaction see it, it
// is committed with the rest, and its failure (a lease that exists, one
// that does not) fails Update with the write's own error and commits
// nothing of the transaction.
func TestDeferNextWrite(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	mk := func(id string) *mayfly.Lease { return testLease(id, mayfly.LeaseProvisioning) }
	audited := func(action string) int {
		t.Helper()
		var n int
		db.View(ctx, func(tx mayfly.Tx) error {
			evs, err := tx.ListAudit(mayfly.AuditFilter{})
			for _, e := range evs {
				if e.Action == action {
					n++
				}
			}
			return err
		})
		return n
	}
	// Deferred at the start of a transaction (sent with BEGIN and the next
	// read), then read back in it; and at its end (sent with the commit).
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		mayfly.DeferNextWrite(tx)
		if err := tx.CreateLease(mk("l1")); err != nil {
			return err
		}
		got, err := tx.GetLease("l1")
		if err != nil {
			return fmt.Errorf("read after a deferred create: %w", err)
		}
		got.State = mayfly.LeaseActive
		mayfly.DeferNextWrite(tx)
		if err := tx.UpdateLease(got); err != nil {
			return err
		}
		mayfly.DeferNextWrite(tx)
		if err := tx.CreateLease(mk("l2")); err != nil {
			return err
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: t0, Actor: "t", Action: "ok"})
	}); err != nil {
		t.Fatal(err)
	}
	db.View(ctx, func(tx mayfly.Tx) error {
		l1, err1 := tx.GetLease("l1")
		_, err2 := tx.GetLease("l2")
		if err1 != nil || err2 != nil || l1.State != mayfly.LeaseActive {
			t.Errorf("after commit: l1 %+v %v, l2 %v; want l1 active and l2 there", l1, err1, err2)
		}
		return nil
	})
	if n := audited("ok"); n != 1 {
		t.Errorf("%d audit events of the committed transaction; want 1", n)
	}
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		mayfly.DeferNextWrite(tx)
		return tx.CreateRequest(&mayfly.Request{ID: "r1", Requester: "alice", Target: "pg", Grant: "read", CreatedAt: t0, State: mayfly.RequestPending})
	}); err != nil {
		t.Fatalf("a transaction of one deferred write: %v", err)
	}
	// Failures: reported by Update, nothing of the transaction kept.
	for _, tc := range []struct {
		name string
		fn   func(tx mayfly.Tx) error
		code string
	}{
		{"create of an existing lease", func(tx mayfly.Tx) error { return tx.CreateLease(mk("l1")) }, mayfly.ECONFLICT},
		{"update of a missing lease", func(tx mayfly.Tx) error { return tx.UpdateLease(mk("nope")) }, mayfly.ENOTFOUND},
		{"create of an existing request", func(tx mayfly.Tx) error {
			return tx.CreateRequest(&mayfly.Request{ID: "r1", Requester: "alice", Target: "pg", Grant: "read", CreatedAt: t0, State: mayfly.RequestPending})
		}, mayfly.ECONFLICT},
	} {
		// With audit events after it, and without: then the deferred
		// write travels with the COMMIT itself.
		for _, audited := range []bool{true, false} {
			err := db.Update(ctx, func(tx mayfly.Tx) error {
				if err := tx.CreateLease(mk("l3")); err != nil {
					return err
				}
				mayfly.DeferNextWrite(tx)
				if err := tc.fn(tx); err != nil {
					return fmt.Errorf("the deferred write failed at once: %w", err)
				}
				if !audited {
					return nil
				}
				return tx.AppendAudit(&mayfly.AuditEvent{Time: t0, Actor: "t", Action: "failed"})
			})
			if mayfly.ErrorCode(err) != tc.code || strings.Contains(err.Error(), "audit") {
				t.Errorf("%s (audited %v): Update = %v; want %s, the write's own error", tc.name, audited, err, tc.code)
			}
			db.View(ctx, func(tx mayfly.Tx) error {
				if _, err := tx.GetLease("l3"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
					t.Errorf("%s (audited %v): the transaction's other write was kept (%v)", tc.name, audited, err)
				}
				return nil
			})
		}
	}
	// A deferred write whose error the next call reports as its own, and
	// a caller who takes it for that call's (a user not found): the
	// transaction still fails.
	err := db.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.CreateLease(mk("l3")); err != nil {
			return err
		}
		mayfly.DeferNextWrite(tx)
		if err := tx.UpdateLease(mk("nope")); err != nil {
			return err
		}
		if _, err := tx.GetUserStatus("nobody"); err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			return err
		}
		return nil
	})
	if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Errorf("a deferred failure swallowed by the caller: Update = %v; want the write's ENOTFOUND", err)
	}
	db.View(ctx, func(tx mayfly.Tx) error {
		if _, err := tx.GetLease("l3"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Errorf("a deferred failure swallowed by the caller: the transaction committed (%v)", err)
		}
		return nil
	})
	if n := audited("failed"); n != 0 {
		t.Errorf("%d audit events of failed transactions; want 0", n)
	}
	// Not deferred without asking: the error comes from the call.
	err = db.Update(ctx, func(tx mayfly.Tx) error {
		err := tx.CreateLease(mk("l1"))
		if mayfly.ErrorCode(err) != mayfly.ECONFLICT {
			t.Errorf("CreateLease(existing) without deferral = %v; want ECONFLICT at once", err)
		}
		return err
	})
	if err == nil {
		t.Error("Update succeeded")
	}
}

// t0 is the time of the leases testLease makes.
var t0 = time.Unix(0, 1_700_000_000_123_456_789).UTC()

// testLease is a lease of id in state, created at t0, due and expiring an
// hour later.
func testLease(id string, state mayfly.LeaseState) *mayfly.Lease {
	return &mayfly.Lease{ID: id, RequestID: "req_" + id, Requester: "alice", Target: "pg", Grant: "read", Username: "u_" + id,
		CreatedAt: t0, State: state, ExpiresAt: t0.Add(time.Hour), DueAt: t0.Add(time.Hour)}
}

// TestAppendSessionEventsDeferred: a session's events and head are sent
// with the transaction's next statement (the next session's head) or its
// COMMIT; when PostgreSQL refuses them, Update fails with that session's
// error and nothing of the transaction is kept, whichever carried them.
func TestAppendSessionEventsDeferred(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	for _, id := range []string{"ses_a", "ses_b"} {
		if err := db.Update(ctx, func(tx mayfly.Tx) error {
			return tx.CreateSession(&mayfly.Session{ID: id, Kind: mayfly.SessionPostgres, LeaseID: "l1", User: "alice", Target: "pg", StartedAt: t0})
		}); err != nil {
			t.Fatal(err)
		}
	}
	ev := func() []*mayfly.SessionEvent {
		return []*mayfly.SessionEvent{{Time: t0, Kind: mayfly.SessionEventStatement, Body: []byte(`{"text":"SELECT 1"}`)}}
	}
	// Both sessions in one write: a and b carried by b's head and by the
	// COMMIT.
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.AppendSessionEvents("ses_a", ev()); err != nil {
			return err
		}
		if err := tx.AppendSessionEvents("ses_b", ev()); err != nil {
			return err
		}
		got, err := tx.ListSessionEvents("ses_b", 0, 0) // sends b's first
		if err != nil || len(got) != 1 {
			t.Errorf("read in the writing transaction: %d events, %v; want 1", len(got), err)
		}
		return tx.AppendSessionEvents("ses_b", ev())
	}); err != nil {
		t.Fatal(err)
	}
	// Event 2 of a already taken (by hand): PostgreSQL refuses a's append.
	if _, err := db.pool.Exec(ctx, `INSERT INTO session_events (session_id, seq, at, kind, body, prev_hash, hash) VALUES ('ses_a', 2, 0, 'x', NULL, '', 'h')`); err != nil {
		t.Fatal(err)
	}
	for _, order := range [][]string{{"ses_a", "ses_b"}, {"ses_b", "ses_a"}} {
		err := db.Update(ctx, func(tx mayfly.Tx) error {
			for _, id := range order {
				if err := tx.AppendSessionEvents(id, ev()); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "append to session ses_a") {
			t.Errorf("appends %v: Update = %v; want ses_a's append refused", order, err)
		}
		db.View(ctx, func(tx mayfly.Tx) error {
			for id, want := range map[string]int64{"ses_a": 1, "ses_b": 2} {
				s, err := tx.GetSession(id)
				if err != nil || s.Events != want {
					t.Errorf("appends %v: session %s has %+v, %v; want its %d events, nothing of the failed write", order, id, s, err, want)
				}
			}
			return nil
		})
	}
}

// TestTextRefused: text PostgreSQL cannot keep (a NUL byte, bytes that are
// not UTF-8), in a write or in a filter, is an invalid-input error that
// says why, and nothing of the transaction is kept.
func TestTextRefused(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	for _, s := range []string{"a\x00b", "a\xffb"} {
		err := db.Update(ctx, func(tx mayfly.Tx) error {
			if err := tx.CreateRequest(&mayfly.Request{ID: "ok", State: mayfly.RequestPending}); err != nil {
				return err
			}
			return tx.CreateRequest(&mayfly.Request{ID: "r", State: mayfly.RequestPending, Reason: s})
		})
		if mayfly.ErrorCode(err) != mayfly.EINVALID || !strings.Contains(err.Error(), "NUL byte or bytes that are not UTF-8") {
			t.Errorf("request with reason %q: %v (code %q); want invalid input that says why", s, err, mayfly.ErrorCode(err))
		}
		err = db.View(ctx, func(tx mayfly.Tx) error {
			_, err := tx.ListAudit(mayfly.AuditFilter{Actor: s})
			return err
		})
		if mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Errorf("audit filter actor %q: %v; want invalid input", s, err)
		}
	}
	if err := db.View(ctx, func(tx mayfly.Tx) error {
		_, err := tx.GetRequest("ok")
		return err
	}); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Errorf("request of the refused transaction: %v; want none kept", err)
	}
}

// TestJournalWritesDeferred: a journal's lines and head go with the
// transaction's COMMIT (or its next statement), are read back in the
// transaction, and a failed write (lines numbered as taken) fails Update
// and commits nothing of it, not even the head.
func TestJournalWritesDeferred(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	put := func(first int64, lines []string, head string) error {
		return db.Update(ctx, func(mtx mayfly.Tx) error {
			jt := mtx.(*tx)
			if err := jt.PutJournalLines("j", first, lines, "journal.j", head); err != nil {
				return err
			}
			if err := jt.SyncCommit(); err != nil {
				return err
			}
			_, got, err := jt.JournalLines("j", first-1)
			if err != nil {
				return err
			}
			if !slices.Equal(got, lines) {
				return fmt.Errorf("read back in the transaction: %q; want %q", got, lines)
			}
			return nil
		})
	}
	if err := put(1, []string{"a", "b"}, "1 2"); err != nil {
		t.Fatal(err)
	}
	if err := put(2, []string{"c"}, "1 3"); err == nil || !strings.Contains(err.Error(), "append to journal j") {
		t.Fatalf("lines numbered as taken = %v; want the append's error", err)
	}
	db.View(ctx, func(mtx mayfly.Tx) error {
		head, err := mtx.GetSetting("journal.j")
		_, lines, lerr := mtx.(*tx).JournalLines("j", 0)
		if err != nil || lerr != nil || head != "1 2" || !slices.Equal(lines, []string{"a", "b"}) {
			t.Errorf("after the failed append: head %q (%v), lines %q (%v); want 1 2 and [a b]", head, err, lines, lerr)
		}
		return nil
	})
}

// TestJournalHeadWaitsAndReadsAfterTheLock: JournalHead says when the head
// is missing; once it exists it locks it, and a transaction that waited
// for the lock reads the lines the holder committed, in the same round
// trip.
func TestJournalHeadWaitsAndReadsAfterTheLock(t *testing.T) {
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	if err := db.Update(ctx, func(mtx mayfly.Tx) error {
		_, found, _, _, err := mtx.(*tx).JournalHead("journal.j", "j", 0)
		if err == nil && found {
			return errors.New("found a head that was never written")
		}
		if err != nil {
			return err
		}
		return mtx.(*tx).PutJournalLines("j", 1, []string{"a"}, "journal.j", "1 1")
	}); err != nil {
		t.Fatal(err)
	}
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- db.Update(ctx, func(mtx mayfly.Tx) error {
			if _, _, _, _, err := mtx.(*tx).JournalHead("journal.j", "j", 1); err != nil {
				return err
			}
			if err := mtx.(*tx).PutJournalLines("j", 2, []string{"b", "c"}, "journal.j", "1 3"); err != nil {
				return err
			}
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	time.AfterFunc(200*time.Millisecond, func() { close(release) })
	var head string
	var lines []string
	if err := db.Update(ctx, func(mtx mayfly.Tx) error {
		var err error
		head, _, _, lines, err = mtx.(*tx).JournalHead("journal.j", "j", 1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if head != "1 3" || !slices.Equal(lines, []string{"b", "c"}) {
		t.Errorf("after waiting for the holder: head %q, lines after 1 %q; want 1 3 and [b c]", head, lines)
	}
}
