package mysql

import (
	"context"
	"testing"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// newMarkedConnector returns a connector for the test server whose
// installation key is secret.
func newMarkedConnector(t *testing.T, secret string) *Connector {
	t.Helper()
	adminDB(t)
	tg := mayfly.Target{Name: "mysql-test", Kind: mayfly.KindMySQL, DSN: testenv.MySQLDSN(), Grants: map[string]mayfly.Grant{"readonly": testGrant()},
		InstanceKeyEnv: "MAYFLY_TEST_INSTANCE_KEY"}
	c, err := New(tg, func(string) string { return secret })
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// createUserByHand creates a user the way an admin would, outside Mayfly,
// and drops it when the test ends.
func createUserByHand(t *testing.T, name string) {
	t.Helper()
	db := adminDB(t)
	if _, err := db.ExecContext(context.Background(), "CREATE USER "+account(name)+" IDENTIFIED BY 'by-hand-password'"); err != nil {
		t.Fatalf("CREATE USER %s: %v", name, err)
	}
	t.Cleanup(func() { adminDB(t).ExecContext(context.Background(), "DROP USER IF EXISTS "+account(name)) })
}
