package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestProvisionRefusedByTarget issues a grant whose role does not exist on
// PostgreSQL, in one call (the creation staged while the intent commits)
// and in two (request, then creds): each fails with an error naming the
// grant, the lease ends failed and audited, and no role is left.
func TestProvisionRefusedByTarget(t *testing.T) {
	b := make([]byte, 3)
	rand.Read(b)
	prefix := "mf_pf" + hex.EncodeToString(b) + "_"
	w := startWorld(t, worldOpts{
		prefix: prefix,
		targets: fmt.Sprintf(`  - name: pg-broken
    kind: postgres
    prefix: %s
    dsn: %q
    grants:
      broken: {roles: [mayfly_e2e_no_such_role]}
`, prefix, testenv.PostgresDSN()),
		extraYAML: "  - {name: eng-broken, groups: [eng], targets: [pg-broken], grants: [broken], max_duration: 1h, approvals: 0}\n",
	})

	msg := w.fails("alice", "request", "pg-broken/broken", "--for", "5m", "--reason", "INC-9 staged", "--creds", "-o", "json")
	if !strings.Contains(msg, "broken") || !strings.Contains(msg, "mayfly_e2e_no_such_role") {
		t.Errorf("one-call error = %q; want it to name the grant and the missing role", msg)
	}
	var r reqOut
	w.ok("alice", &r, "request", "pg-broken/broken", "--for", "5m", "--reason", "INC-9 two calls", "-o", "json")
	msg = w.fails("alice", "creds", r.ID, "-o", "json")
	if !strings.Contains(msg, "mayfly_e2e_no_such_role") {
		t.Errorf("creds error = %q; want it to name the missing role", msg)
	}

	var ls []leaseOut
	waitFor(t, "both leases to end failed", 10*time.Second, func() bool {
		w.ok("carol", &ls, "leases", "-o", "json")
		n := 0
		for _, l := range ls {
			if l.Target == "pg-broken" && l.State == "failed" && l.EndReason == "provisioning_failed" {
				n++
			}
		}
		return n == 2
	})
	if n := rolesLike(t, prefix); n != 0 {
		t.Errorf("%d role(s) named %s* exist after refused creations", n, prefix)
	}
	var evs []struct {
		Action  string `json:"action"`
		LeaseID string `json:"lease_id"`
	}
	w.ok("carol", &evs, "audit", "-o", "json")
	failed := map[string]bool{}
	for _, e := range evs {
		if e.Action == "lease.provision_failed" {
			failed[e.LeaseID] = true
		}
		if e.Action == "lease.activate" {
			t.Errorf("lease %s recorded active although its creation was refused", e.LeaseID)
		}
	}
	for _, l := range ls {
		if l.Target == "pg-broken" && !failed[l.ID] {
			t.Errorf("lease %s has no lease.provision_failed event", l.ID)
		}
	}
}
