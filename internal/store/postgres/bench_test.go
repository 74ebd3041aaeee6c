package postgres

import (
	"context"
	"fmt"
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
