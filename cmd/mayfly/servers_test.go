package main

import (
	"context"
	"database/sql"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// requireMariaDB returns an admin connection to the test MariaDB, closed
// with the test; missing, it skips locally and fails under CI=true.
func requireMariaDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", testenv.MySQLDSN())
	if err == nil {
		err = db.PingContext(context.Background())
	}
	if err != nil {
		testenv.Unavailable(t, "MariaDB", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// requireRedis returns an admin client of the test Redis, closed with the
// test; missing, it skips locally and fails under CI=true.
func requireRedis(t *testing.T) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr()})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		testenv.Unavailable(t, "Redis", err)
	}
	return rdb
}
