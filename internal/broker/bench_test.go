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
	getenv := installationKey(&tgt, keyed)
	conn, err := postgres.New(tgt, getenv)
	if err != nil {
		b.Fatal(err)
	}
	if err := conn.Check(ctx); err != nil {
		testenv.Unavailable(b, "PostgreSQL", err)
	}
	b.Cleanup(func() { conn.Close() })
	return oneTargetBroker(b, st, tgt, conn), conn
}

// installationKey gives tgt an installation key when keyed, and returns
// the environment its connector reads it from.
func installationKey(tgt *mayfly.Target, keyed bool) func(string) string {
	if !keyed {
		return func(string) string { return "" }
	}
	tgt.InstanceKeyEnv = "MAYFLY_TEST_INSTANCE_KEY"
	return func(k string) string {
		if k == tgt.InstanceKeyEnv {
			return "test-installation-key-0123456789"
		}
		return ""
	}
}

// oneTargetBroker is a broker on store st whose one target is tgt, reached
// through conn, with a policy that approves every grant of it for group
// eng at once (up to an hour).
func oneTargetBroker(tb testing.TB, st mayfly.Store, tgt mayfly.Target, conn mayfly.Connector) *broker.Broker {
	tb.Helper()
	var grants []string
	for g := range tgt.Grants {
		grants = append(grants, g)
	}
	set, err := policy.Compile([]policy.Policy{{Name: "p", Groups: []string{"eng"}, Targets: []string{tgt.Name}, Grants: grants, MaxDuration: time.Hour}},
		[]policy.TargetInfo{{Name: tgt.Name, Kind: string(tgt.Kind), Grants: grants}})
	if err != nil {
		tb.Fatal(err)
	}
	return broker.New(&broker.Config{Targets: map[string]mayfly.Target{tgt.Name: tgt}, Policies: set},
		broker.Options{Store: st, Connectors: map[string]mayfly.Connector{tgt.Name: conn}, HMACKey: []byte("k")})
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
	roles := newBenchRoles(b, conn, "base")
	c := broker.Caller{User: "bench", Groups: []string{"eng"}}
	var plain, verifier, issue, rtIdle, rtHot []time.Duration
	salt := make([]byte, 16)
	for i := 0; b.Loop(); i++ {
		plain = append(plain, roles.create(b, fmt.Sprintf("p%d", i), postgres.GeneratePassword()))
		rand.Read(salt)
		v := postgres.SCRAMVerifier(postgres.GeneratePassword(), salt, 1)
		verifier = append(verifier, roles.create(b, fmt.Sprintf("v%d", i), v))

		t0 := time.Now()
		_, _, a, err := br.CreateAndActivate(ctx, c, broker.RequestInput{Target: "pg", Grant: "readonly", Duration: time.Hour, Reason: "bench"}, broker.ActivateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		issue = append(issue, time.Since(t0))
		roles.issued = append(roles.issued, a.Lease.Username)

		// What a loopback round trip costs on this machine after the
		// processes have been idle for a millisecond, as between the
		// steps of an issue, and back to back: on a virtual machine whose
		// idle cores take long to wake, the first is several times the
		// second, and an issue is a chain of such round trips.
		time.Sleep(time.Millisecond)
		for _, rt := range []*[]time.Duration{&rtIdle, &rtHot} {
			t0 = time.Now()
			if _, err := roles.pg.Exec(ctx, "SELECT 1"); err != nil {
				b.Fatal(err)
			}
			*rt = append(*rt, time.Since(t0))
		}
	}
	b.StopTimer()
	mp, mv, mi := median(plain), median(verifier), median(issue)
	b.ReportMetric(mp, "plain-p50-µs")
	b.ReportMetric(mv, "verifier-p50-µs")
	b.ReportMetric(mi, "issue-p50-µs")
	b.ReportMetric(mi/mp, "issue/plain")
	b.ReportMetric(mi/mv, "issue/verifier")
	b.ReportMetric(median(rtIdle), "rt-idle-p50-µs")
	b.ReportMetric(median(rtHot), "rt-hot-p50-µs")
}

// benchRoles is the bare side of a benchmark on the local PostgreSQL:
// the roles it creates as baselines, and the accounts the broker issued,
// all removed when the benchmark ends.
type benchRoles struct {
	pg            *pgx.Conn
	until, prefix string
	bare, issued  []string
}

// newBenchRoles connects to the local PostgreSQL; the roles it creates are
// named with tag, and those left at the end dropped (issued through conn).
func newBenchRoles(b *testing.B, conn mayfly.Connector, tag string) *benchRoles {
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		testenv.Unavailable(b, "PostgreSQL", err)
	}
	r := &benchRoles{pg: pg, until: time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		prefix: fmt.Sprintf("mf_bench%s_%d_", tag, time.Now().UnixNano())}
	b.Cleanup(func() {
		for _, n := range r.bare {
			pg.Exec(ctx, "DROP ROLE "+n)
		}
		for _, n := range r.issued {
			conn.Revoke(ctx, mayfly.RevokeRequest{Username: n})
		}
		pg.Close(ctx)
	})
	return r
}

// create runs the bare CREATE ROLE of a login role named with suffix,
// with password (plaintext, which the server hashes, or a verifier), and
// returns how long it took.
func (r *benchRoles) create(b *testing.B, suffix, password string) time.Duration {
	name := r.prefix + suffix
	r.bare = append(r.bare, name)
	t0 := time.Now()
	if _, err := r.pg.Exec(context.Background(), "CREATE ROLE "+name+" LOGIN PASSWORD '"+password+"' VALID UNTIL '"+r.until+"' IN ROLE pg_read_all_data"); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

// median is the median of ds, in microseconds.
func median(ds []time.Duration) float64 {
	slices.Sort(ds)
	return float64(ds[len(ds)/2].Microseconds())
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
