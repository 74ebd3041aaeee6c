package broker_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

func newBenchBroker(b *testing.B) (*broker.Broker, mayfly.Connector) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	tgt := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: "mf_", DSN: testenv.PostgresDSN(),
		Grants: map[string]mayfly.Grant{"readonly": {Name: "readonly", Roles: []string{"pg_read_all_data"}}}}
	conn, err := postgres.New(tgt, func(string) string { return "" })
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
	return br, conn
}

// BenchmarkIssue measures request → automatic approval → account created,
// without HTTP. Accounts are revoked after timing.
func BenchmarkIssue(b *testing.B) {
	br, conn := newBenchBroker(b)
	ctx := context.Background()
	c := broker.Caller{User: "bench", Groups: []string{"eng"}}
	var names []string
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, _, err := br.CreateRequest(ctx, c, broker.RequestInput{Target: "pg", Grant: "readonly", Duration: time.Hour, Reason: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		a, err := br.Activate(ctx, c, r.ID, broker.ActivateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		names = append(names, a.Lease.Username)
	}
	b.StopTimer()
	for _, n := range names {
		conn.Revoke(ctx, mayfly.RevokeRequest{Username: n})
	}
}
