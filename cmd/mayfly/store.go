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

// openExistingStore opens the store the configuration names as it is,
// for commands that must not make or migrate one (doctor, seal
// rotate-key): an ENOTFOUND error when there is none yet (no SQLite file,
// no schema in the PostgreSQL database), which a server would create,
// owned by whoever runs the command; an EINVALID one when its schema is
// not this build's, which a server would migrate.
func openExistingStore(ctx context.Context, sc config.Store, getenv func(string) string) (store, error) {
	if sc.Postgres != nil {
		dsn, err := sc.Postgres.ResolveDSN(getenv)
		if err != nil {
			return nil, err
		}
		return postgres.OpenExisting(ctx, dsn, 2)
	}
	return sqlite.OpenExisting(ctx, sc.SQLite)
}

// clearDeadProcesses frees what the servers before this one left in the
// SQLite store st, which this process owns (sqlite.Own), so every holder
// recorded in it is a process that has ended: their leader leases (the
// work that runs once, and the locks of credential rotations) and their
// replica records. Without it, after a crash that work and the resolution
// of a rotation the crash cut short would wait for the leases to lapse
// (cluster.leader_ttl, 10 s by default; a rotation's lock, 30 s), and
// `mayfly cluster` would list the dead server for an hour.
func clearDeadProcesses(ctx context.Context, st mayfly.Store) (leaders, replicas int, err error) {
	err = st.Update(ctx, func(tx mayfly.Tx) error {
		leaders, replicas = 0, 0
		ls, err := tx.ListLeaders()
		if err != nil {
			return err
		}
		for _, l := range ls {
			if err := tx.ReleaseLeader(l.Name, l.Holder); err != nil {
				return err
			}
			leaders++
		}
		rs, err := tx.ListReplicas()
		if err != nil {
			return err
		}
		for _, r := range rs {
			if err := tx.DeleteReplica(r.ID); err != nil {
				return err
			}
			replicas++
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("free what the previous server left in the store: %w", err)
	}
	return leaders, replicas, nil
}
