// Package testenv locates the real servers integration tests talk to. Each
// address comes from an environment variable with a loopback default. When a
// server is missing a test skips locally and fails under CI=true.
package testenv

import (
	"os"
	"testing"
)

// Get returns the environment variable key, or def when it is unset.
func Get(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// PostgresDSN is the admin DSN of the test PostgreSQL (MAYFLY_TEST_PG_DSN).
func PostgresDSN() string {
	return Get("MAYFLY_TEST_PG_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
}

// MySQLDSN is the admin DSN of the test MySQL/MariaDB (MAYFLY_TEST_MYSQL_DSN).
func MySQLDSN() string {
	return Get("MAYFLY_TEST_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/")
}

// RedisAddr is the address of the test Redis (MAYFLY_TEST_REDIS_ADDR).
func RedisAddr() string {
	return Get("MAYFLY_TEST_REDIS_ADDR", "127.0.0.1:6379")
}

// Unavailable stops the test because a server it needs is missing: it
// skips, or fails under CI=true, where every server must be present.
func Unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true: %v", what, err)
	}
	t.Skipf("%s unavailable (set CI=true to make this fail): %v", what, err)
}
