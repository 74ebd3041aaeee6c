package postgres_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/connectortest"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// Objects the tests create as the admin.
const (
	testSchema  = "mayfly_pgt"
	testTable   = testSchema + ".t"
	otherDB     = "mayfly_pgt_other"
	ownerSchema = "mayfly_pgt_own"
)

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// randHex returns n random bytes in hex.
func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// admin connects to the test server as the admin, to database db ("" for
// the DSN's), or stops the test when the server is missing.
func admin(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(testenv.PostgresDSN())
	if err != nil {
		t.Fatalf("parse MAYFLY_TEST_PG_DSN: %v", err)
	}
	if db != "" {
		cfg.Database = db
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// exec runs admin statements, failing the test on error.
func exec(t testing.TB, conn *pgx.Conn, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := conn.Exec(ctxT(t), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// setupSchema creates the admin's test table that grants read.
func setupSchema(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	var n int
	if err := conn.QueryRow(ctxT(t), "SELECT count(*) FROM pg_namespace WHERE nspname = $1", testSchema).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		exec(t, conn, "CREATE SCHEMA IF NOT EXISTS "+testSchema)
	}
	exec(t, conn, "CREATE TABLE IF NOT EXISTS "+testTable+" (x int)")
}

// testPrefix returns a prefix unique to this run.
func testPrefix() string {
	return "mf_pgt_" + randHex(3) + "_"
}

// newConnector returns a connector for the test server under prefix.
func newConnector(t testing.TB, prefix string) *postgres.Connector {
	t.Helper()
	admin(t, "") // skips when the server is missing
	c, err := postgres.New(mayfly.Target{
		Name:   "pgtest",
		Kind:   mayfly.KindPostgres,
		Prefix: prefix,
		DSN:    testenv.PostgresDSN(),
		Grants: map[string]mayfly.Grant{"read": readGrant},
	}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var readGrant = mayfly.Grant{Name: "read", Roles: []string{"pg_read_all_data"}}

// session is a login with an issued credential.
type session struct{ conn *pgx.Conn }

func (s *session) Allowed(ctx context.Context) error {
	var n int
	return s.conn.QueryRow(ctx, "SELECT count(*) FROM "+testTable).Scan(&n)
}

func (s *session) Forbidden(ctx context.Context) error {
	_, err := s.conn.Exec(ctx, "INSERT INTO "+testTable+" VALUES (1)")
	return err
}

func (s *session) Ping(ctx context.Context) error {
	_, err := s.conn.Exec(ctx, "SELECT 1")
	return err
}

func (s *session) Close() error { return s.conn.Close(context.Background()) }

// connect logs in with cred over TCP, so the server checks the password.
func connect(ctx context.Context, cred mayfly.Credential) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port = cred.Host, uint16(cred.Port)
	cfg.User, cfg.Password, cfg.Database = cred.Username, cred.Password, cred.Database
	cfg.Fallbacks = nil
	return pgx.ConnectConfig(ctx, cfg)
}

func login(ctx context.Context, cred mayfly.Credential) (connectortest.Session, error) {
	conn, err := connect(ctx, cred)
	if err != nil {
		return nil, err
	}
	return &session{conn}, nil
}

// TestPasswordsAreChecked makes sure the server refuses a wrong password
// over loopback TCP; otherwise every password test below proves nothing.
func TestPasswordsAreChecked(t *testing.T) {
	conn := admin(t, "")
	name := "mf_pgt_guard_" + randHex(4)
	exec(t, conn, "CREATE ROLE "+name+" LOGIN PASSWORD 'right-password'")
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+name) })
	cred := mayfly.Credential{Username: name, Password: "wrong-password", Host: "127.0.0.1", Port: 5432, Database: "postgres"}
	if c, err := connect(ctxT(t), cred); err == nil {
		c.Close(context.Background())
		t.Fatalf("PostgreSQL trusts passwords on 127.0.0.1; run scripts/services.sh")
	}
	cred.Password = "right-password"
	c, err := connect(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login with the right password: %v", err)
	}
	c.Close(context.Background())
}

func TestConformance(t *testing.T) {
	setupSchema(t, admin(t, ""))
	prefix := testPrefix()
	c := newMarkedConnector(t, prefix, "this installation's key")
	pwned := prefix + "pwned"
	// A role whose name is the escalation attempt of a hostile grant
	// below: quoted, the grant joins this harmless role, never
	// pg_write_all_data, and GrantHolds checks the memberships.
	bait := `mayfly_pgt_read" IN ROLE "pg_write_all_data`
	conn := admin(t, "")
	exec(t, conn, "DROP ROLE IF EXISTS "+pgIdent(bait), "CREATE ROLE "+pgIdent(bait)+" NOLOGIN")
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgIdent(bait)) })
	connectortest.Run(t, connectortest.Harness{
		Connector:    c,
		Marks:        true,
		Other:        newMarkedConnector(t, prefix, "another installation's key"),
		CreateByHand: createRoleByHand,
		GrantHolds:   holdsOnlyRead(t, bait),
		Prefix:       prefix,
		MaxNameLen:   postgres.MaxNameLen,
		Grant:        readGrant,
		Login:        login,
		Tamper: func(cred mayfly.Credential) mayfly.Credential {
			cred.Password = postgres.GeneratePassword()
			return cred
		},
		HostileGrants: []mayfly.Grant{
			{Roles: []string{`pg_read_all_data"; CREATE ROLE ` + pwned + ` LOGIN; --`}},
			{Roles: []string{bait}},
			{Roles: []string{`a'b`}},
			{Roles: []string{`a\'; CREATE ROLE ` + pwned + `; --`}},
			{Roles: []string{"pg_read_all_data\x00; CREATE ROLE " + pwned}},
			{Roles: []string{""}},
			{Roles: []string{"pg_read_all_data"}, ACL: "+@all"},
			{Roles: []string{"pg_read_all_data"}, Principals: []string{"root"}},
			{},
		},
		TerminatesSessions: true,
		ReportsActivity:    true,
		Concurrency:        30,
	})
}

func TestNew(t *testing.T) {
	const secret = "s3cret-admin-pw"
	dsn := "postgres://admin:" + secret + "@db.example:6543/app?sslmode=disable"
	getenv := func(k string) string {
		if k == "PG_DSN" {
			return dsn
		}
		return ""
	}
	ok := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, DSN: dsn, Grants: map[string]mayfly.Grant{"read": readGrant}}
	tests := []struct {
		name   string
		modify func(t *mayfly.Target)
		ok     bool
	}{
		{"valid", func(t *mayfly.Target) {}, true},
		{"dsn from env", func(t *mayfly.Target) { t.DSN, t.DSNEnv = "", "PG_DSN" }, true},
		{"statements only", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"w": {Statements: []string{"GRANT SELECT ON t TO {{name}}"}}}
		}, true},
		{"wrong kind", func(t *mayfly.Target) { t.Kind = mayfly.KindMySQL }, false},
		{"both dsn and env", func(t *mayfly.Target) { t.DSNEnv = "PG_DSN" }, false},
		{"no dsn", func(t *mayfly.Target) { t.DSN = "" }, false},
		{"empty env", func(t *mayfly.Target) { t.DSN, t.DSNEnv = "", "UNSET" }, false},
		{"bad dsn", func(t *mayfly.Target) { t.DSN = "postgres://admin:" + secret + "@db.example:notaport/app" }, false},
		{"acl", func(t *mayfly.Target) { t.Grants = map[string]mayfly.Grant{"g": {Roles: []string{"r"}, ACL: "+@all"}} }, false},
		{"principals", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"g": {Roles: []string{"r"}, Principals: []string{"root"}}}
		}, false},
		{"params", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"g": {Roles: []string{"r"}, Params: map[string]string{"a": "b"}}}
		}, false},
		{"empty grant", func(t *mayfly.Target) { t.Grants = map[string]mayfly.Grant{"g": {}} }, false},
		{"empty role", func(t *mayfly.Target) { t.Grants = map[string]mayfly.Grant{"g": {Roles: []string{""}}} }, false},
		{"nul role", func(t *mayfly.Target) { t.Grants = map[string]mayfly.Grant{"g": {Roles: []string{"a\x00b"}}} }, false},
		{"unknown placeholder", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"g": {Statements: []string{"GRANT x TO {{user}}"}}}
		}, false},
		{"statement that commits", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"g": {Statements: []string{"GRANT x TO {{name}}", "COMMIT"}}}
		}, false},
		{"statement that begins, behind a comment", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"g": {Statements: []string{"/* a /* nested */ comment */ -- and a line\n  begin"}}}
		}, false},
		{"statement that rolls back", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"g": {Statements: []string{"rollback to savepoint x"}}}
		}, false},
		{"statement mentioning commit", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"g": {Statements: []string{"COMMENT ON ROLE {{name}} IS 'commit'"}}}
		}, true},
		{"address", func(t *mayfly.Target) { t.Address = "127.0.0.1:6379" }, false},
		{"admin password", func(t *mayfly.Target) { t.AdminPassword = "x" }, false},
		{"negative limit", func(t *mayfly.Target) { t.ConnectionLimit = -1 }, false},
		{"negative iterations", func(t *mayfly.Target) { t.SCRAMIterations = -1 }, false},
		{"bad prefix", func(t *mayfly.Target) { t.Prefix = "Mf-" }, false},
		{"reserved prefix", func(t *mayfly.Target) { t.Prefix = "pg_x_" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt := ok
			tt.modify(&tgt)
			c, err := postgres.New(tgt, getenv)
			if c != nil {
				c.Close()
			}
			if got, want := err == nil, tt.ok; got != want {
				t.Fatalf("New() error = %v; want ok=%v", err, want)
			}
			if err != nil {
				if got, want := mayfly.ErrorCode(err), mayfly.EINVALID; got != want {
					t.Errorf("New() error code = %q; want %q", got, want)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("New() error %q contains the DSN's password", err)
				}
			}
		})
	}
}

func TestProvisionRejectsNames(t *testing.T) {
	prefix := testPrefix()
	c := newConnector(t, prefix)
	for _, name := range []string{
		"", prefix + "A", prefix + "a-b", prefix + "a\x00b", prefix + strings.Repeat("x", 64-len(prefix)),
		"mf_other_x", "postgres",
	} {
		_, err := c.Provision(ctxT(t), mayfly.ProvisionRequest{LeaseID: "lse_x", Username: name, Grant: readGrant, ExpiresAt: time.Now().Add(time.Minute)})
		if got, want := mayfly.ErrorCode(err), mayfly.EINVALID; got != want {
			t.Errorf("Provision(%q) error = %v (code %q); want code %q", name, err, got, want)
		}
		if err := c.Revoke(ctxT(t), mayfly.RevokeRequest{Username: name}); mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Errorf("Revoke(%q) = %v; want an %q error", name, err, mayfly.EINVALID)
		}
	}
}

func TestProvisionConflict(t *testing.T) {
	conn := admin(t, "")
	prefix := testPrefix()
	c := newConnector(t, prefix)
	name := prefix + "standing"
	exec(t, conn, "CREATE ROLE "+name+" LOGIN PASSWORD 'keep-me'")
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+name) })
	_, err := c.Provision(ctxT(t), mayfly.ProvisionRequest{LeaseID: "lse_a", Username: name, Grant: readGrant, ExpiresAt: time.Now().Add(time.Minute)})
	if got, want := mayfly.ErrorCode(err), mayfly.ECONFLICT; got != want {
		t.Fatalf("Provision over a role Mayfly did not create = %v (code %q); want code %q", err, got, want)
	}
	if _, err := connect(ctxT(t), mayfly.Credential{Username: name, Password: "keep-me", Host: "127.0.0.1", Port: 5432, Database: "postgres"}); err != nil {
		t.Errorf("the existing role's password changed: %v", err)
	}

	// Another lease's role is not taken over either.
	other := prefix + "other"
	provisionT(t, c, other, "lse_1", readGrant, time.Now().Add(time.Minute))
	_, err = c.Provision(ctxT(t), mayfly.ProvisionRequest{LeaseID: "lse_2", Username: other, Grant: readGrant, ExpiresAt: time.Now().Add(time.Minute)})
	if got, want := mayfly.ErrorCode(err), mayfly.ECONFLICT; got != want {
		t.Errorf("Provision for another lease = %v (code %q); want code %q", err, got, want)
	}
}

func TestProvisionFailureLeavesNothing(t *testing.T) {
	prefix := testPrefix()
	c := newConnector(t, prefix)
	name := prefix + "bad"
	g := mayfly.Grant{Roles: []string{"pg_read_all_data"}, Statements: []string{"GRANT SELECT ON mayfly_pgt_missing.t TO {{name}}"}}
	if _, err := c.Provision(ctxT(t), mayfly.ProvisionRequest{LeaseID: "lse_b", Username: name, Grant: g, ExpiresAt: time.Now().Add(time.Minute)}); err == nil {
		c.Revoke(ctxT(t), mayfly.RevokeRequest{Username: name})
		t.Fatalf("Provision with a failing statement succeeded")
	}
	if got := names(t, c, prefix); len(got) != 0 {
		t.Errorf("after a failed provision Accounts() = %v; want none", got)
	}
	_, err := c.Provision(ctxT(t), mayfly.ProvisionRequest{LeaseID: "lse_b", Username: name, Grant: mayfly.Grant{Roles: []string{"mayfly_pgt_no_such_role"}}, ExpiresAt: time.Now().Add(time.Minute)})
	if got, want := mayfly.ErrorCode(err), mayfly.EINVALID; got != want {
		t.Errorf("Provision with a missing grant role = %v (code %q); want code %q", err, got, want)
	}
}

func TestStatementsExpandName(t *testing.T) {
	conn := admin(t, "")
	setupSchema(t, conn)
	prefix := testPrefix()
	c := newConnector(t, prefix)
	name := prefix + "stmt"
	g := mayfly.Grant{Statements: []string{
		"GRANT USAGE ON SCHEMA " + testSchema + " TO {{name}}",
		"GRANT SELECT ON " + testTable + " TO {{name}}",
	}}
	cred := provisionT(t, c, name, "lse_s", g, time.Now().Add(time.Minute))
	s, err := login(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer s.Close()
	if err := s.Allowed(ctxT(t)); err != nil {
		t.Errorf("SELECT granted by a statement was refused: %v", err)
	}
	if err := s.Forbidden(ctxT(t)); err == nil {
		t.Errorf("INSERT not granted by any statement succeeded")
	}
}

func provisionT(t *testing.T, c *postgres.Connector, name, lease string, g mayfly.Grant, exp time.Time) mayfly.Credential {
	t.Helper()
	res, err := c.Provision(ctxT(t), mayfly.ProvisionRequest{LeaseID: lease, Username: name, Grant: g, ExpiresAt: exp})
	if err != nil {
		t.Fatalf("Provision(%q) = %v", name, err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{LeaseID: lease, Username: name}) })
	return res.Credential
}

func names(t *testing.T, c *postgres.Connector, prefix string) []string {
	t.Helper()
	accts, err := c.Accounts(ctxT(t), mayfly.AccountsRequest{Prefix: prefix})
	if err != nil {
		t.Fatalf("Accounts(%q) = %v", prefix, err)
	}
	var out []string
	for _, a := range accts {
		out = append(out, a.Name)
	}
	return out
}

// TestValidUntil checks that the server itself refuses the credential after
// the lease's expiry, without any revocation.
func TestValidUntil(t *testing.T) {
	setupSchema(t, admin(t, ""))
	prefix := testPrefix()
	c := newConnector(t, prefix)
	// VALID UNTIL has whole seconds; start at the beginning of a second.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	cred := provisionT(t, c, prefix+"exp", "lse_exp", readGrant, time.Now().Add(2*time.Second))
	s, err := login(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login before expiry: %v", err)
	}
	s.Close()
	time.Sleep(3 * time.Second)
	if s, err := login(ctxT(t), cred); err == nil {
		s.Close()
		t.Fatalf("login 3s after a 2s expiry succeeded; want refusal by VALID UNTIL")
	}
}

// TestRevokeOwnedObjects revokes a role that owns tables in the lease's
// database and in another one, with a session open.
func TestRevokeOwnedObjects(t *testing.T) {
	conn, other := setupOtherDB(t)
	setupSchema(t, conn)
	var n int
	prefix := testPrefix()
	c := newConnector(t, prefix)
	name := prefix + "owner"
	table := "t_" + randHex(4)
	g := mayfly.Grant{Roles: []string{"pg_read_all_data"}, Statements: []string{"GRANT USAGE, CREATE ON SCHEMA " + ownerSchema + " TO {{name}}"}}
	cred := provisionT(t, c, name, "lse_own", g, time.Now().Add(time.Minute))
	exec(t, other, "GRANT USAGE, CREATE ON SCHEMA "+ownerSchema+" TO "+name)
	t.Cleanup(func() {
		for _, cn := range []*pgx.Conn{conn, other} {
			cn.Exec(context.Background(), "DROP TABLE IF EXISTS "+ownerSchema+"."+table)
		}
	})

	otherCred := cred
	otherCred.Database = otherDB
	o, err := connect(ctxT(t), otherCred)
	if err != nil {
		t.Fatalf("login to %s: %v", otherDB, err)
	}
	exec(t, o, "CREATE TABLE "+ownerSchema+"."+table+" (x int)")
	o.Close(context.Background())
	s, err := connect(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer s.Close(context.Background())
	exec(t, s, "CREATE TABLE "+ownerSchema+"."+table+" (x int)")

	if err := c.Revoke(ctxT(t), mayfly.RevokeRequest{LeaseID: "lse_own", Username: name}); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	sessionEnds(t, s)
	if err := conn.QueryRow(ctxT(t), "SELECT count(*) FROM pg_roles WHERE rolname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("role %s is still in pg_roles after Revoke", name)
	}
	for db, cn := range map[string]*pgx.Conn{"postgres": conn, otherDB: other} {
		var owner string
		err := cn.QueryRow(ctxT(t), "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = to_regclass($1)", ownerSchema+"."+table).Scan(&owner)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			// dropped: fine
		case err != nil:
			t.Errorf("%s: owner of %s: %v", db, table, err)
		case owner != "postgres":
			t.Errorf("%s: table %s is owned by %q after Revoke; want the admin", db, table, owner)
		}
	}
}

// sessionEnds fails the test unless session s of a revoked role stops
// working within 5 s.
func sessionEnds(t *testing.T, s *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Ping(ctxT(t)) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("a revoked role's session still works")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setupOtherDB creates the scratch database and the schema roles may be
// allowed to create tables in, in both databases; it returns admin
// connections to the DSN's database and to the scratch one.
func setupOtherDB(t *testing.T) (*pgx.Conn, *pgx.Conn) {
	t.Helper()
	conn := admin(t, "")
	var n int
	if err := conn.QueryRow(ctxT(t), "SELECT count(*) FROM pg_database WHERE datname = $1", otherDB).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		if _, err := conn.Exec(ctxT(t), "CREATE DATABASE "+otherDB); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("create database: %v", err)
		}
	}
	other := admin(t, otherDB)
	for _, cn := range []*pgx.Conn{conn, other} {
		if err := cn.QueryRow(ctxT(t), "SELECT count(*) FROM pg_namespace WHERE nspname = $1", ownerSchema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			exec(t, cn, "CREATE SCHEMA IF NOT EXISTS "+ownerSchema)
		}
	}
	return conn, other
}

// TestGrantDatabase checks that a grant's statements run in the grant's
// database and that the credential names it.
func TestGrantDatabase(t *testing.T) {
	_, other := setupOtherDB(t)
	prefix := testPrefix()
	c := newConnector(t, prefix)
	name := prefix + "gdb"
	table := ownerSchema + ".t_" + randHex(4)
	g := mayfly.Grant{Database: otherDB, Statements: []string{"GRANT USAGE, CREATE ON SCHEMA " + ownerSchema + " TO {{name}}"}}
	cred := provisionT(t, c, name, "lse_gdb", g, time.Now().Add(time.Minute))
	t.Cleanup(func() { other.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	if got, want := cred.Database, otherDB; got != want {
		t.Errorf("Credential.Database = %q; want %q", got, want)
	}
	s, err := connect(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer s.Close(context.Background())
	if _, err := s.Exec(ctxT(t), "CREATE TABLE "+table+" (x int)"); err != nil {
		t.Fatalf("CREATE TABLE allowed by the grant's statement in %s: %v", otherDB, err)
	}
	if err := c.Revoke(ctxT(t), mayfly.RevokeRequest{LeaseID: "lse_gdb", Username: name}); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	var owner string
	if err := other.QueryRow(ctxT(t), "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = to_regclass($1)", table).Scan(&owner); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	if owner != "" && owner != "postgres" {
		t.Errorf("table %s is owned by %q after Revoke; want the admin", table, owner)
	}
}

func TestAccounts(t *testing.T) {
	conn := admin(t, "")
	prefix := testPrefix()
	c := newConnector(t, prefix)
	// "_" and "%" are LIKE wildcards; the prefix must match literally.
	lookalike := strings.TrimSuffix(prefix, "_") + "x" + "look"
	exec(t, conn, "CREATE ROLE "+lookalike+" CREATEDB")
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+lookalike) })
	name := prefix + "acct"
	provisionT(t, c, name, "lse_acct", readGrant, time.Now().Add(time.Minute))

	accts, err := c.Accounts(ctxT(t), mayfly.AccountsRequest{Prefix: prefix})
	if err != nil {
		t.Fatalf("Accounts: %v", err)
	}
	if got, want := len(accts), 1; got != want {
		t.Fatalf("Accounts(%q) = %+v; want %d account", prefix, accts, want)
	}
	a := accts[0]
	if a.Name != name || !a.CanLogin || a.Superuser || a.Sessions != 0 || !a.LastActivity.IsZero() {
		t.Errorf("Accounts(%q)[0] = %+v; want %s, can login, not superuser, no activity", prefix, a, name)
	}
	if got, want := a.Privileges, []string{"pg_read_all_data"}; !slices.Equal(got, want) {
		t.Errorf("Privileges = %q; want %q", got, want)
	}

	all, err := c.Accounts(ctxT(t), mayfly.AccountsRequest{})
	if err != nil {
		t.Fatalf("Accounts(\"\"): %v", err)
	}
	byName := map[string]mayfly.Account{}
	for _, a := range all {
		byName[a.Name] = a
	}
	if a, ok := byName["postgres"]; !ok || !a.Superuser || a.Sessions < 1 || a.LastActivity.IsZero() {
		t.Errorf("Accounts(\"\") lists postgres as %+v (present %v); want a superuser with sessions", a, ok)
	}
	if a := byName[lookalike]; a.CanLogin || !slices.Contains(a.Privileges, "createdb") {
		t.Errorf("Accounts(\"\") lists %s as %+v; want no login, createdb", lookalike, a)
	}
	if _, ok := byName[name]; !ok {
		t.Errorf("Accounts(\"\") lacks %s", name)
	}
}

func TestCheck(t *testing.T) {
	c := newConnector(t, testPrefix())
	if err := c.Check(ctxT(t)); err != nil {
		t.Errorf("Check() = %v; want nil", err)
	}
	const secret = "s3cret-admin-pw"
	down, err := postgres.New(mayfly.Target{
		Name: "down", Kind: mayfly.KindPostgres,
		DSN:    "postgres://postgres:" + secret + "@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2",
		Grants: map[string]mayfly.Grant{"read": readGrant},
	}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer down.Close()
	err = down.Check(ctxT(t))
	if got, want := mayfly.ErrorCode(err), mayfly.EUNAVAILABLE; got != want {
		t.Fatalf("Check() on a closed port = %v (code %q); want code %q", err, got, want)
	}
	if msg := err.Error(); strings.Contains(msg, secret) || !strings.Contains(msg, `"down"`) {
		t.Errorf("Check() = %q; want the target's name and no password", msg)
	}
}

// TestSCRAMVerifierKnownAnswer checks the verifier against the exchange
// published in RFC 7677, section 3: the client proof and server signature
// there must follow from StoredKey and ServerKey.
func TestSCRAMVerifierKnownAnswer(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v := postgres.SCRAMVerifier("pencil", salt, 4096)
	var iter int
	var saltB64, stored64, server64 string
	parts := strings.FieldsFunc(v, func(r rune) bool { return r == '$' || r == ':' })
	if len(parts) != 5 || parts[0] != "SCRAM-SHA-256" {
		t.Fatalf("SCRAMVerifier = %q; want SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>", v)
	}
	fmt.Sscan(parts[1], &iter)
	saltB64, stored64, server64 = parts[2], parts[3], parts[4]
	if iter != 4096 || saltB64 != "W22ZaJ0SNY7soEsUEjb6gQ==" {
		t.Fatalf("SCRAMVerifier = %q; want iterations 4096 and the salt", v)
	}
	storedKey, _ := base64.StdEncoding.DecodeString(stored64)
	serverKey, _ := base64.StdEncoding.DecodeString(server64)
	const nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	authMessage := "n=user,r=rOprNGfwEbeRWgbNEkqO," +
		"r=" + nonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096," +
		"c=biws,r=" + nonce
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	if got, want := base64.StdEncoding.EncodeToString(mac(serverKey, authMessage)), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="; got != want {
		t.Errorf("ServerSignature = %s; want %s (RFC 7677)", got, want)
	}
	proof, _ := base64.StdEncoding.DecodeString("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
	clientSig := mac(storedKey, authMessage)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ clientSig[i]
	}
	if got := sha256.Sum256(clientKey); !hmac.Equal(got[:], storedKey) {
		t.Errorf("StoredKey %s does not verify the RFC 7677 client proof", stored64)
	}
}

// TestSCRAMVerifierServer checks that PostgreSQL accepts the password
// behind a verifier computed here, at 1 and 4096 iterations, and refuses
// another one.
func TestSCRAMVerifierServer(t *testing.T) {
	conn := admin(t, "")
	for _, iter := range []int{1, 4096} {
		t.Run(fmt.Sprint(iter), func(t *testing.T) {
			name := "mf_pgt_scram_" + randHex(4)
			password := postgres.GeneratePassword()
			salt := make([]byte, 16)
			rand.Read(salt)
			exec(t, conn, "CREATE ROLE "+name+" LOGIN PASSWORD '"+postgres.SCRAMVerifier(password, salt, iter)+"'")
			t.Cleanup(func() { conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+name) })
			cred := mayfly.Credential{Username: name, Password: password, Host: "127.0.0.1", Port: 5432, Database: "postgres"}
			s, err := connect(ctxT(t), cred)
			if err != nil {
				t.Fatalf("login with the password of a %d-iteration verifier: %v", iter, err)
			}
			s.Close(context.Background())
			cred.Password = postgres.GeneratePassword()
			if s, err := connect(ctxT(t), cred); err == nil {
				s.Close(context.Background())
				t.Errorf("login with another password succeeded")
			}
		})
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		p := postgres.GeneratePassword()
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil || len(b) < 32 {
			t.Fatalf("GeneratePassword() = %q: %d bytes, %v; want 32+ bytes of URL-safe base64", p, len(b), err)
		}
		if seen[p] {
			t.Fatalf("GeneratePassword() repeated %q", p)
		}
		seen[p] = true
	}
}

// TestRevokeBatch revokes a batch that cannot go in one DROP ROLE: among
// plain roles, one owns a table (the batch is split until that role is
// revoked on its own), one has a live session, one is already gone, one is
// listed twice and one is not a managed name. Each request gets its own
// outcome, and every managed role is gone, its session ended, its table
// handed to the admin.
func TestRevokeBatch(t *testing.T) {
	conn, _ := setupOtherDB(t)
	setupSchema(t, conn)
	prefix := testPrefix()
	c := newConnector(t, prefix)
	exp := time.Now().Add(time.Minute)
	var reqs []mayfly.RevokeRequest
	var all []string
	for i := range 20 {
		name := fmt.Sprintf("%sb%02d", prefix, i)
		provisionT(t, c, name, "lse_"+name, readGrant, exp)
		reqs = append(reqs, mayfly.RevokeRequest{LeaseID: "lse_" + name, Username: name})
		all = append(all, name)
	}
	owner := prefix + "bowner"
	table := ownerSchema + ".t_" + randHex(4)
	ownerCred := provisionT(t, c, owner, "lse_bo", mayfly.Grant{Roles: []string{"pg_read_all_data"},
		Statements: []string{"GRANT USAGE, CREATE ON SCHEMA " + ownerSchema + " TO {{name}}"}}, exp)
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	o, err := connect(ctxT(t), ownerCred)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, o, "CREATE TABLE "+table+" (x int)")
	o.Close(context.Background())
	s, err := connect(ctxT(t), provisionT(t, c, prefix+"bsession", "lse_bs", readGrant, exp))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	// The owner in the middle, so that both halves of the first split are
	// tried as batches.
	reqs = slices.Insert(reqs, 7, mayfly.RevokeRequest{LeaseID: "lse_bo", Username: owner})
	reqs = append(reqs,
		mayfly.RevokeRequest{LeaseID: "lse_bs", Username: prefix + "bsession"},
		mayfly.RevokeRequest{LeaseID: "lse_gone", Username: prefix + "bnever"},
		mayfly.RevokeRequest{LeaseID: "lse_b03", Username: all[3]},
		mayfly.RevokeRequest{LeaseID: "lse_x", Username: "not_managed"},
	)
	all = append(all, owner, prefix+"bsession")

	errs := c.RevokeBatch(ctxT(t), reqs)
	for i, err := range errs {
		if reqs[i].Username == "not_managed" {
			if mayfly.ErrorCode(err) != mayfly.EINVALID {
				t.Errorf("RevokeBatch of an unmanaged name = %v; want %q", err, mayfly.EINVALID)
			}
			continue
		}
		if err != nil {
			t.Errorf("RevokeBatch of %s = %v", reqs[i].Username, err)
		}
	}
	var left []string
	if err := conn.QueryRow(ctxT(t), "SELECT coalesce(array_agg(rolname::text), '{}') FROM pg_roles WHERE rolname = ANY($1)", all).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("roles left after RevokeBatch: %v", left)
	}
	sessionEnds(t, s)
	var tableOwner string
	if err := conn.QueryRow(ctxT(t), "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = to_regclass($1)", table).Scan(&tableOwner); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	} else if err == nil && tableOwner != "postgres" {
		t.Errorf("table %s owned by %q after RevokeBatch; want the admin", table, tableOwner)
	}
}
