package credential

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/mysql"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/connector/redis"
	"github.com/mayflyhq/mayfly/internal/seal"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// testKinds mirrors the registry main builds.
func testKinds() map[string]Kind {
	dsnIn := func(t mayfly.Target) bool { return t.DSN != "" || t.DSNEnv != "" }
	applyDSN := func(t *mayfly.Target, c string) { t.DSN, t.DSNEnv = c, "" }
	return map[string]Kind{
		mayfly.KindPostgres: {New: func(t mayfly.Target, g func(string) string) (mayfly.Connector, error) {
			c, err := postgres.New(t, g)
			if err != nil {
				return nil, err
			}
			return c, nil
		}, InConfig: dsnIn, Apply: applyDSN, WithPassword: postgres.WithPassword, Full: true, Describe: "dsn"},
		mayfly.KindMySQL: {New: func(t mayfly.Target, g func(string) string) (mayfly.Connector, error) {
			c, err := mysql.New(t, g)
			if err != nil {
				return nil, err
			}
			return c, nil
		}, InConfig: dsnIn, Apply: applyDSN, WithPassword: mysql.WithPassword, Describe: "dsn"},
		mayfly.KindRedis: {New: func(t mayfly.Target, g func(string) string) (mayfly.Connector, error) {
			c, err := redis.New(t, g)
			if err != nil {
				return nil, err
			}
			return c, nil
		}, InConfig: func(t mayfly.Target) bool { return t.AdminPassword != "" || t.AdminUser == "" },
			Apply:        func(t *mayfly.Target, c string) { t.AdminPassword, t.AdminPasswordEnv = c, "" },
			WithPassword: func(_, p string) (string, error) { return p, nil }, Describe: "admin_password"},
	}
}

type offsetClock struct{ d time.Duration }

func (c offsetClock) Now() time.Time { return time.Now().Add(c.d) }

func randSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// fixture is a target with a dedicated admin account the test created
// (never the servers' own admin), and how to log in as anyone on it.
type fixture struct {
	target mayfly.Target // with the initial credential in the configuration
	cred   string        // the initial credential
	// login logs in with a credential of the kind's form (DSN or password).
	login func(ctx context.Context, cred string) error
	// loginLease logs in with an issued lease credential.
	loginLease func(ctx context.Context, c mayfly.Credential) error
}

func pgFixture(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	adminDSN := testenv.PostgresDSN()
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	sfx := randSuffix()
	role, grantRole, pw := "rotadm_"+sfx, "rotread_"+sfx, "initial-"+sfx
	for _, q := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s'", role, pw),
		"CREATE ROLE " + grantRole + " NOLOGIN",
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
		admin.Exec(ctx, "DROP ROLE IF EXISTS "+role)
		admin.Exec(ctx, "DROP ROLE IF EXISTS "+grantRole)
	})
	u, _ := url.Parse(adminDSN)
	u.User = url.UserPassword(role, pw)
	u.Path = "/postgres"
	dsn := u.String()
	login := func(ctx context.Context, dsn string) error {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	}
	return fixture{
		target: mayfly.Target{Name: "pg-rot", Kind: mayfly.KindPostgres, Prefix: "mfr_", DSN: dsn,
			Grants: map[string]mayfly.Grant{"read": {Name: "read", Roles: []string{grantRole}}}},
		cred:  dsn,
		login: login,
		loginLease: func(ctx context.Context, c mayfly.Credential) error {
			lu := *u
			lu.User = url.UserPassword(c.Username, c.Password)
			return login(ctx, lu.String())
		},
	}
}

func mysqlFixture(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	admin, err := sql.Open("mysql", testenv.MySQLDSN())
	if err == nil {
		err = admin.PingContext(ctx)
	}
	if err != nil {
		testenv.Unavailable(t, "MariaDB", err)
	}
	t.Cleanup(func() { admin.Close() })
	sfx := randSuffix()
	user, pw := "rotadm_"+sfx, "initial-"+sfx
	for _, q := range []string{
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, pw),
		fmt.Sprintf("GRANT ALL PRIVILEGES ON *.* TO '%s'@'%%' WITH GRANT OPTION", user),
		"CREATE DATABASE IF NOT EXISTS rot_" + sfx,
	} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		admin.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user))
		admin.Exec("DROP DATABASE IF EXISTS rot_" + sfx)
	})
	base, err := mysqldriver.ParseDSN(testenv.MySQLDSN())
	if err != nil {
		t.Fatal(err)
	}
	withUser := func(u, p string) string {
		c := base.Clone()
		c.User, c.Passwd = u, p
		return c.FormatDSN()
	}
	login := func(ctx context.Context, dsn string) error {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(ctx)
	}
	dsn := withUser(user, pw)
	return fixture{
		target: mayfly.Target{Name: "my-rot", Kind: mayfly.KindMySQL, Prefix: "mfr_", DSN: dsn,
			Grants: map[string]mayfly.Grant{"read": {Name: "read", Statements: []string{"GRANT SELECT ON rot_" + sfx + ".* TO {{name}}"}}}},
		cred:  dsn,
		login: login,
		loginLease: func(ctx context.Context, c mayfly.Credential) error {
			return login(ctx, withUser(c.Username, c.Password))
		},
	}
}

func redisFixture(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	addr := testenv.RedisAddr()
	admin := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	if err := admin.Ping(ctx).Err(); err != nil {
		testenv.Unavailable(t, "Redis", err)
	}
	t.Cleanup(func() { admin.Close() })
	sfx := randSuffix()
	user, pw := "rotadm_"+sfx, "initial-"+sfx
	if err := admin.Do(ctx, "ACL", "SETUSER", user, "on", ">"+pw, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	loginAs := func(ctx context.Context, u, p string) error {
		c := goredis.NewClient(&goredis.Options{Addr: addr, Username: u, Password: p, DisableIdentity: true, MaxRetries: -1})
		defer c.Close()
		return c.Ping(ctx).Err()
	}
	return fixture{
		target: mayfly.Target{Name: "rd-rot", Kind: mayfly.KindRedis, Prefix: "mfr_", Address: addr, AdminUser: user, AdminPassword: pw,
			Grants: map[string]mayfly.Grant{"read": {Name: "read", ACL: "~rot:* +@read +ping"}}},
		cred:       pw,
		login:      func(ctx context.Context, p string) error { return loginAs(ctx, user, p) },
		loginLease: func(ctx context.Context, c mayfly.Credential) error { return loginAs(ctx, c.Username, c.Password) },
	}
}

type env struct {
	st   mayfly.Store
	keys *seal.Keyring
	path string
}

func newEnv(t *testing.T) env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mayfly.db")
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kr, err := seal.Open(context.Background(), st, []byte(strings.Repeat("k", seal.KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	return env{st: st, keys: kr, path: path}
}

func (e env) manager(holder string, clk mayfly.Clock) *Manager {
	return New(Options{Store: e.st, Keys: e.keys, Kinds: testKinds(), Holder: holder, Clock: clk})
}

// issue provisions an account through c, logs in with it as its user
// would, and revokes it, refused afterwards.
func issue(t *testing.T, ctx context.Context, fx fixture, c mayfly.Connector, step string) {
	t.Helper()
	name := "mfr_u_" + randSuffix()
	res, err := c.Provision(ctx, mayfly.ProvisionRequest{LeaseID: "lease-" + name, Username: name, Grant: fx.target.Grants["read"], ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("after a crash at %s: provision: %v", step, err)
	}
	if err := fx.loginLease(ctx, res.Credential); err != nil {
		t.Fatalf("after a crash at %s: login with the issued credential: %v", step, err)
	}
	if err := c.Revoke(ctx, mayfly.RevokeRequest{LeaseID: "lease-" + name, Username: name}); err != nil {
		t.Fatalf("after a crash at %s: revoke: %v", step, err)
	}
	if err := fx.loginLease(ctx, res.Credential); err == nil {
		t.Fatalf("after a crash at %s: the revoked credential still logs in", step)
	}
}

func current(t *testing.T, ctx context.Context, m *Manager, target string) (rec *record, cur string) {
	t.Helper()
	rec, err := m.load(ctx, target)
	if err != nil || rec == nil {
		t.Fatalf("stored credential: %v, %v", rec, err)
	}
	cur, err = m.open(target, rec.Current)
	if err != nil {
		t.Fatal(err)
	}
	return rec, cur
}

var errCrash = errors.New("crash (failpoint)")

// rotateAndCrash is a first broker: it takes fx's credential from the
// configuration, stores it sealed, and rotates it, stopping after step as
// a crash would (its lock left held; "none": no crash). It returns the
// credential stored before the rotation.
func rotateAndCrash(t *testing.T, ctx context.Context, e env, fx fixture, step string) string {
	t.Helper()
	m1 := e.manager("r1", nil)
	c1, err := m1.Connector(ctx, fx.target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close() })
	start, err := currentCred(fx)
	if err != nil {
		t.Fatal(err)
	}
	if err := m1.Set(ctx, "admin", "", fx.target.Name, start, true); err != nil {
		t.Fatalf("Set: %v", err)
	}
	m1.failpoint = func(s string) error {
		if s == step {
			return errCrash
		}
		return nil
	}
	_, err = m1.Rotate(ctx, "admin", "", fx.target.Name)
	if step == "none" {
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
	} else if !errors.Is(err, errCrash) {
		t.Fatalf("Rotate with a crash at %s = %v; want the crash", step, err)
	}
	return start
}

// TestRotationCrashAtEachStep rotates the admin password of a dedicated
// admin account on each real server, stopping the rotation after each
// step as a crash would (its lock left held), then starts a new manager
// as a restarted broker would and proves it has a working credential,
// can issue leases, and can rotate again, after which the old passwords
// are refused by the target.
func TestRotationCrashAtEachStep(t *testing.T) {
	for _, kc := range []struct {
		name string
		fx   func(*testing.T) fixture
	}{{"postgres", pgFixture}, {"mariadb", mysqlFixture}, {"redis", redisFixture}} {
		t.Run(kc.name, func(t *testing.T) {
			fx := kc.fx(t)
			delete(fixtures, fx.target.Name)
			for _, step := range append(append([]string{}, Steps...), "none") {
				t.Run(step, func(t *testing.T) {
					ctx := context.Background()
					e := newEnv(t)
					start := rotateAndCrash(t, ctx, e, fx, step)

					// The restarted broker: the configuration holds no
					// secret; the lock of the dead one has lapsed.
					t2 := fx.target
					t2.DSN, t2.AdminPassword = "", ""
					m2 := e.manager("r2", offsetClock{LockTTL + time.Second})
					c2, err := m2.Connector(ctx, t2)
					if err != nil {
						t.Fatalf("after a crash at %s: Connector: %v", step, err)
					}
					defer c2.Close()
					if err := c2.Check(ctx); err != nil {
						t.Fatalf("after a crash at %s: the broker has no working credential: %v", step, err)
					}
					rec, cur := current(t, ctx, m2, fx.target.Name)
					if rec.Pending != "" {
						t.Fatalf("after a crash at %s: the rotation is still pending after start", step)
					}
					if err := fx.login(ctx, cur); err != nil {
						t.Fatalf("after a crash at %s: the stored credential does not log in: %v", step, err)
					}
					changed := step != StepPendingStored
					if changed == (cur == start) {
						t.Fatalf("after a crash at %s: stored credential changed = %v; want %v", step, cur != start, changed)
					}
					if changed {
						if err := fx.login(ctx, start); err == nil {
							t.Fatalf("after a crash at %s: the old admin password still logs in", step)
						}
					}
					issue(t, ctx, fx, c2, step)

					// And it rotates again: only the newest password works.
					if _, err := m2.Rotate(ctx, "admin", "", fx.target.Name); err != nil {
						t.Fatalf("after a crash at %s: rotate again: %v", step, err)
					}
					_, latest := current(t, ctx, m2, fx.target.Name)
					for _, old := range []string{start, cur} {
						if err := fx.login(ctx, old); err == nil {
							t.Fatalf("after a crash at %s and a second rotation: an old admin password still logs in", step)
						}
					}
					if err := fx.login(ctx, latest); err != nil {
						t.Fatalf("the newest credential does not log in: %v", err)
					}
					issue(t, ctx, fx, c2, step+" and a second rotation")
					fixtures[fx.target.Name] = latest
				})
			}
		})
	}
}

// fixtures remembers the credential a kind's admin account has now,
// across the subtests that rotate it.
var fixtures = map[string]string{}

func currentCred(fx fixture) (string, error) {
	if c, ok := fixtures[fx.target.Name]; ok {
		return c, nil
	}
	return fx.cred, nil
}

// TestReadOnlyLeavesAPendingRotation: a rotation cut off once the target
// has the new password leaves it pending. A read-only manager (mayfly
// doctor beside the server) works with the credential that logs in and
// writes nothing; the next manager that may write resolves it.
func TestReadOnlyLeavesAPendingRotation(t *testing.T) {
	ctx := context.Background()
	fx := pgFixture(t)
	delete(fixtures, fx.target.Name)
	e := newEnv(t)
	rotateAndCrash(t, ctx, e, fx, StepChangedRecorded)
	before, _ := current(t, ctx, e.manager("r0", nil), fx.target.Name)
	if before.Pending == "" {
		t.Fatal("the rotation cut off is not pending")
	}
	events := func() int {
		var n int
		if err := e.st.View(ctx, func(tx mayfly.Tx) error {
			es, err := tx.ListAudit(mayfly.AuditFilter{})
			n = len(es)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := events()

	t2 := fx.target
	t2.DSN, t2.AdminPassword = "", ""
	ro := New(Options{Store: e.st, Keys: e.keys, Kinds: testKinds(), Holder: "doctor", Clock: offsetClock{LockTTL + time.Second}, ReadOnly: true})
	c2, err := ro.Connector(ctx, t2)
	if err != nil {
		t.Fatalf("read-only Connector: %v", err)
	}
	defer c2.Close()
	if err := c2.Check(ctx); err != nil {
		t.Fatalf("read-only: no working credential: %v", err)
	}
	if after, _ := current(t, ctx, ro, fx.target.Name); after.Pending != before.Pending || after.Version != before.Version {
		t.Errorf("a read-only manager changed the stored credential (pending %t, version %d → %d)", after.Pending != "", before.Version, after.Version)
	}
	if got := events(); got != n {
		t.Errorf("a read-only manager appended %d audit events; want none", got-n)
	}

	m3 := e.manager("r3", offsetClock{LockTTL + time.Second})
	c3, err := m3.Connector(ctx, t2)
	if err != nil {
		t.Fatalf("Connector: %v", err)
	}
	defer c3.Close()
	rec, cur := current(t, ctx, m3, fx.target.Name)
	if rec.Pending != "" {
		t.Fatal("the rotation is still pending after a manager that may write started")
	}
	if err := fx.login(ctx, cur); err != nil {
		t.Fatalf("the stored credential does not log in: %v", err)
	}
	fixtures[fx.target.Name] = cur
}
