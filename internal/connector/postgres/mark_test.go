package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// newMarkedConnector returns a connector for the test server under prefix
// whose installation key is secret.
func newMarkedConnector(t testing.TB, prefix, secret string) *postgres.Connector {
	t.Helper()
	admin(t, "") // skips when the server is missing
	c, err := postgres.New(mayfly.Target{
		Name:           "pgtest",
		Kind:           mayfly.KindPostgres,
		Prefix:         prefix,
		DSN:            testenv.PostgresDSN(),
		Grants:         map[string]mayfly.Grant{"read": readGrant},
		InstanceKeyEnv: "MAYFLY_TEST_INSTANCE_KEY",
	}, func(string) string { return secret })
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// createRoleByHand creates a login role the way an admin would, outside
// Mayfly, and drops it when the test ends.
func createRoleByHand(t *testing.T, name string) {
	t.Helper()
	conn := admin(t, "")
	exec(t, conn, "CREATE ROLE "+pgIdent(name)+" LOGIN")
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgIdent(name)) })
}

func pgIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// roleMemberships returns the roles name is a member of, directly or not.
func roleMemberships(ctx context.Context, t testing.TB, name string) ([]string, error) {
	conn := admin(t, "")
	rows, err := conn.Query(ctx, `SELECT g.rolname::text FROM pg_catalog.pg_roles g
		WHERE g.rolname <> $1 AND pg_catalog.pg_has_role($1, g.oid, 'MEMBER') ORDER BY 1`, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// holdsOnlyRead checks that name is a member of no role beyond those of
// readGrant (pg_read_all_data) and also, and has no notable attribute.
func holdsOnlyRead(t testing.TB, also ...string) func(ctx context.Context, name string) error {
	return func(ctx context.Context, name string) error {
		roles, err := roleMemberships(ctx, t, name)
		if err != nil {
			return err
		}
		for _, r := range roles {
			if !slices.Contains(readGrant.Roles, r) && !slices.Contains(also, r) {
				return fmt.Errorf("role %s is a member of %s (all: %v); want only %v", name, r, roles, readGrant.Roles)
			}
		}
		var super, createRole, createDB, bypass bool
		if err := admin(t, "").QueryRow(ctx, "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = $1", name).
			Scan(&super, &createRole, &createDB, &bypass); err != nil {
			return err
		}
		if super || createRole || createDB || bypass {
			return fmt.Errorf("role %s has superuser=%v createrole=%v createdb=%v bypassrls=%v; want none", name, super, createRole, createDB, bypass)
		}
		return nil
	}
}

// TestHoldsOnlyReadSeesEscalation makes sure the check the conformance
// suite runs after a hostile grant would see the escalation it guards
// against.
func TestHoldsOnlyReadSeesEscalation(t *testing.T) {
	conn := admin(t, "")
	name := testPrefix() + "esc"
	exec(t, conn, "CREATE ROLE "+pgIdent(name)+" LOGIN IN ROLE pg_read_all_data, pg_write_all_data")
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgIdent(name)) })
	if err := holdsOnlyRead(t)(ctxT(t), name); err == nil {
		t.Fatalf("holdsOnlyRead(%s) = nil for a member of pg_write_all_data; want an error", name)
	}
}
