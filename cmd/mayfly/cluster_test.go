package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/cluster"
)

// TestClusterCommand: a running server lists itself with its address,
// version, a fresh heartbeat and the work that runs once (it is the only
// replica, so it leads all of it); /readyz names the same replica; a
// non-admin is refused (exit code 3).
func TestClusterCommand(t *testing.T) {
	w := startWorld(t, worldOpts{})
	want := []string{"audit-sinks", "idle-checker", "lapser", "reconciler"}
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
	if r.ID != st.Self || !strings.HasPrefix(r.ID, "rep_") || r.Address != w.addr || r.Version != version || !r.Alive ||
		time.Since(r.LastSeen) > time.Minute || r.StartedAt.After(r.LastSeen) {
		t.Errorf("replica %+v; want self, address %s, version %s, alive with a fresh heartbeat", r, w.addr, version)
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
