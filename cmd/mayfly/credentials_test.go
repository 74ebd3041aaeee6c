package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/seal"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// runWith runs a CLI command as user with stdin and returns its stdout.
func (w *world) runWith(user, stdin string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		switch k {
		case "MAYFLY_ADDR":
			return "http://" + w.addr
		case "MAYFLY_TOKEN":
			return w.tokens[user]
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, args, getenv, strings.NewReader(stdin), &out, &errb)
	return out.String() + errb.String(), err
}

// sealedAdminRole creates a dedicated superuser role with a password on
// the test PostgreSQL (never the server's own admin) and returns its DSN.
func sealedAdminRole(t *testing.T) (role, dsn string) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	role = "sealadm_" + hex.EncodeToString(b)
	pw := "Initial-" + hex.EncodeToString(b) + "-pw"
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s'", role, pw)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
		admin.Exec(ctx, "DROP ROLE IF EXISTS "+role)
		admin.Close(ctx)
	})
	u, _ := url.Parse(testenv.PostgresDSN())
	u.User = url.UserPassword(role, pw)
	return role, u.String()
}

func pgCanLogin(ctx context.Context, dsn string) bool {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false
	}
	c.Close(ctx)
	return true
}

// storedCredential reads the sealed credential of target from a stopped
// server's SQLite store with the master key in keyFile.
func storedCredential(t *testing.T, dbPath, keyFile, target string) string {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k, err := seal.LoadKey(seal.Config{KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := seal.Open(ctx, st, k)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ Current string }
	err = st.View(ctx, func(tx mayfly.Tx) error {
		v, err := tx.GetSetting("credential/" + target)
		if err != nil {
			return err
		}
		return json.Unmarshal([]byte(v), &rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := kr.Open("target-credential/"+target, rec.Current)
	if err != nil {
		t.Fatal(err)
	}
	return string(p)
}

// grepStoreFiles fails when any of the store's files (the database, its
// WAL and shared memory) holds one of secrets in its raw bytes.
func grepStoreFiles(t *testing.T, dbPath, when string, secrets ...string) {
	t.Helper()
	n := 0
	for _, p := range []string{dbPath, dbPath + "-wal", dbPath + "-shm"} {
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s: %s holds an admin password in clear", when, filepath.Base(p))
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s: no store file at %s", when, dbPath)
	}
}

// TestSealedCredentialsEndToEnd stores a PostgreSQL target's admin DSN
// sealed through the CLI (the configuration holds no secret), issues
// leases with it, rotates it, and checks that no store file, response,
// log line or audit event holds an admin password; that a wrong master key
// stops the server at start; and that seal rotate-key moves the store to a
// new master key.
func TestSealedCredentialsEndToEnd(t *testing.T) {
	ctx := context.Background()
	requirePG(t)
	role, dsn0 := sealedAdminRole(t)
	u0, _ := url.Parse(dsn0)
	pw0, _ := u0.User.Password()
	keys := t.TempDir()
	keyFile, newKeyFile, wrongKeyFile := filepath.Join(keys, "master.key"), filepath.Join(keys, "new.key"), filepath.Join(keys, "wrong.key")
	for _, f := range []string{keyFile, newKeyFile, wrongKeyFile} {
		var out bytes.Buffer
		if err := run(ctx, []string{"seal", "new-key", "--out", f}, os.Getenv, strings.NewReader(""), &out, &out); err != nil {
			t.Fatalf("seal new-key: %v", err)
		}
	}
	targets := `  - name: sealed-pg
    kind: postgres
    prefix: mfs_
    grants:
      readonly: {roles: [pg_read_all_data]}
`
	extra := fmt.Sprintf(`  - {name: sealed, groups: [eng], targets: [sealed-pg], grants: [readonly], max_duration: 1h, approvals: 0}
seal: {key_file: %q}
`, keyFile)
	w := startWorld(t, worldOpts{targets: targets, extraYAML: extra})
	db := filepath.Join(w.dir, "mayfly.db")

	// Before a credential is stored, the target says what is missing.
	var r reqOut
	w.ok("alice", &r, "request", "sealed-pg/readonly", "--for", "10m", "--reason", "INC-1", "-o", "json")
	if msg := w.fails("alice", "creds", r.ID, "-o", "json"); !strings.Contains(msg, "set-credential sealed-pg") {
		t.Errorf("creds before any credential: %s; want it to point at set-credential", msg)
	}

	// Only admins may store one; the CLI reads it from standard input.
	if out, err := w.runWith("alice", dsn0, "targets", "set-credential", "sealed-pg"); err == nil || mayfly.ErrorCode(err) != mayfly.EFORBIDDEN {
		t.Fatalf("set-credential by a non-admin = %v, %s; want forbidden", err, out)
	}
	out, err := w.runWith("carol", dsn0, "targets", "set-credential", "sealed-pg", "-o", "json")
	if err != nil {
		t.Fatalf("set-credential: %v\n%s\n%s", err, out, tail(w.stderr.String(), 3000))
	}
	if strings.Contains(out, pw0) || !strings.Contains(out, "credential set") {
		t.Fatalf("set-credential answered %s", out)
	}
	if out, err := w.runWith("carol", "", "targets", "set-credential", "sealed-pg"); err == nil {
		t.Errorf("set-credential with nothing on stdin succeeded: %s", out)
	}

	lease := func(reason string) {
		t.Helper()
		var r reqOut
		var c credsOut
		w.ok("alice", &r, "request", "sealed-pg/readonly", "--for", "10m", "--reason", reason, "-o", "json")
		w.ok("alice", &c, "creds", r.ID, "-o", "json")
		conn, err := pgLogin(ctx, c, c.Password)
		if err != nil {
			t.Fatalf("%s: login with the issued credential: %v", reason, err)
		}
		conn.Close(ctx)
		w.ok("alice", nil, "done", r.ID)
	}
	lease("INC-2")

	// Rotation: the old password is refused by the target afterwards, and
	// leases still work.
	out, err = w.runWith("carol", "", "targets", "rotate-credential", "sealed-pg", "-o", "json")
	if err != nil {
		t.Fatalf("rotate-credential: %v\n%s", err, out)
	}
	if !strings.Contains(out, "credential rotated") {
		t.Errorf("rotate-credential answered %s", out)
	}
	if pgCanLogin(ctx, dsn0) {
		t.Error("the admin password from before the rotation still logs in")
	}
	lease("INC-3")
	grepStoreFiles(t, db, "while running", pw0)

	auditOut := w.ok("carol", nil, "audit", "--target", "sealed-pg", "-o", "json")
	for _, a := range []string{"target.credential_set", "target.credential_rotated"} {
		if !strings.Contains(auditOut, a) {
			t.Errorf("audit has no %s event", a)
		}
	}
	w.stop()

	dsn1 := storedCredential(t, db, keyFile, "sealed-pg")
	u1, _ := url.Parse(dsn1)
	pw1, _ := u1.User.Password()
	if pw1 == "" || pw1 == pw0 || u1.User.Username() != role {
		t.Fatalf("stored credential after rotation: user %s, new password %v", u1.User.Username(), pw1 != pw0)
	}
	if !pgCanLogin(ctx, dsn1) {
		t.Fatal("the rotated credential does not log in")
	}
	// doctor checks the target with its sealed credential, as fully as
	// one configured in the file, and shows none of it.
	out, _ = w.try("", "doctor", "--config", w.cfg, "-o", "json")
	var rep doctorReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor -o json: %v\n%s", err, out)
	}
	checks := map[string]string{}
	for _, f := range rep.Findings {
		if f.Target == "sealed-pg" {
			checks[f.Check] = f.Status
		}
	}
	if checks["connect"] != mayfly.FindingOK || checks["create roles"] == "" {
		t.Errorf("doctor's findings of the sealed target: %v; want connect ok and the privilege checks", checks)
	}
	if strings.Contains(out, pw1) {
		t.Error("doctor's report shows the sealed admin password")
	}
	grepStoreFiles(t, db, "after stop", pw0, pw1)
	for _, s := range []string{pw0, pw1} {
		if strings.Contains(w.stderr.String(), s) || strings.Contains(auditOut, s) {
			t.Error("the server log or the audit trail holds an admin password")
		}
	}

	// A wrong master key stops the server at start with a clear error.
	cfg, _ := os.ReadFile(w.cfg)
	writeKey := func(key string) {
		t.Helper()
		if err := os.WriteFile(w.cfg, bytes.ReplaceAll(cfg, []byte(keyFile), []byte(key)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKey(wrongKeyFile)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	var errb bytes.Buffer
	err = run(sctx, []string{"server", "--config", w.cfg}, os.Getenv, strings.NewReader(""), &errb, &errb)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "not the one this store's secrets are sealed with") || !strings.Contains(err.Error(), wrongKeyFile) {
		t.Fatalf("start with a wrong master key = %v; want a clear error naming the key file", err)
	}

	// seal rotate-key moves the store to a new master key in one step.
	writeKey(keyFile)
	var rk bytes.Buffer
	if err := run(ctx, []string{"seal", "rotate-key", "--config", w.cfg, "--new-key-file", newKeyFile, "-o", "json"}, os.Getenv, strings.NewReader(""), &rk, &rk); err != nil {
		t.Fatalf("seal rotate-key: %v\n%s", err, rk.String())
	}
	err = run(ctx, []string{"server", "--config", w.cfg}, os.Getenv, strings.NewReader(""), &errb, &errb)
	if err == nil || !strings.Contains(err.Error(), "not the one") {
		t.Fatalf("start with the key from before rotate-key = %v; want it refused", err)
	}
	writeKey(newKeyFile)
	w.startInProcess()
	lease("INC-4")
	w.stop()
}

// TestCredentialCommandsHelp checks that the new commands answer --help
// with exit status 0 and their own usage.
func TestCredentialCommandsHelp(t *testing.T) {
	for _, args := range [][]string{
		{"targets", "--help"}, {"targets", "set-credential", "--help"}, {"targets", "rotate-credential", "--help"},
		{"seal", "--help"}, {"seal", "new-key", "--help"}, {"seal", "rotate-key", "--help"},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), args, os.Getenv, strings.NewReader(""), &out, &out); err != nil {
			t.Errorf("mayfly %s: %v", strings.Join(args, " "), err)
		}
		want := "mayfly " + args[0]
		if len(args) > 2 {
			want += " " + args[1]
		}
		if !strings.Contains(out.String(), "Usage: "+want) {
			t.Errorf("mayfly %s printed %q; want its usage", strings.Join(args, " "), out.String())
		}
	}
}

// TestCredentialCommandsNameAnUnknownTarget: on a server without a master
// key, a mistyped target is reported as unknown (not_found), not as the
// missing key; a configured one is told what the key is for, and one of a
// kind whose credential is never kept sealed is told its kind.
func TestCredentialCommandsNameAnUnknownTarget(t *testing.T) {
	t.Setenv("MAYFLY_SSH_CA_PASSPHRASE", "correct horse battery staple")
	w := startWorld(t, worldOpts{targets: "  - {name: local-ssh, kind: ssh, address: \"127.0.0.1:2222\", prefix: mfk_, grants: {deploy: {principals: [deploy]}}}\n"})
	for _, c := range []struct {
		stdin string
		args  []string
		code  string
		want  string
	}{
		{"", []string{"targets", "rotate-credential", "nope"}, mayfly.ENOTFOUND, `unknown target "nope"`},
		{testenv.PostgresDSN(), []string{"targets", "set-credential", "nope"}, mayfly.ENOTFOUND, `unknown target "nope"`},
		{"", []string{"targets", "rotate-credential", "local-pg"}, mayfly.EINVALID, "no master key is configured"},
		{testenv.PostgresDSN(), []string{"targets", "set-credential", "local-pg"}, mayfly.EINVALID, "no master key is configured"},
		{"", []string{"targets", "rotate-credential", "local-ssh"}, mayfly.EINVALID, `target "local-ssh" is of kind ssh, whose admin credential Mayfly does not keep sealed (kinds it does: mysql, postgres, redis)`},
		{"secret", []string{"targets", "set-credential", "local-ssh"}, mayfly.EINVALID, `target "local-ssh" is of kind ssh`},
	} {
		out, err := w.runWith("carol", c.stdin, c.args...)
		if mayfly.ErrorCode(err) != c.code || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("mayfly %s = %v, %q; want %s: %s", strings.Join(c.args, " "), err, out, c.code, c.want)
		}
	}
}

// TestSealRotateKeyMakesNoStore: `seal rotate-key` before any server ran on
// the store says there is nothing to rotate and leaves no store behind
// (one made by the command, run as root, would be unreadable to the
// service).
func TestSealRotateKeyMakesNoStore(t *testing.T) {
	dir := t.TempDir()
	keys := []string{filepath.Join(dir, "old.key"), filepath.Join(dir, "new.key")}
	for _, k := range keys {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"seal", "new-key", "--out", k}, os.Getenv, strings.NewReader(""), &out, &out); err != nil {
			t.Fatalf("seal new-key: %v\n%s", err, out.String())
		}
	}
	db := filepath.Join(dir, "state", "mayfly.db")
	cfg := filepath.Join(dir, "mayfly.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
store: {sqlite: %s}
seal: {key_file: %q}
users:
  - {name: alice, groups: [eng], token_sha256: "%064d"}
`, db, keys[0], 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"seal", "rotate-key", "--config", cfg, "--new-key-file", keys[1]}, os.Getenv, strings.NewReader(""), &out, &out)
	if mayfly.ErrorCode(err) != mayfly.EINVALID || !strings.Contains(err.Error(), "nothing to rotate") || !strings.Contains(err.Error(), db) {
		t.Errorf("seal rotate-key without a store = %v; want EINVALID naming %s and saying there is nothing to rotate", err, db)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Errorf("seal rotate-key made the store's directory (stat: %v)", err)
	}
}
