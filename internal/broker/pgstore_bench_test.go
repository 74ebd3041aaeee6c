package broker_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/policy"
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
			tgt := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: "mf_", DSN: testenv.PostgresDSN(),
				Grants: map[string]mayfly.Grant{"readonly": {Name: "readonly", Roles: []string{"pg_read_all_data"}}}}
			getenv := func(string) string { return "" }
			if mode != "plain" {
				tgt.InstanceKeyEnv = "MAYFLY_BENCH_INSTANCE_KEY"
				getenv = func(k string) string {
					if k == tgt.InstanceKeyEnv {
						return "bench-installation-key-0123456789"
					}
					return ""
				}
			}
			conn, err := postgres.New(tgt, getenv)
			if err != nil {
				b.Fatal(err)
			}
			if err := conn.Check(ctx); err != nil {
				testenv.Unavailable(b, "PostgreSQL", err)
			}
			b.Cleanup(func() { conn.Close() })
			set, err := policy.Compile([]policy.Policy{{Name: "p", Groups: []string{"eng"}, Targets: []string{"pg"}, Grants: []string{"readonly"}, MaxDuration: time.Hour}},
				[]policy.TargetInfo{{Name: "pg", Kind: "postgres", Grants: []string{"readonly"}}})
			if err != nil {
				b.Fatal(err)
			}
			br := broker.New(&broker.Config{Targets: map[string]mayfly.Target{"pg": tgt}, Policies: set},
				broker.Options{Store: st, Connectors: map[string]mayfly.Connector{"pg": conn}, HMACKey: []byte("k")})
			benchIssueVsBaselines(b, br, conn)
		})
	}
}
