package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// parseEnvLines reads NAME='value' lines as `mayfly ... -o env` prints them.
func parseEnvLines(t *testing.T, text string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("-o env line %q is not NAME=value", line)
		}
		// Evaluate the quoting as a shell would.
		out, err := exec.Command("sh", "-c", "printf %s "+v).Output()
		if err != nil {
			t.Fatalf("sh cannot read %q: %v", v, err)
		}
		m[k] = string(out)
	}
	return m
}

// TestRequestCredsEnvAndClientCommand: `request --creds -o env` prints a
// credential a script can eval, and it logs in; `creds` prints a client
// command to paste, without the password on it.
func TestRequestCredsEnvAndClientCommand(t *testing.T) {
	w := startWorld(t, worldOpts{})
	out := w.ok("alice", nil, "request", "local-pg/readonly", "--for", "5m", "--reason", "INC-9", "--creds", "-o", "env")
	vars := parseEnvLines(t, out)
	if vars["MAYFLY_REQUEST_STATE"] != "approved" || !strings.HasPrefix(vars["MAYFLY_REQUEST_ID"], "req_") || vars["MAYFLY_PASSWORD"] == "" {
		t.Fatalf("request -o env = %v; want the approved request and its credential", vars)
	}
	port, _ := strconv.Atoi(vars["MAYFLY_PORT"])
	c := credsOut{Username: vars["MAYFLY_USERNAME"], Host: vars["MAYFLY_HOST"], Port: port, Database: vars["MAYFLY_DATABASE"]}
	ctx := context.Background()
	conn, err := pgLogin(ctx, c, vars["MAYFLY_PASSWORD"])
	if err != nil {
		t.Fatalf("login with the -o env credential: %v", err)
	}
	conn.Close(ctx)
	if _, err := pgLogin(ctx, c, vars["MAYFLY_PASSWORD"]+"x"); err == nil {
		t.Fatal("a wrong password logged in")
	}

	// A pending request in -o env says so, and holds no credential.
	out = w.ok("alice", nil, "request", "local-pg/readonly", "--for", "2h", "--reason", "INC-9", "--creds", "-o", "env")
	if vars := parseEnvLines(t, out); vars["MAYFLY_REQUEST_STATE"] != "pending" || vars["MAYFLY_PASSWORD"] != "" {
		t.Errorf("pending request -o env = %v", vars)
	}

	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "5m", "--reason", "INC-9", "-o", "json")
	text := w.ok("alice", nil, "creds", r.ID)
	var user, pass, line string
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(l, "username:"):
			user = strings.TrimSpace(strings.TrimPrefix(l, "username:"))
		case strings.HasPrefix(l, "password:"):
			pass = strings.TrimSpace(strings.TrimPrefix(l, "password:"))
		case strings.HasPrefix(l, "connect:"):
			line = strings.TrimSpace(strings.TrimPrefix(l, "connect:"))
		}
	}
	if !strings.HasPrefix(line, "psql -h '127.0.0.1' -p ") || !strings.Contains(line, "-U '"+user+"'") || strings.Contains(line, pass) {
		t.Fatalf("creds printed connect line %q; want psql with host, port and user, and no password", line)
	}
	if _, err := exec.LookPath("psql"); err != nil {
		testenv.Unavailable(t, "psql (the printed command is run)", err)
	}
	// Run the printed command as a user would paste it, the password typed
	// through PGPASSWORD here.
	cmd := exec.Command("sh", "-c", line+` -Atc "select current_user"`)
	cmd.Env = append(cmd.Environ(), "PGPASSWORD="+pass)
	got, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != user {
		t.Fatalf("pasted %q = %q, %v; want to be logged in as %s", line, got, err, user)
	}
}
