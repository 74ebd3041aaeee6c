// Package pgtest gives tests a fresh PostgreSQL database of their own on
// the test server (internal/testenv.PostgresDSN), dropped when the test
// ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// NewDatabase creates an empty database named mayfly_test_<random> and
// returns its DSN; t.Cleanup drops it. Without a PostgreSQL server the
// test skips, or fails under CI=true.
func NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := testenv.PostgresDSN()
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	defer c.Close(context.Background())
	b := make([]byte, 6)
	rand.Read(b)
	name := "mayfly_test_" + hex.EncodeToString(b)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("test PostgreSQL DSN must be a URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}
