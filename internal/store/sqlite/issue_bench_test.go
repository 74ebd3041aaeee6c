package sqlite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func issueBenchID(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// issueGap idles before each issue of BenchmarkIssueTransactions, as a
// broker between single requests: go test -bench IssueTransactions -args
// -issue-gap 5ms.
var issueGap = flag.Duration("issue-gap", 0, "idle time before each issue in BenchmarkIssueTransactions")

// BenchmarkIssueTransactions measures the two transactions on the critical
// path of issuing a lease: the request with the lease intent (tx1), and the
// activation (tx2), each with their audit events, on a store already
// holding 20,000 leases. Its sub-benchmarks differ in durability: the
// store as it is (intent-sync: the intent's commit syncs the log), no
// sync at all (normal: synchronous=NORMAL alone, an OS crash may lose the
// last commits), and every commit synced (full: synchronous=FULL).
func BenchmarkIssueTransactions(b *testing.B) {
	for _, mode := range []string{"normal", "intent-sync", "full"} {
		b.Run(mode, func(b *testing.B) { benchIssueTransactions(b, mode) })
	}
}

func benchIssueTransactions(b *testing.B, mode string) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(b.TempDir(), "mayfly.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	switch mode {
	case "normal":
		db.SetIntentSync(false)
	case "full":
		db.SetIntentSync(false)
		if err := db.ExecForTest(ctx, "PRAGMA synchronous = FULL"); err != nil {
			b.Fatal(err)
		}
	}
	issue := func(gap time.Duration) (time.Duration, time.Duration) {
		now := time.Now().UTC()
		r := &mayfly.Request{ID: issueBenchID("req_"), Requester: "bench", Target: "pg", Grant: "readonly", Reason: "bench",
			Duration: time.Hour, Policy: "p", State: mayfly.RequestApproved, CreatedAt: now, DecidedAt: now}
		l := &mayfly.Lease{ID: issueBenchID("lse_"), RequestID: r.ID, Requester: r.Requester, Target: r.Target, Grant: r.Grant,
			Username: issueBenchID("mf_bench_"), State: mayfly.LeaseProvisioning, CreatedAt: now, ExpiresAt: now.Add(time.Hour), DueAt: now.Add(time.Minute)}
		r.LeaseID = l.ID
		if gap > 0 {
			time.Sleep(gap)
		}
		t0 := time.Now()
		err := db.Update(ctx, func(tx mayfly.Tx) error {
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
			if err := tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "bench", Action: "request.create", Subject: "request:" + r.ID,
				Target: r.Target, RequestID: r.ID, LeaseID: l.ID, Reason: r.Reason, Data: map[string]string{"decision": "auto", "state": "approved"}}); err != nil {
				return err
			}
			if err := tx.CreateLease(l); err != nil {
				return err
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "bench", Action: "lease.intent", Subject: "lease:" + l.ID,
				Target: r.Target, RequestID: r.ID, LeaseID: l.ID, Reason: r.Reason, Data: map[string]string{"username": l.Username}})
		})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		l.State, l.DueAt, l.SecretHMAC = mayfly.LeaseActive, l.ExpiresAt, hex.EncodeToString(make([]byte, 32))
		err = db.Update(ctx, func(tx mayfly.Tx) error {
			if err := tx.UpdateLease(l); err != nil {
				return err
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "bench", Action: "lease.activate", Subject: "lease:" + l.ID,
				Target: r.Target, RequestID: r.ID, LeaseID: l.ID, Data: map[string]string{"username": l.Username, "secret_hmac": l.SecretHMAC}})
		})
		if err != nil {
			b.Fatal(err)
		}
		return t1.Sub(t0), time.Since(t1)
	}
	for range 20000 {
		issue(0)
	}
	b.ResetTimer()
	var d1, d2 []time.Duration
	for b.Loop() {
		a, c := issue(*issueGap)
		d1 = append(d1, a)
		d2 = append(d2, c)
	}
	med := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Nanoseconds()) / 1e3
	}
	b.ReportMetric(med(d1), "tx1-p50-µs")
	b.ReportMetric(med(d2), "tx2-p50-µs")
}
