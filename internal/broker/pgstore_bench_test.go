package broker_test

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
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	pgstore "github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// BenchmarkIssueVsBaselinesPostgresStore is BenchmarkIssueVsBaselines with
// the broker's state in a PostgreSQL store (a database of its own on the
// same server as the target) instead of SQLite: the cost of one-call
// issue when replicas share the store, against the bare CREATE ROLE. In
// mode marked the roles carry an installation key's mark, as in
// production; plain without one; marked-async is marked with every commit
// of the store asynchronous (synchronous_commit off in the DSN's options:
// the SQLite store's contract, where only intents wait for the log).
//
//	go test -run '^$' -bench IssueVsBaselinesPostgresStore -benchtime 1000x -count 3 ./internal/broker/
func BenchmarkIssueVsBaselinesPostgresStore(b *testing.B) {
	for _, mode := range []string{"marked", "plain", "marked-async"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			dsn := pgtest.NewDatabase(b)
			if mode == "marked-async" {
				u, err := url.Parse(dsn)
				if err != nil {
					b.Fatal(err)
				}
				q := u.Query()
				q.Set("options", "-c synchronous_commit=off")
				// A space as %20: the driver does not read "+" as one.
				u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
				dsn = u.String()
			}
			st, err := pgstore.Open(ctx, dsn, 4)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			br, conn := newBenchBrokerOn(b, st, mode != "plain")
			benchIssueVsBaselines(b, br, conn)
		})
	}
}

// BenchmarkActivate measures the second call of the two-call path
// (Activate of a request approved earlier: intent, account, activation,
// credential; no HTTP), strictly interleaved with the bare server-hashed
// CREATE ROLE on the same server, on each store. The request of each
// activation is recorded, untimed, just before it. Installation key set
// (marked), as in production.
//
//	go test -run '^$' -bench 'Activate$' -benchtime 1000x ./internal/broker/
func BenchmarkActivate(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		br, conn := newBenchBrokerKeyed(b, true)
		benchActivate(b, br, conn)
	})
	b.Run("postgres", func(b *testing.B) {
		st, err := pgstore.Open(context.Background(), pgtest.NewDatabase(b), 4)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		br, conn := newBenchBrokerOn(b, st, true)
		benchActivate(b, br, conn)
	})
}

func benchActivate(b *testing.B, br *broker.Broker, conn mayfly.Connector) {
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		testenv.Unavailable(b, "PostgreSQL", err)
	}
	defer pg.Close(ctx)
	c := broker.Caller{User: "bench", Groups: []string{"eng"}}
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	prefix := fmt.Sprintf("mf_benchact_%d_", time.Now().UnixNano())
	var issued, bare []string
	defer func() {
		for _, n := range bare {
			pg.Exec(ctx, "DROP ROLE "+n)
		}
		for _, n := range issued {
			conn.Revoke(ctx, mayfly.RevokeRequest{Username: n})
		}
	}()
	var plain, activate []time.Duration
	for i := 0; b.Loop(); i++ {
		name := fmt.Sprintf("%sp%d", prefix, i)
		bare = append(bare, name)
		t0 := time.Now()
		if _, err := pg.Exec(ctx, "CREATE ROLE "+name+" LOGIN PASSWORD '"+postgres.GeneratePassword()+"' VALID UNTIL '"+until+"' IN ROLE pg_read_all_data"); err != nil {
			b.Fatal(err)
		}
		plain = append(plain, time.Since(t0))

		r, _, err := br.CreateRequest(ctx, c, broker.RequestInput{Target: "pg", Grant: "readonly", Duration: time.Hour, Reason: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Millisecond) // as between a user's two calls
		t0 = time.Now()
		a, err := br.Activate(ctx, c, r.ID, broker.ActivateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		activate = append(activate, time.Since(t0))
		issued = append(issued, a.Lease.Username)
	}
	b.StopTimer()
	med := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds())
	}
	mp, ma := med(plain), med(activate)
	b.ReportMetric(mp, "plain-p50-µs")
	b.ReportMetric(ma, "activate-p50-µs")
	b.ReportMetric(ma/mp, "activate/plain")
}
