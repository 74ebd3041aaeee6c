package broker_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

// BenchmarkBareCreateRole is the raw operation BenchmarkIssue wraps, on the
// same server: CREATE ROLE with a plaintext password the server hashes.
func BenchmarkBareCreateRole(b *testing.B) {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		testenv.Unavailable(b, "PostgreSQL", err)
	}
	defer c.Close(ctx)
	var names []string
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("mf_benchbare_%d_%d", time.Now().UnixNano(), i)
		names = append(names, name)
		if _, err := c.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'plain-password-of-some-length' VALID UNTIL 'infinity' IN ROLE pg_read_all_data", name)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for _, n := range names {
		c.Exec(ctx, "DROP ROLE "+n)
	}
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
		_, _, a, err := br.CreateAndActivate(ctx, c, broker.RequestInput{Target: "pg", Grant: "readonly", Duration: time.Hour, Reason: "bench"}, broker.ActivateOptions{})
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

// BenchmarkRevokeBurst measures the scheduler revoking b.N leases that
// all expired at the same moment, end to end against PostgreSQL.
func BenchmarkRevokeBurst(b *testing.B) {
	br, _ := newBenchBroker(b)
	ctx := context.Background()
	c := broker.Caller{User: "bench", Groups: []string{"eng"}}
	for i := 0; i < b.N; i++ {
		if _, _, _, err := br.CreateAndActivate(ctx, c, broker.RequestInput{Target: "pg", Grant: "readonly", Duration: time.Second, Reason: "bench"}, broker.ActivateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(time.Until(time.Now().Add(time.Second)))
	b.ResetTimer()
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- br.RunScheduler(sctx, broker.SchedulerOptions{Concurrency: 16}) }()
	for {
		var n map[mayfly.LeaseState]int
		br.Store().View(ctx, func(tx mayfly.Tx) error {
			var err error
			n, err = tx.CountLeases()
			return err
		})
		if n[mayfly.LeaseRevoked] == b.N {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	cancel()
	<-done
}
