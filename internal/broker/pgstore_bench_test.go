package broker_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	pgstore "github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
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
	roles := newBenchRoles(b, conn, "act")
	c := broker.Caller{User: "bench", Groups: []string{"eng"}}
	var plain, activate []time.Duration
	for i := 0; b.Loop(); i++ {
		plain = append(plain, roles.create(b, fmt.Sprintf("p%d", i), postgres.GeneratePassword()))
		r, _, err := br.CreateRequest(ctx, c, broker.RequestInput{Target: "pg", Grant: "readonly", Duration: time.Hour, Reason: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Millisecond) // as between a user's two calls
		t0 := time.Now()
		a, err := br.Activate(ctx, c, r.ID, broker.ActivateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		activate = append(activate, time.Since(t0))
		roles.issued = append(roles.issued, a.Lease.Username)
	}
	b.StopTimer()
	mp, ma := median(plain), median(activate)
	b.ReportMetric(mp, "plain-p50-µs")
	b.ReportMetric(ma, "activate-p50-µs")
	b.ReportMetric(ma/mp, "activate/plain")
}
