package postgres_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
)

// benchCallers is how many goroutines the parallel benchmarks run.
const benchCallers = 16

// dropRoles drops every role whose name starts with prefix, as the admin.
func dropRoles(b *testing.B, conn *pgx.Conn, prefix string) {
	b.Helper()
	ctx := context.Background()
	rows, err := conn.Query(ctx, "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname::text, $1)", prefix)
	if err != nil {
		b.Fatalf("list roles: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		b.Fatalf("list roles: %v", err)
	}
	for len(names) > 0 {
		n := min(len(names), 500)
		batch := &pgx.Batch{}
		for _, name := range names[:n] {
			batch.Queue("DROP ROLE IF EXISTS " + pgx.Identifier{name}.Sanitize())
		}
		if err := conn.SendBatch(ctx, batch).Close(); err != nil {
			b.Fatalf("drop roles: %v", err)
		}
		names = names[n:]
	}
}

// createRoles creates n bare login roles named prefix+i, as the admin.
func createRoles(b *testing.B, conn *pgx.Conn, prefix string, n int) []string {
	b.Helper()
	var names []string
	for i := 0; i < n; {
		batch := &pgx.Batch{}
		for ; i < n && batch.Len() < 500; i++ {
			name := fmt.Sprintf("%s%d", prefix, i)
			names = append(names, name)
			batch.Queue("CREATE ROLE " + name + " LOGIN IN ROLE pg_read_all_data")
		}
		if err := conn.SendBatch(context.Background(), batch).Close(); err != nil {
			b.Fatalf("create roles: %v", err)
		}
	}
	return names
}

// provisionRoles provisions n roles through c with benchCallers workers.
func provisionRoles(b *testing.B, c *postgres.Connector, prefix string, n int) []string {
	b.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchCallers)
	exp := time.Now().Add(time.Hour)
	for range benchCallers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				_, err := c.Provision(context.Background(), mayfly.ProvisionRequest{LeaseID: "lse_" + names[i], Username: names[i], Grant: readGrant, ExpiresAt: exp})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("provision: %v", err)
	}
	return names
}

// parallel runs f(i) for i in [0, b.N) from benchCallers goroutines.
func parallel(b *testing.B, f func(i int) error) {
	b.Helper()
	b.SetParallelism((benchCallers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := f(int(next.Add(1)) - 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkProvision(b *testing.B) {
	conn := admin(b, "")
	prefix := testPrefix()
	c := newConnector(b, prefix)
	exp := time.Now().Add(time.Hour)
	b.Cleanup(func() { dropRoles(b, conn, prefix) })
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("%s%d", prefix, i)
		i++
		if _, err := c.Provision(context.Background(), mayfly.ProvisionRequest{LeaseID: "lse_" + name, Username: name, Grant: readGrant, ExpiresAt: exp}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBareCreateRolePlain sends the plaintext password and lets the
// server hash it (4096 PBKDF2 iterations by default).
func BenchmarkBareCreateRolePlain(b *testing.B) {
	conn := admin(b, "")
	prefix := testPrefix()
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	b.Cleanup(func() { dropRoles(b, conn, prefix) })
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("%s%d", prefix, i)
		i++
		sql := "CREATE ROLE " + name + " LOGIN PASSWORD '" + postgres.GeneratePassword() + "' VALID UNTIL '" + until + "' IN ROLE pg_read_all_data"
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBareCreateRoleVerifier sends a verifier computed here with one
// iteration, like Provision, without its checks, comment and pool.
func BenchmarkBareCreateRoleVerifier(b *testing.B) {
	conn := admin(b, "")
	prefix := testPrefix()
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	b.Cleanup(func() { dropRoles(b, conn, prefix) })
	salt := make([]byte, 16)
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("%s%d", prefix, i)
		i++
		rand.Read(salt)
		v := postgres.SCRAMVerifier(postgres.GeneratePassword(), salt, 1)
		sql := "CREATE ROLE " + name + " LOGIN PASSWORD '" + v + "' VALID UNTIL '" + until + "' IN ROLE pg_read_all_data"
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRevoke(b *testing.B) {
	conn := admin(b, "")
	prefix := testPrefix()
	c := newConnector(b, prefix)
	b.Cleanup(func() { dropRoles(b, conn, prefix) })
	names := provisionRoles(b, c, prefix, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Revoke(context.Background(), mayfly.RevokeRequest{Username: names[i]}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRevokeParallel revokes from 16 concurrent callers.
func BenchmarkRevokeParallel(b *testing.B) {
	conn := admin(b, "")
	prefix := testPrefix()
	c := newConnector(b, prefix)
	b.Cleanup(func() { dropRoles(b, conn, prefix) })
	names := provisionRoles(b, c, prefix, b.N)
	b.ResetTimer()
	parallel(b, func(i int) error {
		return c.Revoke(context.Background(), mayfly.RevokeRequest{Username: names[i]})
	})
}

// BenchmarkBareDropRole is a lone DROP ROLE: no NOLOGIN, no sessions
// ended, no dependency check, no verification.
func BenchmarkBareDropRole(b *testing.B) {
	conn := admin(b, "")
	prefix := testPrefix()
	b.Cleanup(func() { dropRoles(b, conn, prefix) })
	names := createRoles(b, conn, prefix, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := conn.Exec(context.Background(), "DROP ROLE "+names[i]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBareDropRoleParallel is BenchmarkBareDropRole from 16 callers,
// each with its own connection from a pool.
func BenchmarkBareDropRoleParallel(b *testing.B) {
	conn := admin(b, "")
	prefix := testPrefix()
	b.Cleanup(func() { dropRoles(b, conn, prefix) })
	names := createRoles(b, conn, prefix, b.N)
	conns := make(chan *pgx.Conn, benchCallers)
	for range benchCallers {
		conns <- admin(b, "")
	}
	b.ResetTimer()
	parallel(b, func(i int) error {
		cn := <-conns
		defer func() { conns <- cn }()
		_, err := cn.Exec(context.Background(), "DROP ROLE "+names[i])
		return err
	})
}

// BenchmarkInterleaved runs, in turn in every iteration, Provision, the two
// bare CREATE ROLE statements, Revoke and a bare DROP ROLE, so that all see
// the same load, and reports the median latency of each in ms.
func BenchmarkInterleaved(b *testing.B) {
	conn := admin(b, "")
	prefix := testPrefix()
	c := newConnector(b, prefix)
	b.Cleanup(func() { dropRoles(b, conn, prefix) })
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	until := exp.UTC().Format(time.RFC3339)
	salt := make([]byte, 16)
	ops := []string{"provision", "create_plain", "create_verifier", "revoke", "drop"}
	lat := map[string][]time.Duration{}
	timed := func(op string, f func() error) {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatalf("%s: %v", op, err)
		}
		lat[op] = append(lat[op], time.Since(start))
	}
	i := 0
	for b.Loop() {
		lease, plain, verifier := fmt.Sprintf("%sl%d", prefix, i), fmt.Sprintf("%sp%d", prefix, i), fmt.Sprintf("%sv%d", prefix, i)
		i++
		timed("provision", func() error {
			_, err := c.Provision(ctx, mayfly.ProvisionRequest{LeaseID: "lse_" + lease, Username: lease, Grant: readGrant, ExpiresAt: exp})
			return err
		})
		timed("create_plain", func() error {
			_, err := conn.Exec(ctx, "CREATE ROLE "+plain+" LOGIN PASSWORD '"+postgres.GeneratePassword()+"' VALID UNTIL '"+until+"' IN ROLE pg_read_all_data")
			return err
		})
		timed("create_verifier", func() error {
			rand.Read(salt)
			v := postgres.SCRAMVerifier(postgres.GeneratePassword(), salt, 1)
			_, err := conn.Exec(ctx, "CREATE ROLE "+verifier+" LOGIN PASSWORD '"+v+"' VALID UNTIL '"+until+"' IN ROLE pg_read_all_data")
			return err
		})
		timed("revoke", func() error {
			return c.Revoke(ctx, mayfly.RevokeRequest{LeaseID: "lse_" + lease, Username: lease})
		})
		timed("drop", func() error {
			_, err := conn.Exec(ctx, "DROP ROLE "+verifier)
			return err
		})
		conn.Exec(ctx, "DROP ROLE "+plain) // untimed
	}
	med := map[string]float64{}
	for _, op := range ops {
		d := lat[op]
		slices.Sort(d)
		med[op] = float64(d[len(d)/2]) / float64(time.Millisecond)
		b.ReportMetric(med[op], op+"_ms")
	}
	b.ReportMetric(med["create_plain"]/med["provision"], "plain/provision")
	b.ReportMetric(med["provision"]/med["create_verifier"], "provision/verifier")
	b.ReportMetric(med["revoke"]/med["drop"], "revoke/drop")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRevokeBatch revokes batches of 256 roles with RevokeBatch
// (look up, lock out, end sessions, drop, verify), and, in the same run,
// drops as many with a bare "DROP ROLE a, b, …" of 256 names, both while
// 10,240 other roles sit in the catalog, as in a burst of expiries. Each
// op is one batch.
//
//	go test -run '^$' -bench RevokeBatch -benchtime 20x -count 3 ./internal/connector/postgres/
func BenchmarkRevokeBatch(b *testing.B) {
	const batch = 256
	conn := admin(b, "")
	others := testPrefix()
	// The catalog's statistics are taken before the roles are made, as
	// when many leases were issued since autovacuum's last pass (or it is
	// off): the planner then takes pg_authid for a small table.
	if _, err := conn.Exec(context.Background(), "VACUUM pg_catalog.pg_authid"); err != nil {
		b.Fatalf("vacuum: %v", err)
	}
	b.Cleanup(func() { dropRoles(b, conn, others) })
	createRoles(b, conn, others, 40*batch)
	b.Run("mayfly", func(b *testing.B) {
		prefix := testPrefix()
		c := newConnector(b, prefix)
		b.Cleanup(func() { dropRoles(b, conn, prefix) })
		names := createRoles(b, conn, prefix, b.N*batch)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			reqs := make([]mayfly.RevokeRequest, batch)
			for j := range reqs {
				reqs[j].Username = names[i*batch+j]
			}
			for j, err := range c.RevokeBatch(context.Background(), reqs) {
				if err != nil {
					b.Fatalf("revoke %s: %v", reqs[j].Username, err)
				}
			}
		}
	})
	b.Run("bare-drop", func(b *testing.B) {
		prefix := testPrefix()
		b.Cleanup(func() { dropRoles(b, conn, prefix) })
		names := createRoles(b, conn, prefix, b.N*batch)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := conn.Exec(context.Background(), "DROP ROLE "+strings.Join(names[i*batch:(i+1)*batch], ", ")); err != nil {
				b.Fatal(err)
			}
		}
	})
}
