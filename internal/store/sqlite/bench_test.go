package sqlite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/storetest"
)

var liveStates = []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking}

func benchDB(b *testing.B) *DB {
	b.Helper()
	db, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkIssue is the store's share of issuing a credential: one Update
// that creates a lease and appends its audit event.
func BenchmarkIssue(b *testing.B) {
	ctx := context.Background()
	db := benchDB(b)
	now := time.Now()
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprintf("l%09d", i)
		err := db.Update(ctx, func(tx mayfly.Tx) error {
			l := &mayfly.Lease{ID: id, RequestID: "r" + id, Requester: "alice", Target: "pg", Grant: "readonly",
				Username: "mf_alice_" + id, State: mayfly.LeaseProvisioning, CreatedAt: now,
				ExpiresAt: now.Add(time.Hour), DueAt: now.Add(time.Minute)}
			if err := tx.CreateLease(l); err != nil {
				return err
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "alice", Action: "lease.create",
				Subject: "lease:" + id, Target: "pg", RequestID: "r" + id, LeaseID: id,
				Data: map[string]string{"username": l.Username}})
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
}

// BenchmarkRevoke is the store's share of a revocation: one Update that
// reads a lease, marks it revoked and appends its audit event.
func BenchmarkRevoke(b *testing.B) {
	ctx := context.Background()
	db := benchDB(b)
	now := time.Now()
	const n = 10000
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		for i := range n {
			id := fmt.Sprintf("l%09d", i)
			if err := tx.CreateLease(&mayfly.Lease{ID: id, Requester: "alice", Target: "pg", Username: "mf_" + id,
				State: mayfly.LeaseActive, CreatedAt: now, ExpiresAt: now, DueAt: now}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("l%09d", i%n)
		i++
		err := db.Update(ctx, func(tx mayfly.Tx) error {
			l, err := tx.GetLease(id)
			if err != nil {
				return err
			}
			l.State, l.EndedAt, l.EndReason, l.DueAt = mayfly.LeaseRevoked, now, mayfly.EndExpired, time.Time{}
			if err := tx.UpdateLease(l); err != nil {
				return err
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "system", Action: "lease.revoke",
				Subject: "lease:" + id, LeaseID: id, Reason: mayfly.EndExpired})
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
}

// BenchmarkAppendAudit appends chained audit events, perTx of them in each
// Update; events/s counts events, not transactions.
func BenchmarkAppendAudit(b *testing.B) {
	for _, perTx := range []int{1, 100} {
		b.Run(fmt.Sprintf("perTx=%d", perTx), func(b *testing.B) {
			ctx := context.Background()
			db := benchDB(b)
			now := time.Now()
			for b.Loop() {
				err := db.Update(ctx, func(tx mayfly.Tx) error {
					for range perTx {
						if err := tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "alice", Action: "request.approve",
							Subject: "request:r1", RequestID: "r1", Data: map[string]string{"k": "v"}}); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*perTx)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// fixtureBase is the first DueAt of the fixture's active leases; the k-th
// is due k seconds later.
var fixtureBase = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	fixtureLeases = 1_000_000
	fixtureActive = 100_000
)

// largeFixture returns the path of a database with fixtureLeases leases,
// the first fixtureActive of them active, the rest revoked. It is built
// once and kept in the temporary directory, keyed by schema version.
func largeFixture(b *testing.B) string {
	b.Helper()
	path := filepath.Join(os.TempDir(), fmt.Sprintf("mayfly-bench-leases-%d-v%d.db", fixtureLeases, schemaVersion()))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	ctx := context.Background()
	tmp := path + fmt.Sprintf(".tmp%d", os.Getpid())
	start := time.Now()
	db, err := Open(ctx, tmp)
	if err != nil {
		b.Fatal(err)
	}
	created := fixtureBase.Add(-24 * time.Hour).UnixNano()
	err = db.ExecForTest(ctx, `INSERT INTO leases (`+leaseCols+`)
		WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
		SELECT printf('l%08d', i), printf('r%08d', i), 'user' || (i % 1000), 'target' || (i % 50), 'readonly',
			printf('mf_user%d_%08d', i % 1000, i), ? + i * 1000000,
			CASE WHEN i <= ? THEN 'active' ELSE 'revoked' END,
			? + i * 1000000000,
			CASE WHEN i <= ? THEN ? + i * 1000000000 ELSE NULL END,
			CASE WHEN i <= ? THEN NULL ELSE ? + i * 1000000 END,
			CASE WHEN i <= ? THEN '' ELSE 'expired' END, 0, '', ''
		FROM n`,
		fixtureLeases, created, fixtureActive, fixtureBase.UnixNano(), fixtureActive, fixtureBase.UnixNano(),
		fixtureActive, created, fixtureActive)
	if err != nil {
		db.Close()
		os.Remove(tmp)
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %s in %v", path, time.Since(start))
	return path
}

// rssKB returns the resident set size of the process in KiB, 0 when
// unknown.
func rssKB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return n
		}
	}
	return 0
}

// BenchmarkOpenLarge times what a restarting broker does before it can
// schedule: Open, NextDue and DueLeases(limit 500), on a database with a
// million leases (a thousand of them due).
func BenchmarkOpenLarge(b *testing.B) {
	path := largeFixture(b)
	ctx := context.Background()
	now := fixtureBase.Add(1000 * time.Second)
	before := rssKB()
	var after float64
	for b.Loop() {
		db, err := Open(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		err = db.View(ctx, func(tx mayfly.Tx) error {
			next, ok, err := tx.NextDue(liveStates)
			if err != nil {
				return err
			}
			if !ok || !next.Equal(fixtureBase.Add(time.Second)) {
				return fmt.Errorf("NextDue = %v, %v; want %v", next, ok, fixtureBase.Add(time.Second))
			}
			ls, err := tx.DueLeases(now, liveStates, mayfly.DueCursor{}, 500)
			if err != nil {
				return err
			}
			if len(ls) != 500 || ls[0].ID != "l00000001" {
				return fmt.Errorf("DueLeases returned %d leases", len(ls))
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		after = max(after, rssKB())
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
	if before > 0 {
		b.ReportMetric(after/1024, "rss-MiB")
		b.ReportMetric((after-before)/1024, "rss-growth-MiB")
	}
}

// BenchmarkCountLeasesLarge times CountLeases over a million leases.
func BenchmarkCountLeasesLarge(b *testing.B) {
	path := largeFixture(b)
	ctx := context.Background()
	db, err := Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for b.Loop() {
		if err := db.View(ctx, func(tx mayfly.Tx) error {
			n, err := tx.CountLeases()
			if err == nil && n[mayfly.LeaseActive] != fixtureActive {
				err = fmt.Errorf("CountLeases = %v", n)
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSessionWrite: see storetest.BenchSessionWrite.
//
//	go test -run '^$' -bench SessionWrite -benchtime 2000x ./internal/store/sqlite/
func BenchmarkSessionWrite(b *testing.B) { storetest.BenchSessionWrite(b, benchDB(b)) }
