package credential

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestReplicasFollowRotation runs two managers on one store, as two
// replicas: a rotation on one reaches the other by Sync, whose connector
// then logs in with the new password (its old sessions ended first).
func TestReplicasFollowRotation(t *testing.T) {
	ctx := context.Background()
	fx := pgFixture(t)
	e := newEnv(t)
	m1, m2 := e.manager("r1", nil), e.manager("r2", nil)
	c1, err := m1.Connector(ctx, fx.target)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := m2.Connector(ctx, fx.target)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := m1.Set(ctx, "admin", "", fx.target.Name, fx.cred, true); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Rotate(ctx, "admin", "", fx.target.Name); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	kill := func() {
		t.Helper()
		if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rotadm_' || $1", fx.target.Grants["read"].Roles[0][len("rotread_"):]); err != nil {
			t.Fatal(err)
		}
	}
	kill()
	if err := c2.Check(ctx); err == nil {
		// A pooled connection may have survived; a fresh one must fail.
		kill()
		if err := c2.Check(ctx); err == nil {
			t.Fatal("the second replica still logs in with the old password before it synced")
		}
	}
	if err := m2.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	kill()
	if err := c2.Check(ctx); err != nil {
		t.Fatalf("after Sync the second replica does not log in: %v", err)
	}
	issue(t, ctx, fx, c2, "a rotation on another replica")
}

// TestSetRefusesWithoutSecrets checks that a credential refused by Set
// never appears in the error, and that the errors say what is wrong.
func TestSetRefusesWithoutSecrets(t *testing.T) {
	ctx := context.Background()
	fx := pgFixture(t)
	e := newEnv(t)
	m := e.manager("r1", nil)
	c, err := m.Connector(ctx, fx.target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	noKeys := New(Options{Store: e.st, Kinds: testKinds(), Holder: "x"})
	const secret = "Sup3rSecretValue"
	for _, tc := range []struct{ cred, want string }{
		{"postgres://rotadm_none:" + secret + "@127.0.0.1:5432/postgres?sslmode=disable", "logging in with it failed"},
		{"postgres://u:" + secret + "@127.0.0.1:notaport/x", "not a valid PostgreSQL connection string"},
		{"\n", "empty"},
	} {
		err := m.Set(ctx, "admin", "", fx.target.Name, tc.cred, true)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Set(...) = %v; want an error saying %q", err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("Set error shows the credential: %v", err)
		}
	}
	if err := m.Set(ctx, "admin", "", "nope", fx.cred, true); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Errorf("Set on an unknown target = %v; want not found", err)
	}
	if err := noKeys.Set(ctx, "admin", "", fx.target.Name, fx.cred, true); err == nil || !strings.Contains(err.Error(), "seal.key_file") {
		t.Errorf("Set without a master key = %v; want an error naming seal.key_file", err)
	}
	// A target with neither a configured nor a stored credential.
	bare := fx.target
	bare.Name, bare.DSN = "bare", ""
	bc, err := m.Connector(ctx, bare)
	if err != nil {
		t.Fatalf("Connector without any credential = %v; want one that waits for set-credential", err)
	}
	if err := bc.Check(ctx); err == nil || !strings.Contains(err.Error(), "set-credential bare") {
		t.Errorf("Check of a target without any credential = %v; want an error pointing at set-credential", err)
	}
	if _, err := bc.Provision(ctx, mayfly.ProvisionRequest{Username: "mfr_x"}); err == nil || !strings.Contains(err.Error(), "no admin credential") {
		t.Errorf("Provision on a target without any credential = %v", err)
	}
	if _, err := noKeys.Connector(ctx, bare); err == nil || !strings.Contains(err.Error(), "set-credential bare") {
		t.Errorf("Connector without any credential or key = %v; want an error pointing at set-credential", err)
	}
	// Once stored, the waiting target works.
	if err := m.Set(ctx, "admin", "", "bare", fx.cred, true); err != nil {
		t.Fatal(err)
	}
	if err := bc.Check(ctx); err != nil {
		t.Errorf("after set-credential: Check = %v", err)
	}
	// Rotation needs a stored credential.
	if _, err := m.Rotate(ctx, "admin", "", fx.target.Name); err == nil || !strings.Contains(err.Error(), "set-credential") {
		t.Errorf("Rotate of a configured credential = %v; want an error pointing at set-credential", err)
	}
	// A stored credential and no key: start-up fails clearly.
	if err := m.Set(ctx, "admin", "", fx.target.Name, fx.cred, true); err != nil {
		t.Fatal(err)
	}
	if _, err := noKeys.Connector(ctx, fx.target); err == nil || !strings.Contains(err.Error(), "no master key is configured") {
		t.Errorf("Connector with a sealed credential and no key = %v", err)
	}
}
