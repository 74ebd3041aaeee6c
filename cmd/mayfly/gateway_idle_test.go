package main

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// Idle time of leases via a gateway is measured at the gateway: a client
// that keeps working keeps its lease past idle_timeout; one that stays
// connected but does nothing loses it, and its connection, soon after.

const idleYAML = "reconcile: {idle_interval: 500ms}\n"

// leaseState returns alice's lease id as the API reports it.
func leaseState(t *testing.T, w *world, id string) leaseOut {
	t.Helper()
	var ls []leaseOut
	w.ok("alice", &ls, "leases", "-o", "json")
	for _, l := range ls {
		if l.ID == id {
			return l
		}
	}
	t.Fatalf("lease %s not listed", id)
	return leaseOut{}
}

func TestPostgresGatewayIdleTimeout(t *testing.T) {
	w := gatewayWorldWith(t, "", ", idle_timeout: 3s", idleYAML)
	c := gatewayCreds(t, w)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, gwDSN(c, c.Password))
	if err != nil {
		t.Fatalf("connect through the gateway: %v", err)
	}
	defer conn.Close(ctx)
	idleFrom := busyThenSilent(t, w, c, conn)
	if time.Since(idleFrom) < 3*time.Second {
		t.Errorf("revoked %s after the last query; want no sooner than idle_timeout (3s)", time.Since(idleFrom))
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var n int
	if err := conn.QueryRow(qctx, "SELECT 1").Scan(&n); err == nil {
		t.Errorf("the idle lease's connection still answers")
	}
	if _, err := pgx.Connect(ctx, gwDSN(c, c.Password)); err == nil {
		t.Errorf("the idle lease's gateway secret still logs in")
	}
}

func TestSSHGatewayIdleTimeout(t *testing.T) {
	g := startSSHGatewayWorldWith(t, ", idle_timeout: 3s", idleYAML)
	c, opts := g.issue("tunnel")
	cmd := exec.Command("ssh", append(append([]string{"-tt"}, opts...), c.Username+"@"+c.Host)...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	tm := startPTY(t, cmd)
	tm.send("echo ready-$((6*7))\n")
	tm.expect("ready-42", 15*time.Second)

	// Typing for twice the idle timeout: the lease stays.
	i := 0
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(400 * time.Millisecond) {
		i++
		tm.send("echo tick\n")
	}
	tm.send("echo last-$((i=1+1))\n")
	tm.expect("last-2", 5*time.Second)
	if l := leaseState(t, g.world, c.LeaseID); l.State != "active" {
		t.Fatalf("busy lease is %s (%s); want active", l.State, l.EndReason)
	}

	// Connected and silent: revoked as idle, the session ended.
	idleFrom := time.Now()
	select {
	case <-tm.eof:
	case <-time.After(15 * time.Second):
		t.Fatalf("the silent session is still open after %s (lease %+v)", time.Since(idleFrom), leaseState(t, g.world, c.LeaseID))
	}
	took := time.Since(idleFrom)
	t.Logf("session closed %s after the last keystroke (idle_timeout 3s, checked every 500ms)", took.Round(100*time.Millisecond))
	if took < 3*time.Second {
		t.Errorf("closed %s after the last keystroke; want no sooner than idle_timeout (3s)", took)
	}
	// The session closes when revocation starts; the account goes next.
	l := leaseState(t, g.world, c.LeaseID)
	for end := time.Now().Add(10 * time.Second); l.State != "revoked" && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		l = leaseState(t, g.world, c.LeaseID)
	}
	if l.State != "revoked" || l.EndReason != "idle" {
		t.Errorf("lease %s (%s); want revoked as idle", l.State, l.EndReason)
	}
	if _, reason := g.endedSession(c.LeaseID); !strings.Contains(reason, "revok") && !strings.Contains(reason, "idle") {
		t.Errorf("session end reason %q; want the lease's revocation", reason)
	}
	if out, err := exec.Command("ssh", append(opts, c.Username+"@"+c.Host, "true")...).CombinedOutput(); err == nil {
		t.Errorf("the idle lease's certificate still gets in: %s", out)
	}
}

// TestGatewayIdleAcrossReplicas: the idle check runs on one replica; a
// lease used through the gateway of another stays while busy (its
// activity reaches the checker through the store) and ends once silent.
func TestGatewayIdleAcrossReplicas(t *testing.T) {
	a, b, dsn := twoReplicas(t, gatewayOpts(t, "", ", idle_timeout: 3s", idleYAML))
	st, leaders := waitLeaders(t, b, 2)
	// A replica with a gateway listens for the others' commits for good:
	// a lease revoked elsewhere closes its connections at once.
	waitListening(t, dsn, 2, "with a gateway on each of two replicas")
	addrs := map[string]string{}
	for _, r := range st.Replicas {
		addrs[r.ID] = r.Address
	}
	// Through the replica that does not run the idle check.
	w := a
	if addrs[leaders["idle-checker"]] == a.addr {
		w = b
	}
	t.Logf("idle check on %s; the lease is used through %s", addrs[leaders["idle-checker"]], w.addr)
	c := gatewayCreds(t, w)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, gwDSN(c, c.Password))
	if err != nil {
		t.Fatalf("connect through the gateway: %v", err)
	}
	defer conn.Close(ctx)
	busyThenSilent(t, w, c, conn)
}

// busyThenSilent queries through conn every 0.4 s for twice the idle
// timeout (3 s) and checks the lease stays active; then, the connection
// silent, waits for the lease to be revoked as idle. It returns when the
// silence began.
func busyThenSilent(t *testing.T, w *world, c credsOut, conn *pgx.Conn) time.Time {
	t.Helper()
	ctx := context.Background()
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(400 * time.Millisecond) {
		var n int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
			t.Fatalf("query while busy: %v (lease %+v)", err, leaseState(t, w, c.LeaseID))
		}
	}
	if l := leaseState(t, w, c.LeaseID); l.State != "active" {
		t.Fatalf("busy lease is %s (%s); want active", l.State, l.EndReason)
	}
	idleFrom := time.Now()
	for l := leaseState(t, w, c.LeaseID); l.State != "revoked"; l = leaseState(t, w, c.LeaseID) {
		if time.Since(idleFrom) > 15*time.Second {
			t.Fatalf("silent lease still %s after %s", l.State, time.Since(idleFrom))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if l := leaseState(t, w, c.LeaseID); l.EndReason != "idle" {
		t.Fatalf("lease ended %q; want idle", l.EndReason)
	}
	t.Logf("revoked as idle %s after the last query (idle_timeout 3s, checked every 500ms)", time.Since(idleFrom).Round(100*time.Millisecond))
	// The revocation, wherever it ran, ended the live connection.
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var n int
	if err := conn.QueryRow(qctx, "SELECT 1").Scan(&n); err == nil {
		t.Errorf("the connection through the gateway still answers after the lease was revoked")
	} else if qctx.Err() != nil {
		t.Errorf("a query on the revoked lease's connection hung: %v", err)
	}
	return idleFrom
}

// TestConnectThroughPostgresGateway: `mayfly connect` on a grant via the
// gateway runs psql against the gateway with the gateway secret, the
// statement lands in the session log, and the lease ends with psql.
func TestConnectThroughPostgresGateway(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		testenv.Unavailable(t, "psql", err)
	}
	w := gatewayWorld(t, "")
	bin := buildBinary(t)
	cmd := exec.Command(bin, "connect", "gw-pg/rw", "--for", "10m", "--reason", "INC-15 connect", "--",
		"psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", "SELECT 'via-' || 'gateway', current_setting('port')")
	cmd.Env = append(os.Environ(), "MAYFLY_ADDR=http://"+w.addr, "MAYFLY_TOKEN="+w.tokens["alice"])
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "via-gateway|5432") {
		t.Fatalf("mayfly connect -- psql: %v\n%s", err, out)
	}
	var ls []leaseOut
	w.ok("alice", &ls, "leases", "-o", "json")
	if len(ls) != 1 || ls[0].State != "revoked" || ls[0].EndReason != "done" {
		t.Fatalf("leases after connect: %+v; want one, ended when psql exited", ls)
	}
	var ss []struct {
		ID string `json:"id"`
	}
	w.ok("alice", &ss, "sessions", "--lease", ls[0].ID, "-o", "json")
	if len(ss) != 1 {
		t.Fatalf("sessions of the lease: %+v; want one (psql went through the gateway)", ss)
	}
	var show struct {
		Statements []struct {
			Text string `json:"text"`
		} `json:"statements"`
	}
	w.ok("alice", &show, "sessions", "show", ss[0].ID, "-o", "json")
	if !slices.ContainsFunc(show.Statements, func(s struct {
		Text string `json:"text"`
	}) bool {
		return strings.Contains(s.Text, "'via-' || 'gateway'")
	}) {
		t.Errorf("session statements %+v; want psql's query recorded", show.Statements)
	}
}
