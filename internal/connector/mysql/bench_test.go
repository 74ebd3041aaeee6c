package mysql

import (
	"context"
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
