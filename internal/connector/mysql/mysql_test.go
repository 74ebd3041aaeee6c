package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/connectortest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

const testSchema = "mayfly_myt"

// adminDB connects to the test server as admin and prepares the test schema
// with one table.
func adminDB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", testenv.MySQLDSN())
	if err != nil {
		t.Fatalf("open admin connection: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		testenv.Unavailable(t, "MySQL/MariaDB", err)
	}
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS " + testSchema,
		"CREATE TABLE IF NOT EXISTS " + testSchema + ".t (id INT)",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return db
}

func testPrefix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "mf_myt_" + hex.EncodeToString(b) + "_"
}

func testGrant() mayfly.Grant {
	return mayfly.Grant{
		Name:       "readonly",
		Statements: []string{"GRANT SELECT ON " + testSchema + ".* TO {{name}}"},
		Database:   testSchema,
	}
}

func newTestConnector(t *testing.T, mod func(*mayfly.Target)) *Connector {
	t.Helper()
	tg := mayfly.Target{
		Name:   "mysql-test",
		Kind:   mayfly.KindMySQL,
		DSN:    testenv.MySQLDSN(),
		Grants: map[string]mayfly.Grant{"readonly": testGrant()},
	}
	if mod != nil {
		mod(&tg)
	}
	c, err := New(tg, func(string) string { return "" })
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type session struct {
	db   *sql.DB
	conn *sql.Conn
}

func (s *session) Allowed(ctx context.Context) error {
	rows, err := s.conn.QueryContext(ctx, "SELECT id FROM "+testSchema+".t")
	if err != nil {
		return err
	}
	return rows.Close()
}

func (s *session) Forbidden(ctx context.Context) error {
	if _, err := s.conn.ExecContext(ctx, "INSERT INTO "+testSchema+".t VALUES (1)"); err == nil {
		return nil
	}
	_, err := s.conn.ExecContext(ctx, "DROP TABLE "+testSchema+".t")
	return err
}

func (s *session) Ping(ctx context.Context) error { return s.conn.PingContext(ctx) }

func (s *session) Close() error {
	s.conn.Close()
	return s.db.Close()
}

func login(ctx context.Context, cred mayfly.Credential) (connectortest.Session, error) {
	cfg := mysql.NewConfig()
	cfg.User = cred.Username
	cfg.Passwd = cred.Password
	cfg.Net = "tcp"
	cfg.Addr = net.JoinHostPort(cred.Host, strconv.Itoa(cred.Port))
	cfg.Timeout = 5 * time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	c, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := c.PingContext(ctx); err != nil {
		c.Close()
		db.Close()
		return nil, err
	}
	return &session{db: db, conn: c}, nil
}

func TestConformance(t *testing.T) {
	adminDB(t)
	c := newMarkedConnector(t, "this installation's key")
	prefix := testPrefix()
	connectortest.Run(t, connectortest.Harness{
		Connector:    c,
		Marks:        true,
		Other:        newMarkedConnector(t, "another installation's key"),
		CreateByHand: createUserByHand,
		Prefix:       prefix,
		MaxNameLen:   MaxNameLen,
		Grant:        testGrant(),
		Login:        login,
		Tamper: func(cred mayfly.Credential) mayfly.Credential {
			cred.Password = "wrong" + cred.Password
			return cred
		},
		HostileGrants: []mayfly.Grant{
			// A second statement in one call is refused by the server.
			{Statements: []string{"GRANT SELECT ON " + testSchema + ".* TO {{name}}; CREATE USER '" + prefix + "pwned'@'%'"}},
			// Unknown placeholders and fields of other kinds are refused.
			{Statements: []string{"CREATE USER {{user}}"}},
			{Statements: []string{"GRANT SELECT ON " + testSchema + ".* TO {{name}}"}, ACL: "+@all"},
			{Statements: []string{"GRANT SELECT ON " + testSchema + ".* TO {{name}}"}, Database: "x\ny"},
		},
		TerminatesSessions: true,
		ReportsActivity:    true,
	})
}

func TestNewValidation(t *testing.T) {
	env := map[string]string{"MYSQL_DSN": "root@tcp(127.0.0.1:3306)/"}
	getenv := func(k string) string { return env[k] }
	base := func() mayfly.Target {
		return mayfly.Target{Name: "db", Kind: mayfly.KindMySQL, DSN: "root:secretpw@tcp(db.internal:3307)/", Grants: map[string]mayfly.Grant{"ro": testGrant()}}
	}
	tests := []struct {
		name string
		mod  func(*mayfly.Target)
		want string // substring of the error; "" for success
	}{
		{"ok", func(*mayfly.Target) {}, ""},
		{"dsn env", func(t *mayfly.Target) { t.DSN, t.DSNEnv = "", "MYSQL_DSN" }, ""},
		{"no dsn", func(t *mayfly.Target) { t.DSN = "" }, "dsn or dsn_env is required"},
		{"both", func(t *mayfly.Target) { t.DSNEnv = "MYSQL_DSN" }, "not both"},
		{"empty env", func(t *mayfly.Target) { t.DSN, t.DSNEnv = "", "NOPE" }, "is empty"},
		{"bad dsn", func(t *mayfly.Target) { t.DSN = "secretpw@@nonsense" }, "not a valid MySQL DSN"},
		{"wrong kind", func(t *mayfly.Target) { t.Kind = mayfly.KindRedis }, "is not"},
		{"redis field", func(t *mayfly.Target) { t.Address = "x:1" }, "address is not used"},
		{"negative limit", func(t *mayfly.Target) { t.ConnectionLimit = -1 }, "connection_limit"},
		{"bad prefix", func(t *mayfly.Target) { t.Prefix = "MF-" }, "prefix"},
		{"grant roles", func(t *mayfly.Target) { t.Grants["x"] = mayfly.Grant{Roles: []string{"r"}} }, "roles is not used"},
		{"grant params", func(t *mayfly.Target) { t.Grants["x"] = mayfly.Grant{Params: map[string]string{"a": "b"}} }, "params is not used"},
		{"grant placeholder", func(t *mayfly.Target) {
			t.Grants["x"] = mayfly.Grant{Statements: []string{"GRANT ALL ON *.* TO {{ name }}"}}
		}, "placeholder"},
		{"grant empty statement", func(t *mayfly.Target) { t.Grants["x"] = mayfly.Grant{Statements: []string{" "}} }, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := base()
			tt.mod(&tg)
			c, err := New(tg, getenv)
			if c != nil {
				defer c.Close()
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New() = %v; want success", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New() succeeded; want error containing %q", tt.want)
			}
			if got := mayfly.ErrorCode(err); got != mayfly.EINVALID {
				t.Errorf("ErrorCode(New()) = %q; want %q", got, mayfly.EINVALID)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() = %q; want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Errorf("New() = %q reveals the DSN password", err)
			}
		})
	}
}

func TestPublicAddress(t *testing.T) {
	tests := []struct {
		dsn      string
		host     string
		port     int
		wantHost string
		wantPort int
	}{
		{"root@tcp(db.internal:3307)/", "", 0, "db.internal", 3307},
		{"root@tcp(db.internal)/", "", 0, "db.internal", 3306},
		{"root@tcp(10.0.0.1:3306)/", "mysql.example.com", 0, "mysql.example.com", 3306},
		{"root@tcp(10.0.0.1:3306)/", "mysql.example.com", 13306, "mysql.example.com", 13306},
		{"root@unix(/run/mysqld/mysqld.sock)/", "", 0, "", 0},
	}
	for _, tt := range tests {
		c, err := New(mayfly.Target{DSN: tt.dsn, PublicHost: tt.host, PublicPort: tt.port}, nil)
		if err != nil {
			t.Fatalf("New(%q) = %v", tt.dsn, err)
		}
		c.Close()
		if c.host != tt.wantHost || c.port != tt.wantPort {
			t.Errorf("New(%q, %q, %d) address = %s:%d; want %s:%d", tt.dsn, tt.host, tt.port, c.host, c.port, tt.wantHost, tt.wantPort)
		}
	}
}

func TestNames(t *testing.T) {
	c := &Connector{prefix: "mf_"}
	tests := []struct {
		name string
		ok   bool
	}{
		{"mf_alice_k3j9x2", true},
		{"mf_" + strings.Repeat("a", MaxNameLen-3), true},
		{"mf_" + strings.Repeat("a", MaxNameLen-2), false},
		{"", false},
		{"root", false},
		{"mf_Alice", false},
		{"mf_a'b", false},
		{`mf_a\b`, false},
		{"mf_a b", false},
		{"mf_a-b", false},
		{"mf_é", false},
	}
	for _, tt := range tests {
		err := c.checkName(tt.name)
		if got := err == nil; got != tt.ok {
			t.Errorf("checkName(%q) = %v; want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Errorf("checkName(%q) code = %q; want %q", tt.name, mayfly.ErrorCode(err), mayfly.EINVALID)
		}
	}
}

func TestQuoting(t *testing.T) {
	tests := []struct{ in, want string }{
		{"abc", `'abc'`},
		{"a'b", `'a''b'`},
		{`a\b`, `'a\\b'`},
		{`\'`, `'\\'''`},
		{"a\x00b", `'a\0b'`},
	}
	for _, tt := range tests {
		if got := quoteString(tt.in); got != tt.want {
			t.Errorf("quoteString(%q) = %s; want %s", tt.in, got, tt.want)
		}
	}
	if got, want := quoteIdent("a`b"), "`a``b`"; got != want {
		t.Errorf("quoteIdent(%q) = %s; want %s", "a`b", got, want)
	}
	if got, want := expandStatement("GRANT SELECT ON db.* TO {{name}}", "mf_x"), "GRANT SELECT ON db.* TO 'mf_x'@'%'"; got != want {
		t.Errorf("expandStatement() = %s; want %s", got, want)
	}
	if got, want := likePrefix("mf_a!%"), "mf!_a!!!%%"; got != want {
		t.Errorf("likePrefix() = %s; want %s", got, want)
	}
}

// TestQuotingOnServer round-trips hostile strings through quoteString on
// the real server, in both backslash modes.
func TestQuotingOnServer(t *testing.T) {
	db := adminDB(t)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, mode := range []string{"''", "'NO_BACKSLASH_ESCAPES'"} {
		if _, err := conn.ExecContext(ctx, "SET SESSION sql_mode = "+mode); err != nil {
			t.Fatal(err)
		}
		for _, s := range connectortest.HostileStrings {
			var got string
			if err := conn.QueryRowContext(ctx, "SELECT "+quoteString(s)).Scan(&got); err != nil {
				if mode == "'NO_BACKSLASH_ESCAPES'" && strings.ContainsAny(s, "\\\x00") {
					continue // escapes are literal in this mode; names never contain them
				}
				t.Errorf("sql_mode=%s SELECT %s: %v", mode, quoteString(s), err)
				continue
			}
			if got != s && !(mode == "'NO_BACKSLASH_ESCAPES'" && strings.ContainsAny(s, "\\\x00")) {
				t.Errorf("sql_mode=%s SELECT %s = %q; want %q", mode, quoteString(s), got, s)
			}
		}
	}
}

func TestReprovisionReplacesPassword(t *testing.T) {
	adminDB(t)
	c := newTestConnector(t, nil)
	ctx := context.Background()
	name := connectortest.Name(testPrefix(), MaxNameLen)
	req := mayfly.ProvisionRequest{LeaseID: "lse_1", Username: name, Grant: testGrant(), ExpiresAt: time.Now().Add(time.Hour)}
	first, err := c.Provision(ctx, req)
	if err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{Username: name}) })
	second, err := c.Provision(ctx, req)
	if err != nil {
		t.Fatalf("second Provision() = %v", err)
	}
	if first.Credential.Password == second.Credential.Password {
		t.Fatalf("second Provision() returned the same password")
	}
	if s, err := login(ctx, first.Credential); err == nil {
		s.Close()
		t.Errorf("login with the replaced password succeeded; want refusal")
	}
	s, err := login(ctx, second.Credential)
	if err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	s.Close()
	if got, want := len(second.Credential.Password), 43; got != want {
		t.Errorf("password length = %d; want %d (32 bytes, base64url)", got, want)
	}
	if got, want := second.Credential.Database, testSchema; got != want {
		t.Errorf("Credential.Database = %q; want %q", got, want)
	}
}

func TestConnectionLimit(t *testing.T) {
	adminDB(t)
	c := newTestConnector(t, func(tg *mayfly.Target) { tg.ConnectionLimit = 2 })
	ctx := context.Background()
	name := connectortest.Name(testPrefix(), MaxNameLen)
	res, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{Username: name}) })
	for i := range 2 {
		s, err := login(ctx, res.Credential)
		if err != nil {
			t.Fatalf("login %d: %v", i+1, err)
		}
		defer s.Close()
	}
	if s, err := login(ctx, res.Credential); err == nil {
		s.Close()
		t.Errorf("third login succeeded with connection_limit 2; want refusal")
	}
}

func TestFailedGrantLeavesNothing(t *testing.T) {
	adminDB(t)
	c := newTestConnector(t, nil)
	ctx := context.Background()
	prefix := testPrefix()
	name := connectortest.Name(prefix, MaxNameLen)
	g := mayfly.Grant{Name: "broken", Statements: []string{"GRANT SELECT ON no_such_schema_x.no_such_table TO {{name}}"}}
	_, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: g, ExpiresAt: time.Now().Add(time.Hour)})
	if err == nil {
		c.Revoke(ctx, mayfly.RevokeRequest{Username: name})
		t.Fatalf("Provision() with a failing statement succeeded")
	}
	accts, err := c.Accounts(ctx, mayfly.AccountsRequest{Prefix: prefix})
	if err != nil {
		t.Fatalf("Accounts() = %v", err)
	}
	if len(accts) != 0 {
		t.Errorf("after a failed Provision, Accounts() = %v; want none", accts)
	}
}

func TestAccountsInventory(t *testing.T) {
	admin := adminDB(t)
	c := newTestConnector(t, nil)
	ctx := context.Background()
	name := connectortest.Name(testPrefix(), MaxNameLen)
	if _, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{Username: name}) })
	var adminUser string
	if err := admin.QueryRowContext(ctx, "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").Scan(&adminUser); err != nil {
		t.Fatal(err)
	}
	accts, err := c.Accounts(ctx, mayfly.AccountsRequest{Prefix: ""})
	if err != nil {
		t.Fatalf("Accounts(\"\") = %v", err)
	}
	find := func(n string) (mayfly.Account, bool) {
		i := slices.IndexFunc(accts, func(a mayfly.Account) bool { return a.Name == n })
		if i < 0 {
			return mayfly.Account{}, false
		}
		return accts[i], true
	}
	a, ok := find(name)
	if !ok {
		t.Fatalf("Accounts(\"\") lacks %q", name)
	}
	if !a.CanLogin || a.Superuser {
		t.Errorf("account %q: CanLogin=%v Superuser=%v; want true, false", name, a.CanLogin, a.Superuser)
	}
	if want := "SELECT ON `" + testSchema + "`.*"; !slices.Contains(a.Privileges, want) {
		t.Errorf("account %q privileges = %q; want %q", name, a.Privileges, want)
	}
	root, ok := find(adminUser)
	if !ok {
		t.Fatalf("Accounts(\"\") lacks the admin %q", adminUser)
	}
	if !root.Superuser || root.Sessions < 1 {
		t.Errorf("admin %q: Superuser=%v Sessions=%d; want true, >= 1", adminUser, root.Superuser, root.Sessions)
	}
	if _, err := admin.ExecContext(ctx, "ALTER USER "+account(name)+" ACCOUNT LOCK"); err != nil {
		t.Fatal(err)
	}
	if accts, err = c.Accounts(ctx, mayfly.AccountsRequest{Prefix: name}); err != nil {
		t.Fatal(err)
	}
	if len(accts) != 1 || accts[0].CanLogin {
		t.Errorf("after ACCOUNT LOCK, Accounts(%q) = %+v; want one account that cannot log in", name, accts)
	}
	if err := c.Revoke(ctx, mayfly.RevokeRequest{Username: name}); err != nil {
		t.Fatal(err)
	}
	accts, err = c.Accounts(ctx, mayfly.AccountsRequest{Prefix: ""})
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := find(name); ok {
		t.Errorf("after Revoke, Accounts(\"\") still lists %+v", a)
	}
}

func TestRevokeRefusesUnmanaged(t *testing.T) {
	c := newTestConnector(t, nil)
	for _, n := range []string{"root", "mysql", "mariadb.sys", ""} {
		err := c.Revoke(context.Background(), mayfly.RevokeRequest{Username: n})
		if mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Errorf("Revoke(%q) = %v; want %s error", n, err, mayfly.EINVALID)
		}
	}
}

// requireEventScheduler needs the server's event scheduler on, as
// scripts/services.sh leaves it; no test switches a shared server's global
// setting. Without it the test skips locally and fails under CI=true.
func requireEventScheduler(t *testing.T, db *sql.DB) {
	t.Helper()
	var state string
	if err := db.QueryRowContext(context.Background(), "SELECT @@GLOBAL.event_scheduler").Scan(&state); err != nil {
		t.Fatal(err)
	}
	if !strings.EqualFold(state, "ON") {
		testenv.Unavailable(t, "a MariaDB with its event scheduler on (scripts/services.sh turns it on)", errors.New("event_scheduler="+state))
	}
}

func eventExists(t *testing.T, db *sql.DB, name string) bool {
	t.Helper()
	var n int
	err := db.QueryRow("SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND EVENT_NAME = ?", EventSchema, eventName(name)).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func userExists(t *testing.T, db *sql.DB, name string) bool {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User = ?", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func TestExpiryEventDropsUser(t *testing.T) {
	db := adminDB(t)
	requireEventScheduler(t, db)
	c := newTestConnector(t, nil)
	ctx := context.Background()
	name := connectortest.Name(testPrefix(), MaxNameLen)
	if _, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: time.Now().Add(2 * time.Second)}); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{Username: name}) })
	if !eventExists(t, db, name) {
		t.Fatalf("no expiry event for %q with the event scheduler on", name)
	}
	deadline := time.Now().Add(20 * time.Second)
	for userExists(t, db, name) {
		if time.Now().After(deadline) {
			t.Fatalf("user %q still exists 20s after its expiry event was due", name)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if eventExists(t, db, name) {
		t.Errorf("one-shot event for %q still exists after it ran", name)
	}
	if err := c.Revoke(ctx, mayfly.RevokeRequest{Username: name}); err != nil {
		t.Errorf("Revoke() after the event dropped the user = %v; want success", err)
	}
}

func TestRevokeDropsExpiryEvent(t *testing.T) {
	db := adminDB(t)
	requireEventScheduler(t, db)
	c := newTestConnector(t, nil)
	ctx := context.Background()
	name := connectortest.Name(testPrefix(), MaxNameLen)
	if _, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	if !eventExists(t, db, name) {
		t.Fatalf("no expiry event for %q", name)
	}
	if err := c.Revoke(ctx, mayfly.RevokeRequest{Username: name}); err != nil {
		t.Fatalf("Revoke() = %v", err)
	}
	if eventExists(t, db, name) {
		t.Errorf("expiry event for %q survives Revoke", name)
	}
	if userExists(t, db, name) {
		t.Errorf("user %q survives Revoke", name)
	}
}

func TestNoEventWhenSchedulerOff(t *testing.T) {
	db := adminDB(t)
	c := newTestConnector(t, nil)
	c.noEvents = true // as a server with the scheduler off answers
	ctx := context.Background()
	name := connectortest.Name(testPrefix(), MaxNameLen)
	if _, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	defer c.Revoke(ctx, mayfly.RevokeRequest{Username: name})
	if eventExists(t, db, name) {
		t.Errorf("expiry event created with the event scheduler off")
	}
}

func TestScrubbed(t *testing.T) {
	err := scrubbed(errors.New("near 'IDENTIFIED BY 's3cr3t' WITH'"), "s3cr3t")
	if got, want := err.Error(), "near 'IDENTIFIED BY '[REDACTED]' WITH'"; got != want {
		t.Errorf("scrubbed() = %q; want %q", got, want)
	}
}

func TestCheck(t *testing.T) {
	adminDB(t)
	c := newTestConnector(t, nil)
	if err := c.Check(context.Background()); err != nil {
		t.Errorf("Check() = %v", err)
	}
	bad, err := New(mayfly.Target{DSN: "root:hunter2@tcp(127.0.0.1:1)/?timeout=1s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	err = bad.Check(context.Background())
	if mayfly.ErrorCode(err) != mayfly.EUNAVAILABLE {
		t.Errorf("Check() on a closed port = %v; want %s", err, mayfly.EUNAVAILABLE)
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Check() = %q reveals the password", err)
	}
}
