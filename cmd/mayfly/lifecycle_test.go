package main

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

func adminExec(t *testing.T, sql string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestSuspendRevokesEverythingWithin5s(t *testing.T) {
	w := startWorld(t, worldOpts{})
	ctx := context.Background()
	var names []string
	var conns []*pgx.Conn
	for i := 0; i < 3; i++ {
		var r reqOut
		var c credsOut
		w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30m", "--reason", "INC-5", "-o", "json")
		w.ok("alice", &c, "creds", r.ID, "-o", "json")
		names = append(names, c.Username)
		conn, err := pgLogin(ctx, c, c.Password)
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		defer conn.Close(ctx)
		conns = append(conns, conn)
	}
	var pending reqOut
	w.ok("alice", &pending, "request", "local-pg/readonly", "--for", "4h", "--reason", "INC-6", "-o", "json")

	w.fails("alice", "users", "suspend", "bob") // not an admin
	if msg := w.fails("alice", "leases", "--user", "bob"); !strings.Contains(msg, "only admins may list another user's leases") {
		t.Errorf("alice: leases --user bob = %q; want a refusal, not her own leases", msg)
	}
	start := time.Now()
	var res struct {
		Status            string `json:"status"`
		LeasesRevoked     int    `json:"leases_revoked"`
		RequestsCancelled int    `json:"requests_cancelled"`
	}
	w.ok("carol", &res, "users", "suspend", "alice", "--reason", "left the company", "-o", "json")
	if res.Status != "suspended" || res.LeasesRevoked != 3 || res.RequestsCancelled != 1 {
		t.Errorf("suspend = %+v; want 3 leases revoked, 1 request cancelled", res)
	}
	// Her token is refused at once, and she is told why.
	if msg := w.fails("alice", "leases"); !strings.Contains(msg, "user alice is suspended") {
		t.Errorf("suspended user's token: %q", msg)
	}
	waitFor(t, "every account of the suspended user to be gone", 5*time.Second, func() bool {
		for _, n := range names {
			if roleExists(t, n) {
				return false
			}
		}
		return true
	})
	t.Logf("suspension to last account gone: %s", time.Since(start))
	for i, c := range conns {
		if err := c.Ping(ctx); err == nil {
			t.Errorf("session %d survived the suspension", i)
		}
	}
	var ls []leaseOut
	w.ok("carol", &ls, "leases", "-o", "json")
	for _, l := range ls {
		if l.EndReason != "user_suspended" {
			t.Errorf("lease %s end_reason = %q; want user_suspended", l.ID, l.EndReason)
		}
	}
	var users []struct {
		Name   string   `json:"name"`
		Groups []string `json:"groups"`
		Status string   `json:"status"`
	}
	w.ok("carol", &users, "users", "-o", "json")
	found := false
	for _, u := range users {
		if u.Name == "alice" {
			found = true
			if u.Status != "suspended" || len(u.Groups) == 0 {
				t.Errorf("alice = %+v; want suspended with groups", u)
			}
		}
	}
	if !found {
		t.Errorf("users lacks alice: %+v", users)
	}
	w.ok("carol", nil, "users", "resume", "alice")
	w.ok("alice", nil, "leases")
}

func TestReconcileOrphansAndMissing(t *testing.T) {
	w := startWorld(t, worldOpts{prefix: "mfr_"})
	// Made by hand under the prefix: Mayfly did not make it, so it is
	// reported and kept, never removed.
	byHand := "mfr_byhand_" + strings.ToLower(newID())
	adminExec(t, "CREATE ROLE "+byHand+" LOGIN")
	defer adminExec(t, "DROP ROLE IF EXISTS "+byHand)

	var r reqOut
	var gone, kept credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30m", "--reason", "x", "-o", "json")
	w.ok("alice", &gone, "creds", r.ID, "-o", "json")
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30m", "--reason", "x", "-o", "json")
	w.ok("alice", &kept, "creds", r.ID, "-o", "json")
	adminExec(t, "DROP ROLE "+gone.Username) // vanished behind Mayfly's back

	var res struct {
		Target               string   `json:"target"`
		OrphansRemoved       []string `json:"orphans_removed"`
		Unmanaged            []string `json:"unmanaged"`
		LeasesMissing        []string `json:"leases_missing"`
		ProvisioningFinished []string `json:"provisioning_finished"`
	}
	w.fails("alice", "reconcile", "local-pg")
	w.ok("carol", &res, "reconcile", "local-pg", "-o", "json")
	// The account of the live lease is never removed, nor one made by hand.
	if slices.Contains(res.OrphansRemoved, byHand) || slices.Contains(res.OrphansRemoved, kept.Username) {
		t.Errorf("orphans_removed = %v; want neither %s nor %s", res.OrphansRemoved, byHand, kept.Username)
	}
	if !slices.Contains(res.Unmanaged, byHand) {
		t.Errorf("unmanaged = %v; want %s reported", res.Unmanaged, byHand)
	}
	if len(res.LeasesMissing) != 1 || res.LeasesMissing[0] != gone.LeaseID {
		t.Errorf("leases_missing = %v; want [%s]", res.LeasesMissing, gone.LeaseID)
	}
	if res.ProvisioningFinished == nil {
		t.Errorf("provisioning_finished missing from the output")
	}
	if !roleExists(t, byHand) {
		t.Errorf("reconcile removed %s, which Mayfly did not make", byHand)
	}
	if !roleExists(t, kept.Username) {
		t.Errorf("reconcile removed %s, which has a live lease", kept.Username)
	}
	// The vanished lease is revoked through the connector, which succeeds
	// for an absent account.
	waitFor(t, "the vanished lease to be revoked", 10*time.Second, func() bool { return w.lease(gone.LeaseID).State == "revoked" })
	if l := w.lease(gone.LeaseID); l.EndReason != "missing" {
		t.Errorf("vanished lease = %+v; want revoked/missing", l)
	}
	var evs []eventOut
	w.ok("carol", &evs, "audit", "-o", "json", "--action", "account.orphan_removed")
	if len(evs) != len(res.OrphansRemoved) {
		t.Errorf("audit has %d orphan events; want %d", len(evs), len(res.OrphansRemoved))
	}
	// A second pass finds nothing.
	w.ok("carol", &res, "reconcile", "local-pg", "-o", "json")
	if len(res.OrphansRemoved)+len(res.LeasesMissing) != 0 {
		t.Errorf("second reconcile = %+v; want nothing to do", res)
	}
}

func TestInventoryShowsStandingAccounts(t *testing.T) {
	w := startWorld(t, worldOpts{})
	var r reqOut
	var c credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "5m", "--reason", "x", "-o", "json")
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	var inv []struct {
		Name      string `json:"name"`
		CanLogin  bool   `json:"can_login"`
		Superuser bool   `json:"superuser"`
		Managed   bool   `json:"managed"`
	}
	w.fails("alice", "inventory", "local-pg")
	w.ok("carol", &inv, "inventory", "local-pg", "-o", "json")
	var sawAdmin, sawLease bool
	for _, a := range inv {
		if a.Name == "postgres" {
			sawAdmin = a.Superuser && a.CanLogin && !a.Managed
		}
		if a.Name == c.Username {
			sawLease = a.Managed && a.CanLogin && !a.Superuser
		}
	}
	if !sawAdmin || !sawLease {
		t.Errorf("inventory: postgres as unmanaged superuser = %v, lease account as managed = %v", sawAdmin, sawLease)
	}
	// The standing-privilege report puts both side by side.
	var st []struct {
		Target    string `json:"target"`
		Unmanaged []struct {
			Name      string `json:"name"`
			Superuser bool   `json:"superuser"`
		} `json:"unmanaged"`
		Managed []struct {
			ID string `json:"id"`
		} `json:"managed"`
	}
	w.fails("alice", "report", "standing")
	w.ok("carol", &st, "report", "standing", "-o", "json")
	if len(st) != 1 || len(st[0].Managed) != 1 || st[0].Managed[0].ID != c.LeaseID {
		t.Fatalf("standing report = %+v; want the live lease", st)
	}
	found := false
	for _, a := range st[0].Unmanaged {
		found = found || (a.Name == "postgres" && a.Superuser)
	}
	if !found {
		t.Errorf("standing report lacks the postgres superuser")
	}
	if out := w.ok("carol", nil, "report", "standing"); !strings.Contains(out, "standing") {
		t.Errorf("table output: %q", out)
	}
}

func TestMetricsFollowTheLifecycle(t *testing.T) {
	w := startWorld(t, worldOpts{})
	scrape := func() string {
		resp, err := http.Get("http://" + w.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("/metrics = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return string(b)
	}
	before := scrape()
	for _, m := range []string{"mayfly_leases_active", "mayfly_revocation_lag_seconds_bucket", "mayfly_revocation_failures_total"} {
		if !strings.Contains(before, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	var r reqOut
	var c credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2s", "--reason", "x", "-o", "json")
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	if m := scrape(); !strings.Contains(m, `mayfly_leases_active{grant="readonly",target="local-pg"} 1`) {
		t.Errorf("after activation, /metrics lacks an active lease:\n%s", grep(m, "mayfly_leases_active"))
	}
	waitFor(t, "expiry", 10*time.Second, func() bool { return w.lease(c.LeaseID).State == "revoked" })
	after := scrape()
	if !strings.Contains(after, "mayfly_revocation_lag_seconds_count 1") {
		t.Errorf("after expiry the lag histogram has no sample:\n%s", grep(after, "mayfly_revocation_lag"))
	}
	if !strings.Contains(after, `mayfly_requests_total{decision="auto"} 1`) {
		t.Errorf("requests counter:\n%s", grep(after, "mayfly_requests_total"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func newID() string {
	tok, _ := newToken()
	return strings.NewReplacer("-", "", "_", "").Replace(tok)[4:12]
}

func TestIdleTimeout(t *testing.T) {
	w := startWorld(t, worldOpts{engRead: ", idle_timeout: 3s", extraYAML: "reconcile: {idle_interval: 500ms}\n"})
	ctx := context.Background()
	var r reqOut
	var unused, used credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30m", "--reason", "x", "-o", "json")
	w.ok("alice", &unused, "creds", r.ID, "-o", "json")
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30m", "--reason", "x", "-o", "json")
	w.ok("alice", &used, "creds", r.ID, "-o", "json")
	conn, err := pgLogin(ctx, used, used.Password)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the never-used credential to be revoked as idle", 8*time.Second, func() bool { return w.lease(unused.LeaseID).State == "revoked" })
	if l := w.lease(unused.LeaseID); l.EndReason != "idle" {
		t.Errorf("unused lease end_reason = %q; want idle", l.EndReason)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("revoked after %s; the idle timeout is 3s", d)
	}
	// The lease with a live session survives well past the timeout.
	time.Sleep(4 * time.Second)
	if l := w.lease(used.LeaseID); l.State != "active" {
		t.Fatalf("lease in use was revoked: %+v", l)
	}
	conn.Close(ctx)
	waitFor(t, "the lease to be revoked once its session closed", 10*time.Second, func() bool { return w.lease(used.LeaseID).State == "revoked" })
	if roleExists(t, used.Username) || roleExists(t, unused.Username) {
		t.Errorf("idle accounts still exist")
	}
}
