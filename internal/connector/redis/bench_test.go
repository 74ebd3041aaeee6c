package redis

import (
	"context"
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
