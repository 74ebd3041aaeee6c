package postgres

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// appendEvents commits one Update that writes a lease and appends n audit
// events, as a one-call issue appends three.
func appendEvents(t testing.TB, db *DB, id string, n int) {
	t.Helper()
	err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		if err := tx.CreateLease(&mayfly.Lease{ID: id, State: mayfly.LeaseProvisioning, Target: "t", Grant: "g", CreatedAt: time.Now()}); err != nil {
			return err
		}
		for i := range n {
			if err := tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Action: fmt.Sprintf("lease.step%d", i), LeaseID: id}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestChainIsNotReplanned checks that the statement chaining the audit
// events is planned once per connection, not at each of its first
// executions: PostgreSQL plans a prepared statement afresh for its first
// five executions (a custom plan each) before it settles on one plan, and
// planning this statement costs a millisecond and more after an idle
// spell, while its plan depends on no argument. A broker whose pool
// spreads a person's calls over its connections, each replaced within the
// hour, would pay that on most of them.
func TestChainIsNotReplanned(t *testing.T) {
	db, err := Open(context.Background(), pgtest.NewDatabase(t), 1) // one connection: the statements below share it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for i := range 4 {
		appendEvents(t, db, fmt.Sprintf("l%d", i), 3)
	}
	var custom, generic int64
	err = db.pool.QueryRow(context.Background(), `SELECT COALESCE(sum(custom_plans), 0), COALESCE(sum(generic_plans), 0)
		FROM pg_prepared_statements WHERE statement LIKE 'WITH RECURSIVE h AS (SELECT seq, hash FROM audit_head FOR UPDATE)%'`).Scan(&custom, &generic)
	if err != nil {
		t.Fatal(err)
	}
	if custom != 0 || generic != 4 {
		t.Errorf("the chain statement was planned afresh %d times and ran its one plan %d times in 4 commits; want 0 and 4", custom, generic)
	}
	// And the events are chained as before.
	if err := db.View(context.Background(), func(tx mayfly.Tx) error { return checkChain(t, tx, 12) }); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkUpdateNewConnection measures the first commits with three audit
// events on a connection of its own (the pool emptied first): the first,
// which parses the statements and loads the catalog entries they need,
// and the median of the four after it, which PostgreSQL would plan afresh
// each time if it were left to choose (see TestChainIsNotReplanned).
//
//	go test -run '^$' -bench UpdateNewConnection -benchtime 100x ./internal/store/postgres/
func BenchmarkUpdateNewConnection(b *testing.B) {
	db, err := Open(context.Background(), pgtest.NewDatabase(b), 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	ctx := context.Background()
	run := time.Now().UnixNano()
	var connect, first, next []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		db.pool.Reset()
		start := time.Now()
		if err := db.Ping(ctx); err != nil { // connected (and warmed), before the clock starts
			b.Fatal(err)
		}
		connect = append(connect, time.Since(start))
		b.StartTimer()
		for k := range 5 {
			i++
			start := time.Now()
			appendEvents(b, db, fmt.Sprintf("l%d-%d", run, i), 3)
			if k == 0 {
				first = append(first, time.Since(start))
			} else {
				next = append(next, time.Since(start))
			}
		}
	}
	p50 := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds())
	}
	b.ReportMetric(p50(connect), "connect-p50-µs")
	b.ReportMetric(p50(first), "first-p50-µs")
	b.ReportMetric(p50(next), "next4-p50-µs")
}

// TestPoolKeepsWarmConnections: without a single call, the store keeps
// minConns connections open (named ApplicationName), made in the
// background, each of which has run warmSQL; when their lifetime ends, they are made again in the
// background, warm too, with no call waiting for it.
func TestPoolKeepsWarmConnections(t *testing.T) {
	defer func(l, j, c time.Duration) { connLifetime, connJitter, connCheck = l, j, c }(connLifetime, connJitter, connCheck)
	connLifetime, connJitter, connCheck = 2*time.Second, 0, 200*time.Millisecond
	dsn := pgtest.NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	db := open(t, dsn)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// backends lists the store's idle connections and how many of them
	// last ran warmSQL.
	backends := func() (pids []int32, warm int) {
		t.Helper()
		rows, err := admin.Query(ctx, "SELECT pid, query FROM pg_stat_activity WHERE datname = $1 AND state = 'idle' AND application_name = $2", name, ApplicationName)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var pid int32
			var q string
			if err := rows.Scan(&pid, &q); err != nil {
				t.Fatal(err)
			}
			pids = append(pids, pid)
			if q == warmSQL {
				warm++
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return pids, warm
	}
	waitWarm := func(what string, not []int32) []int32 {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			pids, warm := backends()
			fresh := !slices.ContainsFunc(pids, func(p int32) bool { return slices.Contains(not, p) })
			if warm >= minConns && len(pids) == warm && fresh {
				return pids
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d idle connections (%v), %d of them warmed, all new: %v; want %d, all warmed and new", what, len(pids), pids, warm, fresh, minConns)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	pids := waitWarm("after Open", nil)
	// Their lifetime ends: they are replaced with no call to notice.
	time.Sleep(connLifetime)
	waitWarm("after their lifetime", pids)
	appendEvents(t, db, "after", 1)
}
