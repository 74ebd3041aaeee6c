package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// gatewayWorld runs a broker with the PostgreSQL gateway and a target whose
// grant rw is reached only through it.
func gatewayWorld(t *testing.T, extra string) *world {
	t.Helper()
	return gatewayWorldWith(t, extra, "", "")
}

// gatewayWorldWith is gatewayWorld with more keys for the gw policy
// (", idle_timeout: 3s") and more top-level YAML.
func gatewayWorldWith(t *testing.T, extra, policyExtra, moreYAML string) *world {
	t.Helper()
	return startWorld(t, gatewayOpts(t, extra, policyExtra, moreYAML))
}

// gatewayOpts are the world options of gatewayWorldWith (the table it
// queries is made here).
func gatewayOpts(t *testing.T, extra, policyExtra, moreYAML string) worldOpts {
	adminExec(t, `CREATE TABLE IF NOT EXISTS mf_gw_items (id int, v text)`)
	adminExec(t, `TRUNCATE mf_gw_items`)
	return worldOpts{
		targets: fmt.Sprintf(`  - name: gw-pg
    kind: postgres
    prefix: mfgw_
    dsn: %q
    grants:
      rw: {roles: [pg_read_all_data, pg_write_all_data], via: gateway%s}
`, testenv.PostgresDSN(), extra),
		extraYAML: `  - {name: gw, groups: [eng], targets: [gw-pg], grants: [rw], max_duration: 1h, approvals: 0` + policyExtra + `}
gateway:
  postgres: {listen: "127.0.0.1:0"}
` + moreYAML,
	}
}

// gatewayCreds requests gw-pg/rw for alice and returns the credential.
func gatewayCreds(t *testing.T, w *world) credsOut {
	t.Helper()
	var r struct {
		ID          string    `json:"id"`
		Credentials *credsOut `json:"credentials"`
	}
	w.ok("alice", &r, "request", "gw-pg/rw", "--for", "30m", "--reason", "INC-77", "--creds", "-o", "json")
	if r.Credentials == nil {
		t.Fatalf("request --creds returned no credential")
	}
	return *r.Credentials
}

func gwDSN(c credsOut, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(c.Username, password), Host: net.JoinHostPort(c.Host, fmt.Sprint(c.Port)),
		Path: "/" + c.Database, RawQuery: "sslmode=disable&connect_timeout=5"}
	return u.String()
}

// psqlAt runs psql with the credential in its environment.
func psqlAt(t *testing.T, c credsOut, password string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("psql"); err != nil {
		testenv.Unavailable(t, "psql", err)
	}
	cmd := exec.Command("psql", append([]string{"-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"}, args...)...)
	cmd.Env = append(os.Environ(), "PGHOST="+c.Host, fmt.Sprintf("PGPORT=%d", c.Port), "PGUSER="+c.Username,
		"PGPASSWORD="+password, "PGDATABASE="+c.Database, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=5")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, errb.String())
	}
	return out.String(), nil
}

// roleVerifier returns the SCRAM verifier PostgreSQL stores for role.
func roleVerifier(t *testing.T, role string) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v string
	if err := c.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&v); err != nil {
		t.Fatalf("verifier of %s: %v", role, err)
	}
	return v
}

// isPassword reports whether password is the one behind the SCRAM
// verifier v.
func isPassword(t *testing.T, v, password string) bool {
	t.Helper()
	// SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>
	rest := strings.TrimPrefix(v, "SCRAM-SHA-256$")
	params, _, _ := strings.Cut(rest, "$")
	iter, salt64, _ := strings.Cut(params, ":")
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		t.Fatalf("verifier %q: %v", v, err)
	}
	var n int
	fmt.Sscan(iter, &n)
	return postgres.SCRAMVerifier(password, salt, n) == v
}

type gwSession struct {
	ID         string `json:"id"`
	LeaseID    string `json:"lease_id"`
	User       string `json:"user"`
	ClientAddr string `json:"client_addr"`
	EndReason  string `json:"end_reason"`
}

func TestPostgresGateway(t *testing.T) {
	w := gatewayWorld(t, "")
	ctx := context.Background()
	c := gatewayCreds(t, w)
	var leases []leaseOut
	w.ok("alice", &leases, "leases", "--active", "-o", "json")
	if len(leases) != 1 {
		t.Fatalf("active leases = %+v; want 1", leases)
	}
	account := leases[0].Username
	if c.Username != leases[0].ID || c.Username == account {
		t.Errorf("gateway login name = %q; want the lease id %q, not the account %q", c.Username, leases[0].ID, account)
	}

	// What the user received is not the account's password, and does not
	// log in to the target directly, under either name.
	v := roleVerifier(t, account)
	if isPassword(t, v, c.Password) {
		t.Fatal("the gateway credential's password is the target account's own password")
	}
	target := credsOut{Host: "127.0.0.1", Port: 5432, Database: c.Database}
	for _, name := range []string{account, c.Username} {
		target.Username = name
		if conn, err := pgLogin(ctx, target, c.Password); err == nil {
			conn.Close(ctx)
			t.Fatalf("direct login to the target as %s with the gateway secret succeeded", name)
		}
	}

	// psql through the gateway: the secret works, a wrong one is refused.
	out, err := psqlAt(t, c, c.Password, "-c", "SELECT 40 + 2")
	if err != nil || strings.TrimSpace(out) != "42" {
		t.Fatalf("psql through the gateway = %q, %v; want 42", out, err)
	}
	if out, err := psqlAt(t, c, c.Password+"x", "-c", "SELECT 1"); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("psql with a wrong secret = %q, %v; want password authentication failed", out, err)
	}
	if out, err := psqlAt(t, credsOut{Host: c.Host, Port: c.Port, Username: "lease_nope", Database: c.Database}, c.Password, "-c", "SELECT 1"); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("psql with an unknown login = %q, %v; want password authentication failed", out, err)
	}
	// COPY in and out with psql, and a notice passed through.
	cmdIn := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "COPY mf_gw_items FROM STDIN WITH (FORMAT csv)")
	cmdIn.Env = append(os.Environ(), "PGHOST="+c.Host, fmt.Sprintf("PGPORT=%d", c.Port), "PGUSER="+c.Username,
		"PGPASSWORD="+c.Password, "PGDATABASE="+c.Database, "PGSSLMODE=disable")
	cmdIn.Stdin = strings.NewReader("1,one\n2,two\n3,three\n")
	if b, err := cmdIn.CombinedOutput(); err != nil || !strings.Contains(string(b), "COPY 3") {
		t.Fatalf("psql COPY FROM STDIN = %q, %v; want COPY 3", b, err)
	}
	out, err = psqlAt(t, c, c.Password, "-c", "COPY (SELECT id, v FROM mf_gw_items ORDER BY id) TO STDOUT WITH (FORMAT csv)")
	if err != nil || out != "1,one\n2,two\n3,three\n" {
		t.Fatalf("psql COPY TO STDOUT = %q, %v", out, err)
	}
	cmdN := exec.Command("psql", "-X", "-c", "DO $$BEGIN RAISE NOTICE 'hello from %', 'the target'; END$$")
	cmdN.Env = cmdIn.Env
	if b, err := cmdN.CombinedOutput(); err != nil || !strings.Contains(string(b), "NOTICE:  hello from the target") {
		t.Fatalf("notice through the gateway = %q, %v", b, err)
	}

	// pgx: simple and extended protocols, COPY both ways, a long result,
	// a cancel request.
	conn, err := pgx.Connect(ctx, gwDSN(c, c.Password))
	if err != nil {
		t.Fatalf("pgx through the gateway: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM mf_gw_items WHERE v = $1", "two").Scan(&n); err != nil || n != 1 {
		t.Fatalf("extended query = %d, %v; want 1", n, err)
	}
	if err := conn.QueryRow(ctx, "SELECT 7", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 7 {
		t.Fatalf("simple query = %d, %v; want 7", n, err)
	}
	if _, err := conn.Exec(ctx, "SELEC oops"); err == nil {
		t.Fatal("a syntax error went through")
	}
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{"mf_gw_items"}, []string{"id", "v"},
		pgx.CopyFromRows([][]any{{10, "ten"}, {11, "eleven"}}))
	if err != nil || copied != 2 {
		t.Fatalf("pgx CopyFrom = %d, %v; want 2", copied, err)
	}
	var buf bytes.Buffer
	tag, err := conn.PgConn().CopyTo(ctx, &buf, "COPY (SELECT id FROM mf_gw_items WHERE id >= 10 ORDER BY id) TO STDOUT")
	if err != nil || buf.String() != "10\n11\n" || tag.RowsAffected() != 2 {
		t.Fatalf("pgx CopyTo = %q, %v, %v", buf.String(), tag, err)
	}
	rows, err := conn.Query(ctx, "SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for rows.Next() {
		count++
	}
	if rows.Err() != nil || count != 100000 {
		t.Fatalf("long result: %d rows, %v; want 100000", count, rows.Err())
	}
	// A cancel request (to the gateway, with the key it gave) stops
	// pg_sleep on the target, and the connection goes on.
	start := time.Now()
	sleepErr := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "SELECT pg_sleep(30)"); sleepErr <- err }()
	time.Sleep(300 * time.Millisecond)
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatalf("cancel request: %v", err)
	}
	err = <-sleepErr
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" || time.Since(start) > 5*time.Second {
		t.Fatalf("pg_sleep(30) after a cancel request: %v after %v; want cancelled (57014) at once", err, time.Since(start))
	}
	if err := conn.QueryRow(ctx, "SELECT 8").Scan(&n); err != nil || n != 8 {
		t.Fatalf("query after the cancel = %d, %v", n, err)
	}
	conn.Close(ctx)

	// Every statement is in the session log.
	var sessions []gwSession
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.ok("alice", &sessions, "sessions", "--lease", c.Username, "-o", "json")
		ended := 0
		for _, s := range sessions {
			if s.EndReason != "" {
				ended++
			}
		}
		if ended == len(sessions) && len(sessions) >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var texts []string
	var pgxSession sessionShowOut
	for _, s := range sessions {
		if s.User != "alice" || s.LeaseID != c.Username || !strings.HasPrefix(s.ClientAddr, "127.0.0.1:") {
			t.Errorf("session %+v: want alice's, of lease %s, from 127.0.0.1", s, c.Username)
		}
		var show sessionShowOut
		w.ok("alice", &show, "sessions", "show", s.ID, "-o", "json")
		for _, st := range show.Statements {
			texts = append(texts, st.Text)
			if strings.Contains(st.Text, "generate_series") {
				pgxSession = show
			}
		}
		if out := w.ok("alice", nil, "sessions", "verify", s.ID); !strings.Contains(out, "intact") {
			t.Errorf("verify %s: %s", s.ID, out)
		}
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{"SELECT 40 + 2", "COPY mf_gw_items FROM STDIN WITH (FORMAT csv)", "RAISE NOTICE",
		"SELECT count(*) FROM mf_gw_items WHERE v = $1", "SELECT 7", "SELEC oops", `copy "mf_gw_items" ( "id", "v" ) from stdin binary;`,
		"SELECT g, md5(g::text) FROM generate_series(1, 100000) g", "SELECT pg_sleep(30)", "SELECT 8"} {
		if !strings.Contains(all, want) {
			t.Errorf("the session log lacks %q; it has:\n%s", want, all)
		}
	}
	for _, st := range pgxSession.Statements {
		switch {
		case strings.Contains(st.Text, "generate_series") && st.Rows != 100000:
			t.Errorf("long result recorded with %d rows (tag %q); want 100000", st.Rows, st.Tag)
		case strings.Contains(st.Text, "WHERE v = $1") && (len(st.ParamsHMAC) != 1 || st.ParamsHMAC[0] == "two"):
			t.Errorf("bind parameter recorded as %v; want one keyed hash", st.ParamsHMAC)
		case st.Text == "SELEC oops" && !strings.HasPrefix(st.Error, "42601"):
			t.Errorf("syntax error recorded as %q", st.Error)
		case strings.Contains(st.Text, "pg_sleep") && !strings.HasPrefix(st.Error, "57014"):
			t.Errorf("cancelled statement recorded as %q", st.Error)
		}
	}
	var audit []eventOut
	w.ok("carol", &audit, "audit", "--lease", c.Username, "--action", "session.start", "-o", "json")
	if len(audit) != len(sessions) {
		t.Errorf("%d session.start audit events; want %d", len(audit), len(sessions))
	}

	// Revoking the lease drops a live connection within a second.
	conn2, err := pgx.Connect(ctx, gwDSN(c, c.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(ctx)
	if n := gatewayVerifiers(t, w, c.Username); n != 1 {
		t.Fatalf("%d stored verifiers of the live lease's gateway secret; want 1", n)
	}
	w.ok("alice", nil, "done", c.Username)
	revoked := time.Now()
	for {
		_, err := conn2.Exec(ctx, "SELECT 1")
		if err != nil {
			break
		}
		if time.Since(revoked) > time.Second {
			t.Fatal("the gateway connection still works a second after the lease ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := psqlAt(t, c, c.Password, "-c", "SELECT 1"); err == nil {
		t.Fatal("the gateway secret still logs in after the lease ended")
	}
	// The ended lease's verifier is gone from the store, once the
	// revocation is recorded.
	deadline = time.Now().Add(10 * time.Second)
	for gatewayVerifiers(t, w, c.Username) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the verifier of the ended lease's gateway secret is still stored")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gatewayVerifiers counts the gateway-secret verifiers world w's SQLite
// store holds for lease id (read from the file, as another process would).
func gatewayVerifiers(t *testing.T, w *world, id string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(w.dir, "mayfly.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM settings WHERE key = ?`, broker.GatewayVerifierKey(id)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
