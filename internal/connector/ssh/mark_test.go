package ssh

import (
	"os/exec"
	"testing"

	"github.com/mayflyhq/mayfly"
)

// newMarkedConnector returns a connector whose installation key is secret.
func newMarkedConnector(t *testing.T, target mayfly.Target, ca *CA, stateDir, secret string) *Connector {
	t.Helper()
	target.InstanceKeyEnv = "MAYFLY_TEST_INSTANCE_KEY"
	c, err := New(target, ca, stateDir, func(string) string { return secret })
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// createHostUserByHand creates a local user the way an admin would,
// outside Mayfly, and deletes it when the test ends.
func createHostUserByHand(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("useradd", "--no-create-home", "--comment", "by hand", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
}
