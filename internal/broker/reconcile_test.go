package broker_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/mysql"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	mfredis "github.com/mayflyhq/mayfly/internal/connector/redis"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// Installation keys of two brokers sharing the targets.
const (
	keyA = "installation A's key, kept with its configuration"
	keyB = "installation B's key, kept with its configuration"
)

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// uniquePrefix returns a prefix no other test run uses.
func uniquePrefix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "mf_rc" + hex.EncodeToString(b) + "_"
}

// targetKind drives one kind of real server: a connector as a broker
// installation builds it, and an admin acting by hand.
type targetKind struct {
	name string
	// target is the target under prefix, without installation key.
	target func(prefix string) mayfly.Target
	// open builds the target's connector with the installation key.
	open func(t mayfly.Target, getenv func(string) string) (mayfly.Connector, error)
	// byHand creates a login account as an admin would, outside Mayfly;
	// superuser makes it one.
	byHand func(t *testing.T, name string, superuser bool)
	// escalate makes an existing account a superuser, by hand.
	escalate func(t *testing.T, name string)
	// exists reports whether the account is on the server.
	exists func(t *testing.T, name string) bool
	// drop removes the account by hand, if present.
	drop func(t *testing.T, name string)
}

func pgAdmin(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func myAdmin(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", testenv.MySQLDSN())
	if err != nil {
		t.Fatalf("open MariaDB: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.PingContext(ctxT(t)); err != nil {
		testenv.Unavailable(t, "MySQL/MariaDB", err)
	}
	return db
}

func redisAdmin(t *testing.T) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), DisableIdentity: true})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(ctxT(t)).Err(); err != nil {
		testenv.Unavailable(t, "Redis", err)
	}
	return rdb
}

func pgQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
func myQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'@'%'" }

func pgExec(t *testing.T, stmt string) {
	t.Helper()
	if _, err := pgAdmin(t).Exec(ctxT(t), stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

func myExec(t *testing.T, stmt string) {
	t.Helper()
	if _, err := myAdmin(t).ExecContext(ctxT(t), stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

func redisDo(t *testing.T, args ...any) {
	t.Helper()
	if err := redisAdmin(t).Do(ctxT(t), args...).Err(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

var kinds = []targetKind{
	{
		name: "postgres",
		target: func(prefix string) mayfly.Target {
			return mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: prefix, DSN: testenv.PostgresDSN(),
				Grants: map[string]mayfly.Grant{"read": {Name: "read", Roles: []string{"pg_read_all_data"}}}}
		},
		open: func(t mayfly.Target, getenv func(string) string) (mayfly.Connector, error) {
			return postgres.New(t, getenv)
		},
		byHand: func(t *testing.T, name string, superuser bool) {
			attrs := " LOGIN"
			if superuser {
				attrs += " SUPERUSER"
			}
			pgExec(t, "CREATE ROLE "+pgQuote(name)+attrs)
		},
		escalate: func(t *testing.T, name string) { pgExec(t, "ALTER ROLE "+pgQuote(name)+" SUPERUSER") },
		exists: func(t *testing.T, name string) bool {
			var n int
			if err := pgAdmin(t).QueryRow(ctxT(t), "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = $1", name).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n > 0
		},
		drop: func(t *testing.T, name string) {
			pgAdmin(t).Exec(context.Background(), "DROP ROLE IF EXISTS "+pgQuote(name))
		},
	},
	{
		name: "mariadb",
		target: func(prefix string) mayfly.Target {
			return mayfly.Target{Name: "maria", Kind: mayfly.KindMySQL, Prefix: prefix, DSN: testenv.MySQLDSN(),
				Grants: map[string]mayfly.Grant{"usage": {Name: "usage"}}}
		},
		open: func(t mayfly.Target, getenv func(string) string) (mayfly.Connector, error) {
			return mysql.New(t, getenv)
		},
		byHand: func(t *testing.T, name string, superuser bool) {
			myExec(t, "CREATE USER "+myQuote(name)+" IDENTIFIED BY 'by-hand-password'")
			if superuser {
				myExec(t, "GRANT ALL ON *.* TO "+myQuote(name)+" WITH GRANT OPTION")
			}
		},
		escalate: func(t *testing.T, name string) { myExec(t, "GRANT ALL ON *.* TO "+myQuote(name)+" WITH GRANT OPTION") },
		exists: func(t *testing.T, name string) bool {
			var n int
			if err := myAdmin(t).QueryRowContext(ctxT(t), "SELECT count(*) FROM mysql.user WHERE User = ?", name).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n > 0
		},
		drop: func(t *testing.T, name string) {
			myAdmin(t).ExecContext(context.Background(), "DROP USER IF EXISTS "+myQuote(name))
		},
	},
	{
		name: "redis",
		target: func(prefix string) mayfly.Target {
			return mayfly.Target{Name: "cache", Kind: mayfly.KindRedis, Prefix: prefix, Address: testenv.RedisAddr(),
				Grants: map[string]mayfly.Grant{"read": {Name: "read", ACL: "~app:* +@read"}}}
		},
		open: func(t mayfly.Target, getenv func(string) string) (mayfly.Connector, error) {
			return mfredis.New(t, getenv)
		},
		byHand: func(t *testing.T, name string, superuser bool) {
			rules := []any{"ACL", "SETUSER", name, "on", ">by-hand-password"}
			if superuser {
				rules = append(rules, "~*", "+@all")
			} else {
				rules = append(rules, "~app:*", "+@read")
			}
			redisDo(t, rules...)
		},
		escalate: func(t *testing.T, name string) { redisDo(t, "ACL", "SETUSER", name, "~*", "+@all") },
		exists: func(t *testing.T, name string) bool {
			users, err := redisAdmin(t).Do(ctxT(t), "ACL", "USERS").StringSlice()
			if err != nil {
				t.Fatal(err)
			}
			return slices.Contains(users, name)
		},
		drop: func(t *testing.T, name string) {
			redisAdmin(t).Do(context.Background(), "ACL", "DELUSER", name)
		},
	},
}

// installation is one broker: its store, configuration and installation
// key, over one target.
type installation struct {
	b      *broker.Broker
	store  *sqlite.DB
	conn   mayfly.Connector
	target mayfly.Target
}

// newInstallation starts a broker over tg with an empty store and the
// installation key key.
func newInstallation(t *testing.T, k targetKind, tg mayfly.Target, key string, hooks broker.Hooks, wrap func(mayfly.Connector) mayfly.Connector) *installation {
	t.Helper()
	tg.InstanceKeyEnv = "MAYFLY_INSTANCE_KEY"
	conn, err := k.open(tg, func(string) string { return key })
	if err != nil {
		t.Fatalf("open %s connector: %v", k.name, err)
	}
	t.Cleanup(func() { conn.Close() })
	if wrap != nil {
		conn = wrap(conn)
	}
	st, err := sqlite.Open(ctxT(t), filepath.Join(t.TempDir(), "mayfly.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	b := broker.New(&broker.Config{Targets: map[string]mayfly.Target{tg.Name: tg}},
		broker.Options{Store: st, Connectors: map[string]mayfly.Connector{tg.Name: conn},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Hooks: hooks})
	return &installation{b: b, store: st, conn: conn, target: tg}
}

func (in *installation) reconcile(t *testing.T) broker.ReconcileResult {
	t.Helper()
	res, err := in.b.Reconcile(ctxT(t), broker.System, in.target.Name)
	if err != nil {
		t.Fatalf("Reconcile = %v", err)
	}
	if len(res) != 1 {
		t.Fatalf("Reconcile returned %d results; want 1", len(res))
	}
	if len(res[0].Errors) > 0 {
		t.Errorf("Reconcile errors: %v", res[0].Errors)
	}
	return res[0]
}

// provision creates an account for a lease the way the installation's
// activation does, through its connector.
func (in *installation) provision(t *testing.T, name string) {
	t.Helper()
	g := in.target.Grants[slices.Sorted(maps.Keys(in.target.Grants))[0]]
	if _, err := in.conn.Provision(ctxT(t), mayfly.ProvisionRequest{LeaseID: "lse_" + name, Username: name, Grant: g,
		ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("Provision(%s) = %v", name, err)
	}
}

func (in *installation) alerts(t *testing.T, action string) int {
	t.Helper()
	var n int
	err := in.store.View(ctxT(t), func(tx mayfly.Tx) error {
		evs, err := tx.ListAudit(mayfly.AuditFilter{Action: action})
		n = len(evs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestReconcileKeepsAccountsMayflyDidNotMake: an account under the prefix
// that Mayfly did not make (here mf_..._alice_x, created by an admin) is
// reported as unmanaged, alerted once, shown managed: false in the
// inventory, and left in place.
func TestReconcileKeepsAccountsMayflyDidNotMake(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			prefix := uniquePrefix()
			in := newInstallation(t, k, k.target(prefix), keyA, broker.Hooks{}, nil)
			name := prefix + "alice_x"
			t.Cleanup(func() { k.drop(t, name) })
			k.byHand(t, name, false)

			res := in.reconcile(t)
			if slices.Contains(res.OrphansRemoved, name) || !k.exists(t, name) {
				t.Fatalf("reconcile removed %s, which Mayfly did not make (result %+v)", name, res)
			}
			if !slices.Contains(res.Unmanaged, name) {
				t.Errorf("Unmanaged = %v; want it to report %s", res.Unmanaged, name)
			}
			inv, err := in.b.Inventory(ctxT(t), broker.System, in.target.Name)
			if err != nil {
				t.Fatalf("Inventory = %v", err)
			}
			i := slices.IndexFunc(inv, func(a broker.InventoryAccount) bool { return a.Name == name })
			if i < 0 {
				t.Fatalf("Inventory lacks %s", name)
			}
			if inv[i].Managed {
				t.Errorf("Inventory %s managed = true; want false", name)
			}
			if got := in.alerts(t, "alert.unmanaged_account"); got != 1 {
				t.Errorf("alerts after the first pass = %d; want 1", got)
			}
			in.reconcile(t)
			if !k.exists(t, name) {
				t.Fatalf("a second pass removed %s", name)
			}
			if got := in.alerts(t, "alert.unmanaged_account"); got != 1 {
				t.Errorf("alerts after the second pass = %d; want still 1", got)
			}
		})
	}
}

// TestReconcileOwnAccountsOnly: broker B, sharing the prefix on the same
// server, never removes broker A's account; broker A, after losing its
// store (a new empty one, the same configuration and key), still
// recognises its leftover account and removes it.
func TestReconcileOwnAccountsOnly(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			prefix := uniquePrefix()
			tg := k.target(prefix)
			a := newInstallation(t, k, tg, keyA, broker.Hooks{}, nil)
			name := prefix + "bob_a1b2c3d4"
			t.Cleanup(func() { k.drop(t, name) })
			a.provision(t, name)

			b := newInstallation(t, k, tg, keyB, broker.Hooks{}, nil)
			res := b.reconcile(t)
			if !k.exists(t, name) {
				t.Fatalf("broker B removed broker A's account %s (result %+v)", name, res)
			}
			if !slices.Contains(res.Unmanaged, name) {
				t.Errorf("broker B: Unmanaged = %v; want %s reported", res.Unmanaged, name)
			}

			restarted := newInstallation(t, k, tg, keyA, broker.Hooks{}, nil) // store lost
			inv, err := restarted.b.Inventory(ctxT(t), broker.System, tg.Name)
			if err != nil {
				t.Fatalf("Inventory = %v", err)
			}
			if i := slices.IndexFunc(inv, func(a broker.InventoryAccount) bool { return a.Name == name }); i < 0 || !inv[i].Managed {
				t.Errorf("broker A after losing its store: inventory does not show %s as managed", name)
			}
			res = restarted.reconcile(t)
			if !slices.Equal(res.OrphansRemoved, []string{name}) {
				t.Errorf("broker A after losing its store: OrphansRemoved = %v; want [%s]", res.OrphansRemoved, name)
			}
			if k.exists(t, name) {
				t.Errorf("broker A's leftover account %s is still on the target", name)
			}
		})
	}
}

// TestReconcileNeverDropsSuperusers: with remove_unmarked on, an unmarked
// account under the prefix is removed, but a superuser never is, neither
// one made by hand nor one Mayfly made that was escalated since.
func TestReconcileNeverDropsSuperusers(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			prefix := uniquePrefix()
			tg := k.target(prefix)
			tg.RemoveUnmarked = true
			in := newInstallation(t, k, tg, keyA, broker.Hooks{}, nil)
			plain, root, escalated := prefix+"plain_x", prefix+"root_x", prefix+"esc_x"
			for _, n := range []string{plain, root, escalated} {
				t.Cleanup(func() { k.drop(t, n) })
			}
			k.byHand(t, plain, false)
			k.byHand(t, root, true)
			in.provision(t, escalated)
			k.escalate(t, escalated)

			res := in.reconcile(t)
			for _, n := range []string{root, escalated} {
				if !k.exists(t, n) {
					t.Errorf("superuser %s was removed", n)
				}
				if !slices.Contains(res.SuperusersKept, n) {
					t.Errorf("SuperusersKept = %v; want %s", res.SuperusersKept, n)
				}
			}
			if k.exists(t, plain) || !slices.Contains(res.OrphansRemoved, plain) {
				t.Errorf("with remove_unmarked, %s was not removed (OrphansRemoved %v)", plain, res.OrphansRemoved)
			}
		})
	}
}

// recorder records the usernames a connector is asked to revoke.
type recorder struct {
	mayfly.Connector
	mu      sync.Mutex
	revoked []string
}

func (r *recorder) Revoke(ctx context.Context, req mayfly.RevokeRequest) error {
	r.mu.Lock()
	r.revoked = append(r.revoked, req.Username)
	r.mu.Unlock()
	return r.Connector.Revoke(ctx, req)
}

// TestReconcileMissingAccountIsRevoked: an active lease whose account has
// vanished goes through the connector's Revoke (which succeeds for an
// absent account) before it is recorded revoked, ending as missing.
func TestReconcileMissingAccountIsRevoked(t *testing.T) {
	k := kinds[0]
	prefix := uniquePrefix()
	rec := &recorder{}
	done := make(chan *mayfly.Lease, 1)
	hooks := broker.Hooks{Revoked: func(l *mayfly.Lease, _ time.Duration, err error) {
		if err == nil {
			c := *l
			done <- &c
		}
	}}
	in := newInstallation(t, k, k.target(prefix), keyA, hooks, func(c mayfly.Connector) mayfly.Connector {
		rec.Connector = c
		return rec
	})
	now := time.Now().UTC()
	l := &mayfly.Lease{ID: "lse_missing1", RequestID: "req_missing1", Requester: "alice", Target: in.target.Name, Grant: "read",
		Username: prefix + "alice_gone", State: mayfly.LeaseActive, CreatedAt: now.Add(-time.Minute),
		ExpiresAt: now.Add(time.Hour), DueAt: now.Add(time.Hour)}
	if err := in.store.Update(ctxT(t), func(tx mayfly.Tx) error { return tx.CreateLease(l) }); err != nil {
		t.Fatalf("CreateLease = %v", err)
	}
	res := in.reconcile(t)
	if !slices.Equal(res.LeasesMissing, []string{l.ID}) {
		t.Fatalf("LeasesMissing = %v; want [%s]", res.LeasesMissing, l.ID)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	schedDone := make(chan error, 1)
	go func() { schedDone <- in.b.RunScheduler(ctx, broker.SchedulerOptions{}) }()
	t.Cleanup(func() { cancel(); <-schedDone })
	// The hook sees the lease as its revocation is recorded.
	var got *mayfly.Lease
	select {
	case got = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the lease of the missing account was never revoked through the connector")
	}
	rec.mu.Lock()
	revoked := slices.Clone(rec.revoked)
	rec.mu.Unlock()
	if !slices.Contains(revoked, l.Username) {
		t.Errorf("connector revoked %v; want %s", revoked, l.Username)
	}
	if got.ID != l.ID || got.State != mayfly.LeaseRevoked || got.EndReason != mayfly.EndMissing {
		t.Errorf("lease %s = %s (%s); want %s revoked (%s)", got.ID, got.State, got.EndReason, l.ID, mayfly.EndMissing)
	}
}

// TestReconcileTwoTargetsOneServer: two targets of one installation on the
// same server and prefix see each other's accounts, marked alike; an
// account a live lease of the other target holds is no orphan.
func TestReconcileTwoTargetsOneServer(t *testing.T) {
	k := kinds[0]
	prefix := uniquePrefix()
	pg1, pg2 := k.target(prefix), k.target(prefix)
	pg1.Name, pg2.Name = "pg1", "pg2"
	in := newInstallation(t, k, pg1, keyA, broker.Hooks{}, nil)
	other := newInstallation(t, k, pg2, keyA, broker.Hooks{}, nil) // its connector
	name := prefix + "carol_x"
	t.Cleanup(func() { k.drop(t, name) })
	other.provision(t, name)
	now := time.Now().UTC()
	l := &mayfly.Lease{ID: "lse_pg2", RequestID: "req_pg2", Requester: "carol", Target: "pg2", Grant: "read", Username: name,
		State: mayfly.LeaseActive, CreatedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour), DueAt: now.Add(time.Hour)}
	if err := in.store.Update(ctxT(t), func(tx mayfly.Tx) error { return tx.CreateLease(l) }); err != nil {
		t.Fatalf("CreateLease = %v", err)
	}
	res := in.reconcile(t)
	if slices.Contains(res.OrphansRemoved, name) || !k.exists(t, name) {
		t.Errorf("reconciling pg1 removed %s, held by a live lease of pg2 (result %+v)", name, res)
	}
}
