package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestParseStorePostgres(t *testing.T) {
	c, err := Parse([]byte("listen: 127.0.0.1:1\nstore:\n  postgres: {dsn_env: PG_DSN, max_conns: 4}\n"), "/etc/mayfly/mayfly.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Store.Postgres
	if p == nil || p.DSNEnv != "PG_DSN" || p.MaxConns != 4 || c.Store.SQLite != "" {
		t.Fatalf("store = %+v; want postgres with dsn_env PG_DSN and max_conns 4", c.Store)
	}
	if want := filepath.Join("/etc/mayfly", "mayfly-state"); c.StateDir != want {
		t.Errorf("state_dir = %q; want %q (beside the configuration)", c.StateDir, want)
	}
	dsn, err := p.ResolveDSN(func(k string) string {
		if k == "PG_DSN" {
			return "postgres://m@db/mayfly"
		}
		return ""
	})
	if err != nil || dsn != "postgres://m@db/mayfly" {
		t.Errorf("ResolveDSN = %q, %v; want the environment's DSN", dsn, err)
	}
	if _, err := p.ResolveDSN(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "PG_DSN is not set") {
		t.Errorf("ResolveDSN with the variable unset = %v; want an error naming it", err)
	}
	if !c.Store.Equal(Store{Postgres: &PostgresStore{DSNEnv: "PG_DSN", MaxConns: 4}}) || c.Store.Equal(Store{Postgres: &PostgresStore{DSNEnv: "PG_DSN"}}) {
		t.Errorf("Store.Equal compares the pointer, not the settings")
	}
}

func TestParseStoreErrors(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"listen: x\nstore: {}\n", "f.yaml:2: store: set store.sqlite"},
		{"listen: x\nstore: {sqlite: a.db, postgres: {dsn: postgres://h/d}}\n", "f.yaml:2: store: set one of store.sqlite and store.postgres"},
		{"listen: x\nstore:\n  postgres: {max_conns: 3}\n", "f.yaml:2: store.postgres: dsn or dsn_env is required"},
		{"listen: x\nstore:\n  postgres: {dsn: postgres://h/d, dsn_env: X}\n", "f.yaml:2: store.postgres: set one of dsn and dsn_env"},
		{"listen: x\nstore:\n  postgres: {dsn_env: 'A B'}\n", `f.yaml:2: store.postgres.dsn_env "A B" is not an environment variable name`},
		{"listen: x\nstore:\n  postgres: {dsn: postgres://h/d, max_conns: -1}\n", "f.yaml:2: store.postgres.max_conns must not be negative"},
		{"listen: x\nstore:\n  postgres: {dsn: postgres://h/d, maxconns: 1}\n", `f.yaml:3: unknown key "maxconns" in a postgres store`},
	} {
		_, err := Parse([]byte(tt.yaml), "f.yaml")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v; want an error containing %q", tt.yaml, err, tt.want)
		}
	}
}
