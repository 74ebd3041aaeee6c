package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/sshdtest"
	"github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestDoctor runs `mayfly doctor` against real servers: admins with what
// Mayfly needs pass; admins without it fail, each check naming the missing
// privilege and the statement that grants it; a missing script command
// and a policy nobody can approve are reported; exit 0 only when all is
// well.
func TestDoctor(t *testing.T) {
	requirePG(t)
	ctx := context.Background()
	mysqlDSN := testenv.MySQLDSN()
	redisAddr := testenv.RedisAddr()

	// Weak admins: they can log in and nothing more.
	adminExec(t, `DROP ROLE IF EXISTS mf_doctor_weak`)
	adminExec(t, `CREATE ROLE mf_doctor_weak LOGIN PASSWORD 'weak-pw-1'`)
	t.Cleanup(func() { adminExec(t, `DROP ROLE IF EXISTS mf_doctor_weak`) })
	u, _ := url.Parse(testenv.PostgresDSN())
	u.User = url.UserPassword("mf_doctor_weak", "weak-pw-1")
	weakPG := u.String()
	mysqlExec(t, "DROP USER IF EXISTS 'mf_doctor_weak'@'127.0.0.1'")
	mysqlExec(t, "CREATE USER 'mf_doctor_weak'@'127.0.0.1' IDENTIFIED BY 'weak-pw-2'")
	t.Cleanup(func() { mysqlExec(t, "DROP USER IF EXISTS 'mf_doctor_weak'@'127.0.0.1'") })
	weakMySQL := strings.Replace(mysqlDSN, "root@", "mf_doctor_weak:weak-pw-2@", 1)
	if !strings.Contains(weakMySQL, "mf_doctor_weak") {
		t.Fatalf("cannot make a weak MySQL DSN from %q", mysqlDSN)
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	if err := rdb.Do(ctx, "ACL", "SETUSER", "mf_doctor_weak", "reset", "on", ">weak-pw-3", "+acl|whoami", "+acl|dryrun", "+time", "+ping").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Do(context.Background(), "ACL", "DELUSER", "mf_doctor_weak") })

	dir := t.TempDir()
	write := func(name, targets, policies string) string {
		p := filepath.Join(dir, name)
		cfg := fmt.Sprintf(`listen: 127.0.0.1:0
store: {sqlite: %s}
users:
  - {name: alice, groups: [eng], token_sha256: "%064d"}
  - {name: bob, groups: [dba], token_sha256: "%064d"}
targets:
%spolicies:
%s`, filepath.Join(dir, "mayfly.db"), 1, 2, targets, policies)
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", fmt.Sprintf(`  - {name: maria, kind: mysql, dsn: %q, grants: {read: {statements: ["GRANT SELECT ON test.* TO {{name}}"]}}}
  - {name: cache, kind: redis, address: %q, grants: {read: {acl: "~app:* +@read"}}}
`, mysqlDSN, redisAddr), "  - {name: eng, groups: [eng], targets: [\"*\"], grants: [\"*\"], max_duration: 1h, approvals: 1, approver_groups: [dba]}\n")
	w := &world{t: t}
	out, err := w.try("", "doctor", "--config", good)
	if err != nil || !strings.Contains(out, "All is well") {
		t.Fatalf("doctor on good admins: %v\n%s", err, out)
	}
	// A PostgreSQL superuser passes every check; autovacuum is reported as
	// the server has it.
	goodPG := write("good-pg.yaml", fmt.Sprintf("  - {name: pg, kind: postgres, dsn: %q, grants: {read: {roles: [pg_read_all_data]}}}\n", testenv.PostgresDSN()),
		"  - {name: eng, groups: [eng], targets: [pg], grants: [read], max_duration: 1h}\n")
	out, _ = w.try("", "doctor", "--config", goodPG, "-o", "json")
	var pgRep doctorReport
	if err := json.Unmarshal([]byte(out), &pgRep); err != nil {
		t.Fatalf("doctor -o json: %v\n%s", err, out)
	}
	var autovacuum string
	pgQueryRow(t, "SHOW autovacuum", &autovacuum)
	for _, f := range pgRep.Findings {
		want := mayfly.FindingOK
		if f.Check == "autovacuum" && autovacuum != "on" {
			want = mayfly.FindingWarn
		}
		if f.Status != want {
			t.Errorf("superuser: %+v; want %s", f, want)
		}
	}

	bad := write("bad.yaml", fmt.Sprintf(`  - {name: pg, kind: postgres, dsn: %q, grants: {read: {roles: [pg_read_all_data]}}}
  - {name: maria, kind: mysql, dsn: %q, grants: {read: {statements: ["GRANT SELECT ON test.* TO {{name}}"]}}}
  - {name: cache, kind: redis, address: %q, admin_user: mf_doctor_weak, admin_password: weak-pw-3, grants: {read: {acl: "~app:* +@read"}}}
  - name: app
    kind: script
    commands: {provision: [/nonexistent/mayfly-app], revoke: [/nonexistent/mayfly-app], accounts: [/nonexistent/mayfly-app]}
    grants: {user: {}}
`, weakPG, weakMySQL, redisAddr), "  - {name: eng, groups: [eng], targets: [\"*\"], grants: [\"*\"], max_duration: 1h, approvals: 2, approver_groups: [dba]}\n")
	out, err = w.try("", "doctor", "--config", bad, "-o", "json")
	if exitCode(err) != 1 {
		t.Fatalf("doctor on weak admins: exit %d (%v); want 1\n%s", exitCode(err), err, out)
	}
	var rep doctorReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.OK {
		t.Fatalf("doctor -o json: %v, ok=%v\n%s", err, rep.OK, out)
	}
	got := map[string]mayfly.Finding{}
	for _, f := range rep.Findings {
		got[f.Target+"/"+f.Check] = f
	}
	for key, want := range map[string]string{
		"pg/create roles":           "ALTER ROLE",
		"pg/end sessions":           "GRANT pg_signal_backend",
		"pg/grant pg_read_all_data": "WITH ADMIN OPTION",
		"maria/create users":        "GRANT CREATE USER",
		"maria/end sessions":        "PROCESS",
		"cache/create users":        "+acl|setuser",
		"cache/end sessions":        "+client|kill",
		"app/health":                "",
		"/policy eng":               "approvers",
	} {
		f, ok := got[key]
		if !ok || f.Status != mayfly.FindingFail || !strings.Contains(f.Fix, want) {
			t.Errorf("%s: %+v; want a failure whose fix says %q", key, f, want)
		}
	}
	if f := got["app/health"]; !strings.Contains(f.Detail, "/nonexistent/mayfly-app") {
		t.Errorf("script finding %+v; want the missing command named", f)
	}
	for _, key := range []string{"pg/connect", "maria/connect", "cache/connect", "pg/clock"} {
		if got[key].Status != mayfly.FindingOK {
			t.Errorf("%s: %+v; want ok (the weak admins can log in)", key, got[key])
		}
	}
	// The table names each fix.
	out, _ = w.try("", "doctor", "--config", bad)
	t.Logf("doctor on weak admins:\n%s", out)
	if !strings.Contains(out, "fix: ALTER ROLE") || !strings.Contains(out, "problem(s) in "+bad) {
		t.Errorf("doctor table:\n%s", out)
	}
	if out, err := w.try("", "doctor", "--config", filepath.Join(dir, "missing.yaml")); exitCode(err) != 1 || !strings.Contains(out, "configuration") {
		t.Errorf("doctor on a missing file: exit %d (%v)\n%s; want 1 and the configuration named", exitCode(err), err, out)
	}
}

// pgQueryRow reads one row as the test PostgreSQL admin.
func pgQueryRow(t *testing.T, q string, dest ...any) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.QueryRow(ctx, q).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// mysqlExec runs a statement as the test MySQL admin.
func mysqlExec(t *testing.T, stmt string) {
	t.Helper()
	db, err := sql.Open("mysql", testenv.MySQLDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		testenv.Unavailable(t, "MariaDB/MySQL at "+testenv.MySQLDSN(), err)
	}
}

// TestDoctorSSH: doctor logs in to the host with a probe certificate of
// Mayfly's CA: ok while sshd trusts the CA, a failure naming
// TrustedUserCAKeys once it does not.
func TestDoctorSSH(t *testing.T) {
	g := startSSHGatewayWorld(t)
	doctor := func() doctorReport {
		t.Helper()
		var out, errb strings.Builder
		run(context.Background(), []string{"doctor", "--config", g.cfg, "-o", "json"}, os.Getenv, strings.NewReader(""), &out, &errb)
		var rep doctorReport
		if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
			t.Fatalf("doctor -o json: %v\n%s%s", err, out.String(), errb.String())
		}
		return rep
	}
	find := func(rep doctorReport, check string) mayfly.Finding {
		for _, f := range rep.Findings {
			if f.Target == "web" && f.Check == check {
				return f
			}
		}
		t.Fatalf("no finding web/%s in %+v", check, rep.Findings)
		return mayfly.Finding{}
	}
	rep := doctor()
	if f := find(rep, "trusts the CA"); f.Status != mayfly.FindingOK || !strings.Contains(f.Detail, sshdtest.Login) {
		t.Errorf("trusts the CA: %+v; want ok for principal %s", f, sshdtest.Login)
	}
	if f := find(rep, "connect"); f.Status != mayfly.FindingOK {
		t.Errorf("connect: %+v", f)
	}
	// The host stops trusting the CA.
	other, _ := sshdtest.NewKey(t)
	g.host.Trust(t, []string{sshdtest.Authorized(other)})
	if f := find(doctor(), "trusts the CA"); f.Status != mayfly.FindingFail || !strings.Contains(f.Fix, "TrustedUserCAKeys") {
		t.Errorf("trusts the CA with an untrusting host: %+v; want a failure naming TrustedUserCAKeys", f)
	}
}

// TestDoctorChangesNothing: `mayfly doctor` run before the server's first
// start (as the packages suggest, often as root) checks the targets and
// creates nothing: no store, no state directory, no SSH CA, no recorded
// host key, no revocation list, and on a PostgreSQL store no setting (no
// seal keys made with whatever key doctor was given, no CA). What it
// cannot check yet it says: the SSH host's trust in a CA that does not
// exist yet is a warning.
func TestDoctorChangesNothing(t *testing.T) {
	requirePG(t)
	sshdtest.Need(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	keyFile := filepath.Join(dir, "master.key")
	var out strings.Builder
	if err := run(context.Background(), []string{"seal", "new-key", "--out", keyFile}, os.Getenv, strings.NewReader(""), &out, &out); err != nil {
		t.Fatalf("seal new-key: %v\n%s", err, out.String())
	}
	host := sshdtest.Start(t, nil, filepath.Join(dir, "host.krl"))
	env := map[string]string{"MAYFLY_SSH_CA_PASSPHRASE": "correct horse battery staple"}
	write := func(name, store string) string {
		p := filepath.Join(dir, name)
		cfg := fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s
store: %s
seal: {key_file: %q}
users:
  - {name: alice, groups: [eng], token_sha256: "%064d"}
targets:
  - {name: pg, kind: postgres, dsn: %q, grants: {read: {roles: [pg_read_all_data]}}}
  - {name: web, kind: ssh, address: %q, krl_file: %s, grants: {shell: {principals: [%s]}}}
policies:
  - {name: eng, groups: [eng], targets: [pg, web], grants: ["*"], max_duration: 1h}
`, state, store, keyFile, 1, testenv.PostgresDSN(), host.Addr, filepath.Join(state, "revoked.krl"), sshdtest.Login)
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	w := &world{t: t}
	doctor := func(cfg string) map[string]mayfly.Finding {
		t.Helper()
		out, err := w.tryEnv("", env, "doctor", "--config", cfg, "-o", "json")
		var rep doctorReport
		if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
			t.Fatalf("doctor -o json: %v (%v)\n%s", jerr, err, out)
		}
		if exitCode(err) != 1 || rep.OK {
			t.Errorf("doctor: exit %d, ok=%v; want 1 and not ok (the CA's trust is not checked yet)", exitCode(err), rep.OK)
		}
		got := map[string]mayfly.Finding{}
		for _, f := range rep.Findings {
			got[f.Target+"/"+f.Check] = f
		}
		for key, want := range map[string]string{"web/connect": mayfly.FindingOK, "web/trusts the CA": mayfly.FindingWarn, "pg/connect": mayfly.FindingOK, "pg/create roles": mayfly.FindingOK} {
			if got[key].Status != want {
				t.Errorf("%s: %+v; want %s", key, got[key], want)
			}
		}
		if f := got["web/trusts the CA"]; !strings.Contains(f.Detail, "no SSH CA yet") {
			t.Errorf("web/trusts the CA: %+v; want it to say there is no CA yet", f)
		}
		return got
	}

	// A SQLite store that does not exist yet.
	got := doctor(write("sqlite.yaml", fmt.Sprintf("{sqlite: %s}", filepath.Join(state, "mayfly.db"))))
	if f := got["/store"]; f.Status != mayfly.FindingOK || !strings.Contains(f.Detail, "no store yet") {
		t.Errorf("store: %+v; want ok, saying there is no store yet", f)
	}
	if ents, err := os.ReadDir(state); err == nil || !os.IsNotExist(err) {
		t.Errorf("doctor made the state directory %s (%d entries: %v); it must change nothing", state, len(ents), ents)
	}

	// A PostgreSQL database without the schema: doctor does not make it.
	dsn := pgtest.NewDatabase(t)
	pgCfg := write("pg.yaml", fmt.Sprintf("{postgres: {dsn: %q}}", dsn))
	got = doctor(pgCfg)
	if f := got["/store"]; f.Status != mayfly.FindingOK || !strings.Contains(f.Detail, "no Mayfly schema yet") {
		t.Errorf("store: %+v; want ok, saying the database has no schema yet", f)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	var tables int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	if tables != 0 {
		t.Errorf("doctor created %d tables in the store's database; it must change nothing", tables)
	}

	// With the schema a server made: no setting written (seal keys made
	// with the key doctor was given, the CA, the host key).
	st, err := postgres.Open(context.Background(), dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	doctor(pgCfg)
	if err := st.View(context.Background(), func(tx mayfly.Tx) error {
		s, err := tx.ListSettings("")
		if err == nil && len(s) > 0 {
			keys := slices.Sorted(maps.Keys(s))
			t.Errorf("doctor wrote %d settings to the store (%v); it must change nothing", len(keys), keys)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("doctor made the state directory %s (stat: %v)", state, err)
	}
}

// TestDoctorStoreRights: doctor checks the store itself. An empty
// PostgreSQL database whose role may not create the schema there (as
// PostgreSQL 15 has it for a role that does not own the database) fails,
// naming the GRANT; once granted, it passes, saying the server will make
// the schema, and the database stays empty; with the schema made, the
// store is reported reachable. A wrong password is a failure.
func TestDoctorStoreRights(t *testing.T) {
	requirePG(t)
	ctx := context.Background()
	adminExec(t, `DROP ROLE IF EXISTS mf_doctor_store`)
	adminExec(t, `CREATE ROLE mf_doctor_store LOGIN PASSWORD 'store-pw-1'`)
	t.Cleanup(func() { adminExec(t, `DROP ROLE IF EXISTS mf_doctor_store`) }) // after the database's drop
	dsn := pgtest.NewDatabase(t)
	dir := t.TempDir()
	write := func(name, password string) string {
		u, _ := url.Parse(dsn)
		u.User = url.UserPassword("mf_doctor_store", password)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
store: {postgres: {dsn: %q}}
users:
  - {name: alice, groups: [eng], token_sha256: "%064d"}
`, u.String(), 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	w := &world{t: t}
	store := func(cfg string, wantExit int) mayfly.Finding {
		t.Helper()
		out, err := w.try("", "doctor", "--config", cfg, "-o", "json")
		var rep doctorReport
		if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
			t.Fatalf("doctor -o json: %v (%v)\n%s", jerr, err, out)
		}
		code := 0
		if err != nil {
			code = exitCode(err)
		}
		if code != wantExit {
			t.Errorf("doctor: exit %d (%v); want %d\n%s", code, err, wantExit, out)
		}
		for _, f := range rep.Findings {
			if f.Check == "store" {
				return f
			}
		}
		t.Fatalf("doctor reported nothing of the store:\n%s", out)
		return mayfly.Finding{}
	}
	good := write("good.yaml", "store-pw-1")
	if f := store(good, 1); f.Status != mayfly.FindingFail || !strings.Contains(f.Fix, "GRANT CREATE ON SCHEMA public TO mf_doctor_store") {
		t.Errorf("store whose role may not make the schema: %+v; want a failure naming the GRANT", f)
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "GRANT CREATE ON SCHEMA public TO mf_doctor_store"); err != nil {
		t.Fatal(err)
	}
	if f := store(good, 0); f.Status != mayfly.FindingOK || !strings.Contains(f.Detail, "may create it in schema public") {
		t.Errorf("store whose role may make the schema: %+v; want ok, saying so", f)
	}
	var tables int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil || tables != 0 {
		t.Errorf("doctor left %d tables in the store's database (%v); want none", tables, err)
	}
	u, _ := url.Parse(dsn)
	u.User = url.UserPassword("mf_doctor_store", "store-pw-1")
	st, err := postgres.Open(ctx, u.String(), 2) // a server's first start
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if f := store(good, 0); f.Status != mayfly.FindingOK || !strings.Contains(f.Detail, "reachable, with this build's schema") {
		t.Errorf("store with its schema: %+v; want ok, reachable", f)
	}
	// An upgrade's new build before the server's restart: a warning.
	if _, err := admin.Exec(ctx, "DELETE FROM schema_migrations WHERE version = $1", postgres.SchemaVersion()); err != nil {
		t.Fatal(err)
	}
	if f := store(good, 1); f.Status != mayfly.FindingWarn || !strings.Contains(f.Detail, "older than this build's") {
		t.Errorf("store with an older schema: %+v; want a warning saying so", f)
	}
	if f := store(write("wrong.yaml", "not-the-password"), 1); f.Status != mayfly.FindingFail {
		t.Errorf("store with a wrong password: %+v; want a failure", f)
	}
}
