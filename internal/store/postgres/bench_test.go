package postgres

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/store/storetest"
)

// BenchmarkUpdate measures one Update of the shape of a lease change: a
// lease written and an audit event appended, and an empty one.
//
//	go test -run '^$' -bench Update -benchtime 2000x ./internal/store/postgres/
func BenchmarkUpdate(b *testing.B) {
	db := open(b, pgtest.NewDatabase(b))
	ctx := context.Background()
	b.Run("empty", func(b *testing.B) {
		for b.Loop() {
			if err := db.Update(ctx, func(tx mayfly.Tx) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lease+audit", func(b *testing.B) {
		run := time.Now().UnixNano()
		i := 0
		for b.Loop() {
			i++
			id := fmt.Sprintf("l%d-%d", run, i)
			if err := db.Update(ctx, func(tx mayfly.Tx) error {
				if err := tx.CreateLease(&mayfly.Lease{ID: id, State: mayfly.LeaseProvisioning, Target: "t", Grant: "g", CreatedAt: time.Now()}); err != nil {
					return err
				}
				return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "lease.create", LeaseID: id})
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("view", func(b *testing.B) {
		for b.Loop() {
			if err := db.View(ctx, func(tx mayfly.Tx) error { _, err := tx.CountLeases(); return err }); err != nil {
				b.Fatal(err)
			}
		}
	})
	// One read at a time with a pause between, as a caller waits for it:
	// its latency, not how many the store can do back to back.
	b.Run("view-spaced", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			b.StopTimer()
			time.Sleep(2 * time.Millisecond)
			b.StartTimer()
			start := time.Now()
			if err := db.View(ctx, func(tx mayfly.Tx) error { _, err := tx.CountLeases(); return err }); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
	})
}

// BenchmarkUpdateReplicas runs the lease+audit update from 16 goroutines
// through two handles on one database, as two replicas would: every
// append waits for the head of the one audit chain, so this is the
// store's write throughput across replicas (ns/op is per update).
//
//	go test -run '^$' -bench UpdateReplicas -benchtime 5000x ./internal/store/postgres/
func BenchmarkUpdateReplicas(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	dbs := []*DB{open(b, dsn), open(b, dsn)}
	ctx := context.Background()
	run := time.Now().UnixNano()
	var n atomic.Int64
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			id := fmt.Sprintf("l%d-%d", run, i)
			if err := dbs[i%2].Update(ctx, func(tx mayfly.Tx) error {
				if err := tx.CreateLease(&mayfly.Lease{ID: id, State: mayfly.LeaseProvisioning, Target: "t", Grant: "g", CreatedAt: time.Now()}); err != nil {
					return err
				}
				return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: "lease.create", LeaseID: id})
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSessionWrite: see storetest.BenchSessionWrite.
//
//	go test -run '^$' -bench SessionWrite -benchtime 1000x ./internal/store/postgres/
func BenchmarkSessionWrite(b *testing.B) {
	storetest.BenchSessionWrite(b, open(b, pgtest.NewDatabase(b)))
}

// BenchmarkIssueTransactions runs the store's part of a one-call issue
// (a request and its intent in one transaction, then the activation in
// another, as the broker writes them) two ways, interleaved so that all
// see the same spell of the host, each on a database and handle of its
// own: reading first (the requester's status, then the lease before
// changing it), and as the broker does (mayfly.WriteIntentUnless and
// UpdateLeaseFrom), each transaction's events chained by PostgreSQL in
// the round trip of its COMMIT (two round trips in all; see chainSQL). It
// reports the median of each issue's two transactions and their ratio.
//
//	go test -run '^$' -bench IssueTransactions -benchtime 2000x ./internal/store/postgres/
func BenchmarkIssueTransactions(b *testing.B) {
	readFirst, chained := open(b, pgtest.NewDatabase(b)), open(b, pgtest.NewDatabase(b))
	ctx := context.Background()
	run := time.Now().UnixNano()
	issue := func(db *DB, i int, combined bool) time.Duration {
		now := time.Now().UTC()
		id := fmt.Sprintf("%d-%d", run, i)
		r := &mayfly.Request{ID: "r" + id, Requester: "alice", Target: "pg", Grant: "ro", Reason: "x", Duration: time.Hour,
			CreatedAt: now, DecidedAt: now, State: mayfly.RequestApproved, LeaseID: "l" + id}
		l := &mayfly.Lease{ID: "l" + id, RequestID: r.ID, Requester: "alice", Target: "pg", Grant: "ro", Username: "mf_" + id,
			State: mayfly.LeaseProvisioning, CreatedAt: now, ExpiresAt: now.Add(time.Hour), DueAt: now.Add(time.Minute)}
		start := time.Now()
		if err := db.Update(ctx, func(tx mayfly.Tx) error {
			mayfly.DeferNextWrite(tx)
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
			if err := tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "alice", Action: "request.create", RequestID: r.ID}); err != nil {
				return err
			}
			if combined {
				if err := mayfly.WriteIntentUnless(tx, l, "suspended", "deprovisioned"); err != nil {
					return err
				}
			} else {
				if _, err := tx.GetUserStatus("alice"); err != nil {
					return err
				}
				mayfly.DeferNextWrite(tx)
				if err := tx.CreateLease(l); err != nil {
					return err
				}
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "alice", Action: "lease.intent", LeaseID: l.ID})
		}); err != nil {
			b.Fatal(err)
		}
		if err := db.Update(ctx, func(tx mayfly.Tx) error {
			active := *l
			active.State, active.DueAt, active.SecretHMAC = mayfly.LeaseActive, l.ExpiresAt, "hmac"
			if combined {
				mayfly.DeferNextWrite(tx)
				if err := tx.UpdateLeaseFrom(l, &active); err != nil {
					return err
				}
			} else {
				if _, err := tx.GetLease(l.ID); err != nil {
					return err
				}
				mayfly.DeferNextWrite(tx)
				if err := tx.UpdateLease(&active); err != nil {
					return err
				}
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "alice", Action: "lease.activate", LeaseID: l.ID})
		}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var rf, ch []time.Duration
	i := 0
	for b.Loop() {
		i++
		rf = append(rf, issue(readFirst, i, false))
		ch = append(ch, issue(chained, i, true))
	}
	rp, cp := p50µs(rf), p50µs(ch)
	b.ReportMetric(rp, "read-first-p50-µs")
	b.ReportMetric(cp, "broker-p50-µs")
	b.ReportMetric(cp/rp, "broker/read-first")
	if n, _ := chained.AuditHeadStats(); n < 2*int64(i) {
		b.Fatalf("%d transactions chained in the database; want %d", n, 2*i)
	}
}

// BenchmarkCommitAfterIdle measures, with the processes idle for 3 ms
// before each (as between a user's calls, where a virtual machine's idle
// cores must be woken), a bare round trip, one insert committed durably
// and without the log's flush, and the store's transaction of a one-call
// issue on the PostgreSQL store: the request, the intent of the lease
// already active, and three audit events, one durable commit; then parts
// of it (the three events alone, with the request), and all of it without
// the log's flush (mayfly.SkipIntentSync). Each is also timed awake
// (hot-*): the last of hotRuns back to back, no idle between, which is
// what the same work costs once the cores and processes are running; the
// difference is the price of waking them. Interleaved; it reports the
// median of each.
//
//	go test -run '^$' -bench CommitAfterIdle -benchtime 800x ./internal/store/postgres/
func BenchmarkCommitAfterIdle(b *testing.B) {
	db := open(b, pgtest.NewDatabase(b))
	ctx := context.Background()
	if _, err := db.pool.Exec(ctx, "CREATE TABLE idle_bench (a int, b text)"); err != nil {
		b.Fatal(err)
	}
	batch := func(stmts ...string) error {
		var bt pgx.Batch
		for _, q := range stmts {
			bt.Queue(q)
		}
		return db.pool.SendBatch(ctx, &bt).Close()
	}
	const insert = "INSERT INTO idle_bench VALUES (1, 'x')"
	run := time.Now().UnixNano()
	// issue writes, in one transaction under ctx, what the store's
	// transaction of one-call issue number i writes, or the parts of it
	// asked for.
	issue := func(ctx context.Context, i int, request, intent, events bool) error {
		now := time.Now().UTC()
		id := fmt.Sprintf("%d-%d", run, i)
		r := &mayfly.Request{ID: "r" + id, Requester: "alice", Target: "pg", Grant: "ro", Reason: "x", Duration: time.Hour,
			CreatedAt: now, DecidedAt: now, State: mayfly.RequestApproved, LeaseID: "l" + id}
		l := &mayfly.Lease{ID: "l" + id, RequestID: r.ID, Requester: "alice", Target: "pg", Grant: "ro", Username: "mf_" + id,
			State: mayfly.LeaseActive, CreatedAt: now, ExpiresAt: now.Add(time.Hour), DueAt: now.Add(time.Hour), SecretHMAC: "hmac"}
		return db.Update(ctx, func(tx mayfly.Tx) error {
			mayfly.DeferNextWrite(tx)
			if request {
				if err := tx.CreateRequest(r); err != nil {
					return err
				}
			}
			if intent {
				if err := mayfly.WriteIntentUnless(tx, l, "suspended", "deprovisioned"); err != nil {
					return err
				}
			}
			if events {
				for _, a := range []string{"request.create", "lease.intent", "lease.activate"} {
					if err := tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "alice", Action: a, RequestID: r.ID, LeaseID: l.ID}); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	parts := []struct {
		metric string
		run    func(i int) error
	}{
		{"select1", func(int) error { return batch("SELECT 1") }},
		{"insert-durable", func(int) error { return batch("BEGIN", insert, "COMMIT") }},
		{"insert-async", func(int) error { return batch("BEGIN", "SET LOCAL synchronous_commit TO off", insert, "COMMIT") }},
		// The parts, each with the events, so that each commits in the one
		// round trip of chained events (tx.commitChained).
		{"events-tx", func(i int) error { return issue(ctx, i, false, false, true) }},
		{"request-events-tx", func(i int) error { return issue(ctx, i, true, false, true) }},
		{"issue-tx", func(i int) error { return issue(ctx, i, true, true, true) }},
		{"issue-tx-async", func(i int) error { return issue(mayfly.SkipIntentSync(ctx), i, true, true, true) }},
	}
	// hotRuns: on a virtual machine a run right after the first is still
	// slow; from about the fifth the time no longer falls (twelve give
	// the same).
	const hotRuns = 5
	idle := make([][]time.Duration, len(parts))
	hot := make([][]time.Duration, len(parts))
	n := 0 // runs so far: each writes rows of its own
	timed := func(run func(int) error) time.Duration {
		t0 := time.Now()
		if err := run(n); err != nil {
			b.Fatal(err)
		}
		n++
		return time.Since(t0)
	}
	for b.Loop() {
		for k, p := range parts {
			time.Sleep(3 * time.Millisecond)
			idle[k] = append(idle[k], timed(p.run))
			var d time.Duration
			for range hotRuns {
				d = timed(p.run)
			}
			hot[k] = append(hot[k], d)
		}
	}
	for k, p := range parts {
		b.ReportMetric(p50µs(idle[k]), p.metric+"-p50-µs")
		b.ReportMetric(p50µs(hot[k]), "hot-"+p.metric+"-p50-µs")
	}
}

// BenchmarkAuditChain measures the append of n audit events as the store
// commits them (PostgreSQL locks the head and chains them: chainSQL)
// against the raw operation, the events inserted with hashes the client
// computed and the head moved, as a single writer that knew the head would
// send them; each is one round trip of BEGIN, the statement, a NOTIFY and
// a durable COMMIT, interleaved on one connection. It reports the median
// of each and their ratio.
//
//	go test -run '^$' -bench AuditChain -benchtime 3000x ./internal/store/postgres/
func BenchmarkAuditChain(b *testing.B) {
	db := open(b, pgtest.NewDatabase(b))
	ctx := context.Background()
	c, err := db.pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Release()
	pending := func(n int) []pendingEvent {
		now := time.Now()
		ps := make([]pendingEvent, n)
		for i := range ps {
			ps[i] = pendingEvent{e: &mayfly.AuditEvent{Time: now, Actor: "alice", Action: fmt.Sprint("lease.", i), Subject: "lease:l1", LeaseID: "l1"}, at: now.UnixNano()}
		}
		return ps
	}
	send := func(q string, args []any, notify string, notifyArgs ...any) time.Duration {
		var batch pgx.Batch
		batch.Queue("BEGIN")
		batch.Queue(q, args...)
		batch.Queue(notify, notifyArgs...)
		batch.Queue("COMMIT")
		start := time.Now()
		if err := c.SendBatch(ctx, &batch).Close(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for _, n := range []int{1, 3, chainUnrolled, chainUnrolled + 1, 128, 512} {
		b.Run(fmt.Sprint(n, "-events"), func(b *testing.B) {
			var raw, chained []time.Duration
			var seq int64
			var hash string
			if err := c.QueryRow(ctx, "SELECT seq, hash FROM audit_head").Scan(&seq, &hash); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				t := &tx{pending: pending(n)}
				q, args := t.chainFrom(seq, hash)
				k := len(args)
				q += " UPDATE audit_head SET seq = " + placeholders(k-1, 1) + ", hash = " + placeholders(k, 1)
				raw = append(raw, send(q, args, notifyStmt, "1"))
				t = &tx{pending: pending(n)}
				chained = append(chained, send(chainSQL(n), t.chainArgs(), notifyHeadStmt))
				seq += int64(2 * n)
				if err := c.QueryRow(ctx, "SELECT hash FROM audit_head").Scan(&hash); err != nil {
					b.Fatal(err)
				}
			}
			rp, cp := p50µs(raw), p50µs(chained)
			b.ReportMetric(rp, "raw-p50-µs")
			b.ReportMetric(cp, "chained-p50-µs")
			b.ReportMetric(cp/rp, "chained/raw")
			verifyChainB(b, db)
		})
	}
}

// verifyChainB fails b unless db's audit chain is intact.
func verifyChainB(b *testing.B, db *DB) {
	b.Helper()
	res, err := audit.Verify(context.Background(), db, 0, 0)
	if err != nil || !res.OK {
		b.Fatalf("audit.Verify = %+v, %v; want an intact chain", res, err)
	}
}

// p50µs returns the median of ds in microseconds (sorting ds).
func p50µs(ds []time.Duration) float64 {
	slices.Sort(ds)
	return float64(ds[len(ds)/2].Microseconds())
}
