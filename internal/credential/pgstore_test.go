package credential

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly/internal/seal"
	"github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
)

// TestPostgresStoreHoldsNoAdminPassword sets and rotates a credential
// with a PostgreSQL store, then reads every row of every table of the
// store as text: no admin password may appear.
func TestPostgresStoreHoldsNoAdminPassword(t *testing.T) {
	ctx := context.Background()
	fx := redisFixture(t)
	dsn := pgtest.NewDatabase(t)
	st, err := postgres.Open(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kr, err := seal.Open(ctx, st, []byte(strings.Repeat("p", seal.KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	m := New(Options{Store: st, Keys: kr, Kinds: testKinds(), Holder: "r1"})
	c, err := m.Connector(ctx, fx.target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := m.Set(ctx, "admin", "", fx.target.Name, fx.cred, true); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rotate(ctx, "admin", "", fx.target.Name); err != nil {
		t.Fatal(err)
	}
	_, now := current(t, ctx, m, fx.target.Name)
	if now == fx.cred {
		t.Fatal("the rotation kept the password")
	}
	raw, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(ctx)
	rows, err := raw.Query(ctx, "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'")
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) == 0 {
		t.Fatalf("tables: %v, %v", tables, err)
	}
	sawSealed := false
	for _, tb := range tables {
		var text string
		if err := raw.QueryRow(ctx, "SELECT coalesce(string_agg(x::text, E'\\n'), '') FROM "+tb+" x").Scan(&text); err != nil {
			t.Fatalf("read %s: %v", tb, err)
		}
		for _, pw := range []string{fx.cred, now} {
			if strings.Contains(text, pw) {
				t.Errorf("table %s holds an admin password in clear", tb)
			}
		}
		sawSealed = sawSealed || strings.Contains(text, "credential/"+fx.target.Name)
	}
	if !sawSealed {
		t.Error("no table holds the sealed credential: the test read the wrong tables")
	}
}

// TestRotateEvery runs the scheduled rotation with a clock past the
// target's rotate_every: it rotates once, then not again until due.
func TestRotateEvery(t *testing.T) {
	ctx := context.Background()
	fx := redisFixture(t)
	fx.target.RotateEvery = time.Hour
	e := newEnv(t)
	m := e.manager("r1", nil)
	c, err := m.Connector(ctx, fx.target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := m.Set(ctx, "admin", "", fx.target.Name, fx.cred, true); err != nil {
		t.Fatal(err)
	}
	// Not due yet: nothing happens.
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	m.RunRotations(rctx, 50*time.Millisecond)
	cancel()
	if rec, _ := current(t, ctx, m, fx.target.Name); !rec.RotatedAt.IsZero() {
		t.Fatal("rotated before rotate_every passed")
	}
	// Due: one rotation.
	m.o.Clock = offsetClock{fx.target.RotateEvery + time.Minute}
	rctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go m.RunRotations(rctx, 50*time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, cur := current(t, ctx, m, fx.target.Name)
		if !rec.RotatedAt.IsZero() {
			if cur == fx.cred {
				t.Fatal("rotated_at set but the password kept")
			}
			if err := fx.login(ctx, fx.cred); err == nil {
				t.Fatal("the password from before the scheduled rotation still logs in")
			}
			if err := fx.login(ctx, cur); err != nil {
				t.Fatalf("the rotated password does not log in: %v", err)
			}
			v := rec.Version
			time.Sleep(300 * time.Millisecond)
			if rec2, _ := current(t, ctx, m, fx.target.Name); rec2.Version != v {
				t.Fatal("rotated again before rotate_every passed since the last rotation")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no scheduled rotation within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	issue(t, ctx, fx, c, "a scheduled rotation")
}
