package mysql

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/connectortest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// The benchmarks compare Provision and Revoke with the bare statements on
// the same server: CREATE USER plus the grant's GRANT, and DROP USER.

func benchSetup(b *testing.B) (*Connector, string) {
	b.Helper()
	adminDB(b)
	c, err := New(mayfly.Target{Kind: mayfly.KindMySQL, DSN: testenv.MySQLDSN()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, testPrefix()
}

func BenchmarkProvision(b *testing.B) {
	c, prefix := benchSetup(b)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	for b.Loop() {
		name := connectortest.Name(prefix, MaxNameLen)
		if _, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: exp}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.Revoke(ctx, mayfly.RevokeRequest{Username: name}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkBareCreateUser(b *testing.B) {
	c, prefix := benchSetup(b)
	ctx := context.Background()
	for b.Loop() {
		name := connectortest.Name(prefix, MaxNameLen)
		pw, _ := newPassword()
		if _, err := c.db.ExecContext(ctx, "CREATE USER "+account(name)+" IDENTIFIED BY "+quoteString(pw)); err != nil {
			b.Fatal(err)
		}
		if _, err := c.db.ExecContext(ctx, expandStatement(testGrant().Statements[0], name)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := c.db.ExecContext(ctx, "DROP USER "+account(name)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkRevoke(b *testing.B) {
	c, prefix := benchSetup(b)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	for b.Loop() {
		b.StopTimer()
		name := connectortest.Name(prefix, MaxNameLen)
		if _, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: exp}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := c.Revoke(ctx, mayfly.RevokeRequest{Username: name}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBareDropUser(b *testing.B) {
	c, prefix := benchSetup(b)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		name := connectortest.Name(prefix, MaxNameLen)
		pw, _ := newPassword()
		if _, err := c.db.ExecContext(ctx, "CREATE USER "+account(name)+" IDENTIFIED BY "+quoteString(pw)); err != nil {
			b.Fatal(err)
		}
		if _, err := c.db.ExecContext(ctx, expandStatement(testGrant().Statements[0], name)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := c.db.ExecContext(ctx, "DROP USER "+account(name)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInterleaved runs Provision, the bare CREATE USER and GRANT,
// Revoke and the bare DROP USER in turn within each iteration, so the four
// see the same load, and reports the median of each and the ratios.
func BenchmarkInterleaved(b *testing.B) {
	c, prefix := benchSetup(b)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	var prov, create, rev, drop []time.Duration
	timed := func(d *[]time.Duration, f func() error) {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		*d = append(*d, time.Since(start))
	}
	for b.Loop() {
		name := connectortest.Name(prefix, MaxNameLen)
		timed(&prov, func() error {
			_, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: exp})
			return err
		})
		timed(&rev, func() error { return c.Revoke(ctx, mayfly.RevokeRequest{Username: name}) })
		bare := connectortest.Name(prefix, MaxNameLen)
		pw, _ := newPassword()
		timed(&create, func() error {
			if _, err := c.db.ExecContext(ctx, "CREATE USER "+account(bare)+" IDENTIFIED BY "+quoteString(pw)); err != nil {
				return err
			}
			_, err := c.db.ExecContext(ctx, expandStatement(testGrant().Statements[0], bare))
			return err
		})
		timed(&drop, func() error {
			_, err := c.db.ExecContext(ctx, "DROP USER "+account(bare))
			return err
		})
	}
	reportMedians(b, "provision", prov, "create", create, "revoke", rev, "drop", drop)
}

// reportMedians reports the median of each series in ms and the ratio of
// each connector series to the bare one after it.
func reportMedians(b *testing.B, conn string, c []time.Duration, bare string, bc []time.Duration, conn2 string, c2 []time.Duration, bare2 string, bc2 []time.Duration) {
	m := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Millisecond)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(m(c), conn+"-ms")
	b.ReportMetric(m(bc), bare+"-ms")
	b.ReportMetric(m(c)/m(bc), conn+"/"+bare)
	b.ReportMetric(m(c2), conn2+"-ms")
	b.ReportMetric(m(bc2), bare2+"-ms")
	b.ReportMetric(m(c2)/m(bc2), conn2+"/"+bare2)
}
