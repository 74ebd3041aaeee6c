package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// store is a mayfly.Store the server can also ping for /readyz.
type store interface {
	mayfly.Store
	Ping(ctx context.Context) error
}

// openStore opens the store the configuration names: the SQLite file
// (creating its directory), or the PostgreSQL database.
func openStore(ctx context.Context, sc config.Store, getenv func(string) string) (store, error) {
	if sc.Postgres != nil {
		dsn, err := sc.Postgres.ResolveDSN(getenv)
		if err != nil {
			return nil, err
		}
		st, err := postgres.Open(ctx, dsn, sc.Postgres.MaxConns)
		if err != nil {
			return nil, fmt.Errorf("open postgres store: %w", err)
		}
		return st, nil
	}
	if err := os.MkdirAll(filepath.Dir(sc.SQLite), 0o700); err != nil {
		return nil, fmt.Errorf("create store directory: %w", err)
	}
	st, err := sqlite.Open(ctx, sc.SQLite)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", sc.SQLite, err)
	}
	return st, nil
}
