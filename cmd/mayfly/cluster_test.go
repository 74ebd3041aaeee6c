package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mayflyhq/mayfly/internal/cluster"
)

// TestClusterCommand: a running server lists itself with its address,
// version, a fresh heartbeat and the work that runs once (it is the only
// replica, so it leads all of it); /readyz names the same replica; a
// non-admin is refused (exit code 3).
func TestClusterCommand(t *testing.T) {
	w := startWorld(t, worldOpts{})
	want := []string{"audit-sinks", "idle-checker", "lapser", "reconciler", "target-alerts"}
	var st cluster.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = cluster.Status{}
		w.ok("carol", &st, "cluster", "-o", "json")
		if len(st.Replicas) == 1 && !slices.ContainsFunc(want, func(n string) bool { return !slices.Contains(st.Replicas[0].Leads, n) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster status %+v; want one replica leading %v", st, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := st.Replicas[0]
	if r.ID != st.Self || !strings.HasPrefix(r.ID, "rep_") || r.Address != w.addr || r.Version != buildInfo().Version || !r.Alive ||
		time.Since(r.LastSeen) > time.Minute || r.StartedAt.After(r.LastSeen) {
		t.Errorf("replica %+v; want self, address %s, version %s, alive with a fresh heartbeat", r, w.addr, buildInfo().Version)
	}

	resp, err := http.Get("http://" + w.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ready map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&ready); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || ready["replica"] != st.Self {
		t.Errorf("/readyz = %d %v; want 200 naming replica %s", resp.StatusCode, ready, st.Self)
	}

	out := w.ok("carol", nil, "cluster")
	if !strings.Contains(out, st.Self+" (this)") || !strings.Contains(out, "reconciler") {
		t.Errorf("mayfly cluster table:\n%s\nwant this replica and the work it leads", out)
	}
	msg := w.fails("alice", "cluster", "-o", "json")
	if _, err := w.try("alice", "cluster"); exitCode(err) != 3 {
		t.Errorf("mayfly cluster as a non-admin: exit code %d (%s); want 3", exitCode(err), msg)
	}
	if !strings.Contains(msg, "admin") {
		t.Errorf("mayfly cluster as a non-admin: %q; want a refusal naming admins", msg)
	}
}

// singletons is the work a server runs on one replica at a time (without
// notification channels, which these tests configure none of).
var singletons = []string{"audit-sinks", "idle-checker", "lapser", "reconciler", "target-alerts"}

// waitLeaders polls `mayfly cluster` through w until the replicas listed
// are alive, number n, and every singleton is led by exactly one of them;
// it returns the status and which replica leads each singleton.
func waitLeaders(t *testing.T, w *world, n int) (cluster.Status, map[string]string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st cluster.Status
		w.ok("carol", &st, "cluster", "-o", "json")
		leaders := map[string]string{}
		twice := false
		alive := 0
		for _, r := range st.Replicas {
			if r.Alive {
				alive++
			}
			for _, l := range r.Leads {
				if leaders[l] != "" {
					twice = true
				}
				leaders[l] = r.ID
			}
		}
		if twice {
			t.Fatalf("a singleton led by two replicas at once: %+v", st)
		}
		done := alive == n && len(st.Replicas) == n
		for _, name := range singletons {
			done = done && leaders[name] != ""
		}
		if done {
			return st, leaders
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster status after 30s: %+v; want %d alive replicas leading each of %v once", st, n, singletons)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestReplicasCoordinateOnPostgres runs two servers on one PostgreSQL
// store: `mayfly cluster` through either lists both with their addresses
// and each singleton led by exactly one; leases issued through both expire
// and each is revoked exactly once (one lease.revoked event); when the
// replica leading work stops, the other takes all of it over.
func TestReplicasCoordinateOnPostgres(t *testing.T) {
	a, b, _ := twoReplicas(t, worldOpts{})

	st, leaders := waitLeaders(t, b, 2)
	addrs := map[string]string{}
	for _, r := range st.Replicas {
		addrs[r.ID] = r.Address
	}
	if got := []string{addrs[st.Replicas[0].ID], addrs[st.Replicas[1].ID]}; !slices.Contains(got, a.addr) || !slices.Contains(got, b.addr) {
		t.Fatalf("replica addresses %v; want %s and %s", got, a.addr, b.addr)
	}

	// Leases through both servers, expiring together.
	var ids []string
	for i, w := range []*world{a, b, a, b, a, b} {
		var r reqOut
		w.ok("alice", &r, "request", "local-pg/readonly", "--for", "3s", "--reason", "INC-"+string(rune('1'+i))+" replicas", "-o", "json")
		var c credsOut
		w.ok("alice", &c, "creds", r.ID, "-o", "json")
		ids = append(ids, c.LeaseID)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ls []leaseOut
		a.ok("carol", &ls, "leases", "--active", "-o", "json")
		if len(ls) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d leases still active 30s after they expired", len(ls))
		}
		time.Sleep(200 * time.Millisecond)
	}
	var es []struct {
		LeaseID string `json:"lease_id"`
	}
	b.ok("carol", &es, "audit", "--action", "lease.revoked", "-o", "json")
	count := map[string]int{}
	for _, e := range es {
		count[e.LeaseID]++
	}
	for _, id := range ids {
		if count[id] != 1 {
			t.Errorf("lease %s: %d lease.revoked events; want 1", id, count[id])
		}
	}

	// The replica leading the reconciler stops (it releases its leases):
	// the other takes over all the work.
	gone, stay := a, b
	if addrs[leaders["reconciler"]] == b.addr {
		gone, stay = b, a
	}
	gone.stop()
	st, leaders = waitLeaders(t, stay, 1)
	if st.Replicas[0].Address != stay.addr || leaders["reconciler"] != st.Self {
		t.Errorf("after %s stopped: %+v; want %s alone, leading everything", gone.addr, st, stay.addr)
	}
}

// TestAuditStreamAcrossReplicas: a live audit stream through one replica
// shows, within 1 s, an event committed through the other (the stream's
// keepalive, which would also catch it, comes only after 15 s, and the
// replica's safety-net poll every 10 s).
func TestAuditStreamAcrossReplicas(t *testing.T) {
	a, b, dsn := twoReplicas(t, worldOpts{})
	// Nothing on either replica needs other replicas' news yet (no live
	// view, gateway, sink or notification): neither listens.
	if n := listeningSessions(t, dsn); n != 0 {
		t.Fatalf("%d sessions listen for audit notifications before any live view opened; want 0", n)
	}

	req, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+a.addr+"/v1/audit/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.tokens["carol"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("audit stream: %s", resp.Status)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	if l := <-lines; !strings.HasPrefix(l, ": mayfly audit stream") {
		t.Fatalf("stream opened with %q", l)
	}
	// The open stream makes its replica listen.
	waitListening(t, dsn, 1, "with one stream open")

	// The other replica hears of the request by notification
	// (LISTEN/NOTIFY) as it commits, well within the limit; its
	// safety-net poll alone would take up to 10 s.
	var r reqOut
	sent := time.Now()
	b.ok("alice", &r, "request", "local-pg/readonly", "--for", "2h", "--reason", "INC-9 stream across replicas", "-o", "json")
	took := time.Since(sent)
	const within = time.Second
	timeout := time.After(within)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if strings.HasPrefix(l, "data: ") && strings.Contains(l, r.ID) {
				t.Logf("event on the other replica's stream %v after the command was run (it took %v)", time.Since(sent), took)
				return
			}
		case <-timeout:
			t.Fatalf("no event of %s (made through %s) on the stream of %s within %v", r.ID, b.addr, a.addr, within)
		}
	}
}

// waitListening waits until want sessions of the store's database listen
// for audit notifications; while says when, for the failure.
func waitListening(t *testing.T, dsn string, want int, while string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := listeningSessions(t, dsn)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions listen for audit notifications %s; want %d", n, while, want)
		}
	}
}

// listeningSessions counts the sessions of the store's database that
// listen for audit notifications.
func listeningSessions(t *testing.T, dsn string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN mayfly_audit%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
