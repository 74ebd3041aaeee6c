package broker_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"slices"
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
	return newBenchBrokerKeyed(b, false)
}

// newBenchBrokerKeyed is newBenchBroker with, when keyed, an installation
// key: roles carry the installation's mark, as in a production set-up.
func newBenchBrokerKeyed(b *testing.B, keyed bool) (*broker.Broker, mayfly.Connector) {
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return newBenchBrokerOn(b, st, keyed)
}

// newBenchBrokerOn is a broker on store st with the local PostgreSQL as
// its one target, keyed as newBenchBrokerKeyed says.
func newBenchBrokerOn(b *testing.B, st mayfly.Store, keyed bool) (*broker.Broker, mayfly.Connector) {
	ctx := context.Background()
	tgt := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: "mf_", DSN: testenv.PostgresDSN(),
		Grants: map[string]mayfly.Grant{"readonly": {Name: "readonly", Roles: []string{"pg_read_all_data"}}}}
	getenv := func(string) string { return "" }
	if keyed {
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

// BenchmarkIssueVsBaselines measures a one-call issue (request, automatic
// approval, intent, account, activation, credential; no HTTP) against its
// two baselines on the same server, in the same run, strictly interleaved
// so that a slower spell of the machine weighs on all three alike: the
// bare CREATE ROLE with a plaintext password the server hashes (what a
// broker that lets the server hash pays), and the bare statement with a
// verifier computed by the client (the floor). It reports the median of
// each and the ratios of the issue's median to both. Sub-benchmarks: the
// store as it is (intent-sync, the intent's commit is synced to stable
// storage), without that sync (normal), and as configured in production
// with an installation key (marked: roles carry the installation's mark,
// so a one-call PostgreSQL issue skips the intent's sync).
//
//	go test -run '^$' -bench IssueVsBaselines -benchtime 1000x -count 3 ./internal/broker/
func BenchmarkIssueVsBaselines(b *testing.B) {
	for _, mode := range []string{"marked", "intent-sync", "normal"} {
		b.Run(mode, func(b *testing.B) {
			br, conn := newBenchBrokerKeyed(b, mode == "marked")
			if mode == "normal" {
				br.Store().(*sqlite.DB).SetIntentSync(false)
			}
			benchIssueVsBaselines(b, br, conn)
		})
	}
}

func benchIssueVsBaselines(b *testing.B, br *broker.Broker, conn mayfly.Connector) {
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		testenv.Unavailable(b, "PostgreSQL", err)
	}
	defer pg.Close(ctx)
	c := broker.Caller{User: "bench", Groups: []string{"eng"}}
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	prefix := fmt.Sprintf("mf_benchbase_%d_", time.Now().UnixNano())
	var issued, bare []string
	defer func() {
		for _, n := range bare {
			pg.Exec(ctx, "DROP ROLE "+n)
		}
		for _, n := range issued {
			conn.Revoke(ctx, mayfly.RevokeRequest{Username: n})
		}
	}()
	var plain, verifier, issue, rtIdle, rtHot []time.Duration
	salt := make([]byte, 16)
	for i := 0; b.Loop(); i++ {
		name := fmt.Sprintf("%sp%d", prefix, i)
		bare = append(bare, name)
		t0 := time.Now()
		if _, err := pg.Exec(ctx, "CREATE ROLE "+name+" LOGIN PASSWORD '"+postgres.GeneratePassword()+"' VALID UNTIL '"+until+"' IN ROLE pg_read_all_data"); err != nil {
			b.Fatal(err)
		}
		plain = append(plain, time.Since(t0))

		name = fmt.Sprintf("%sv%d", prefix, i)
		bare = append(bare, name)
		t0 = time.Now()
		rand.Read(salt)
		v := postgres.SCRAMVerifier(postgres.GeneratePassword(), salt, 1)
		if _, err := pg.Exec(ctx, "CREATE ROLE "+name+" LOGIN PASSWORD '"+v+"' VALID UNTIL '"+until+"' IN ROLE pg_read_all_data"); err != nil {
			b.Fatal(err)
		}
		verifier = append(verifier, time.Since(t0))

		t0 = time.Now()
		_, _, a, err := br.CreateAndActivate(ctx, c, broker.RequestInput{Target: "pg", Grant: "readonly", Duration: time.Hour, Reason: "bench"}, broker.ActivateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		issue = append(issue, time.Since(t0))
		issued = append(issued, a.Lease.Username)

		// What a loopback round trip costs on this machine after the
		// processes have been idle for a millisecond, as between the
		// steps of an issue, and back to back: on a virtual machine whose
		// idle cores take long to wake, the first is several times the
		// second, and an issue is a chain of such round trips.
		time.Sleep(time.Millisecond)
		for _, rt := range []*[]time.Duration{&rtIdle, &rtHot} {
			t0 = time.Now()
			if _, err := pg.Exec(ctx, "SELECT 1"); err != nil {
				b.Fatal(err)
			}
			*rt = append(*rt, time.Since(t0))
		}
	}
	b.StopTimer()
	med := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds())
	}
	mp, mv, mi := med(plain), med(verifier), med(issue)
	b.ReportMetric(mp, "plain-p50-µs")
	b.ReportMetric(mv, "verifier-p50-µs")
	b.ReportMetric(mi, "issue-p50-µs")
	b.ReportMetric(mi/mp, "issue/plain")
	b.ReportMetric(mi/mv, "issue/verifier")
	b.ReportMetric(med(rtIdle), "rt-idle-p50-µs")
	b.ReportMetric(med(rtHot), "rt-hot-p50-µs")
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
