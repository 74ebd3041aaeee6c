package redis

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
	admin(t)
	c, err := New(mayfly.Target{
		Name:           "redis-test",
		Kind:           mayfly.KindRedis,
		Address:        testenv.RedisAddr(),
		Grants:         map[string]mayfly.Grant{"read": testGrant()},
		InstanceKeyEnv: "MAYFLY_TEST_INSTANCE_KEY",
	}, func(string) string { return secret })
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// createUserByHand creates an ACL user the way an admin would, outside
// Mayfly, and deletes it when the test ends.
func createUserByHand(t *testing.T, name string) {
	t.Helper()
	rdb := admin(t)
	if err := rdb.Do(context.Background(), "ACL", "SETUSER", name, "on", ">by-hand-password", "~app:*", "+@read").Err(); err != nil {
		t.Fatalf("ACL SETUSER %s: %v", name, err)
	}
	t.Cleanup(func() { admin(t).Do(context.Background(), "ACL", "DELUSER", name) })
}
