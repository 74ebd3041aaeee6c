package broker_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

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
