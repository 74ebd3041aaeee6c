package postgres

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
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
	p50 := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds())
	}
	rp, cp := p50(rf), p50(ch)
	b.ReportMetric(rp, "read-first-p50-µs")
	b.ReportMetric(cp, "broker-p50-µs")
	b.ReportMetric(cp/rp, "broker/read-first")
	if n, _ := chained.AuditHeadStats(); n < 2*int64(i) {
		b.Fatalf("%d transactions chained in the database; want %d", n, 2*i)
	}
}
