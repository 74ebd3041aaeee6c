package redis

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/connectortest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// The benchmarks compare Provision and Revoke with the bare commands on the
// same server: ACL SETUSER with the same rules, and ACL DELUSER.

func benchSetup(b *testing.B) (*Connector, string) {
	b.Helper()
	admin(b)
	c, err := New(mayfly.Target{Kind: mayfly.KindRedis, Address: testenv.RedisAddr()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, testPrefix()
}

func bareSetUser(ctx context.Context, c *Connector, name string) error {
	pw, _ := newPassword()
	return c.rdb.Do(ctx, "ACL", "SETUSER", name, "reset", "on", ">"+pw, "~mf_rdt:*", "+@read", "+ping").Err()
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

func BenchmarkBareSetUser(b *testing.B) {
	c, prefix := benchSetup(b)
	ctx := context.Background()
	for b.Loop() {
		name := connectortest.Name(prefix, MaxNameLen)
		if err := bareSetUser(ctx, c, name); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.rdb.Do(ctx, "ACL", "DELUSER", name).Err(); err != nil {
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

func BenchmarkBareDelUser(b *testing.B) {
	c, prefix := benchSetup(b)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		name := connectortest.Name(prefix, MaxNameLen)
		if err := bareSetUser(ctx, c, name); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := c.rdb.Do(ctx, "ACL", "DELUSER", name).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInterleaved runs Provision, the bare ACL SETUSER, Revoke and the
// bare ACL DELUSER in turn within each iteration, so the four see the same
// load, and reports the median of each and the ratios.
func BenchmarkInterleaved(b *testing.B) {
	c, prefix := benchSetup(b)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	var prov, set, rev, del []time.Duration
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
		timed(&set, func() error { return bareSetUser(ctx, c, bare) })
		timed(&del, func() error { return c.rdb.Do(ctx, "ACL", "DELUSER", bare).Err() })
	}
	reportMedians(b, "provision", prov, "setuser", set, "revoke", rev, "deluser", del)
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
