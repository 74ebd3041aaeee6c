package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

const extraPolicies = `  - {name: oncall-break-glass, groups: [eng], targets: [local-pg], grants: [readonly], max_duration: 1h, break_glass: {groups: [dba], max_duration: 30m}}
  - {name: contractor, users: [alice], targets: [local-pg], grants: [readonly], max_duration: 48h, steps: [{approvals: 1, approver_groups: [dba]}, {approvals: 1, approver_groups: [admin]}]}
`

func validUntil(t *testing.T, role string) time.Time {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v time.Time
	if err := c.QueryRow(ctx, "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", role).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestExtendStepsBreakGlassAndReport(t *testing.T) {
	w := startWorld(t, worldOpts{extraYAML: extraPolicies})

	// Extension within the policy's total moves VALID UNTIL; beyond it is refused.
	var r reqOut
	var c credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-1", "-o", "json")
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	var l leaseOut
	w.ok("alice", &l, "extend", c.LeaseID, "--for", "20m", "--reason", "still digging", "-o", "json")
	if got := l.ExpiresAt.Sub(c.ExpiresAt); got < 19*time.Minute || got > 21*time.Minute {
		t.Errorf("extension moved expiry by %s; want 20m", got)
	}
	if vu := validUntil(t, c.Username); vu.Sub(l.ExpiresAt).Abs() > time.Second {
		t.Errorf("VALID UNTIL = %s; want the new expiry %s", vu, l.ExpiresAt)
	}
	// Beyond what is automatic, the extension waits for an approver (the
	// 8h policy), then applies on approval.
	var ext reqOut
	w.ok("alice", &ext, "extend", c.LeaseID, "--for", "2h", "--reason", "more", "-o", "json")
	if ext.State != "pending" || ext.ID == "" {
		t.Fatalf("2h extension = %+v; want a pending extension request", ext)
	}
	w.fails("alice", "approve", ext.ID)
	w.fails("alice", "creds", ext.ID)
	w.ok("bob", nil, "approve", ext.ID)
	after := w.lease(c.LeaseID)
	if got := after.ExpiresAt.Sub(l.ExpiresAt); got < 119*time.Minute || got > 121*time.Minute {
		t.Errorf("approved extension moved expiry by %s; want 2h", got)
	}
	if vu := validUntil(t, c.Username); vu.Sub(after.ExpiresAt).Abs() > time.Second {
		t.Errorf("VALID UNTIL = %s; want %s", vu, after.ExpiresAt)
	}
	// Past every policy's total, it is refused outright.
	if msg := w.fails("alice", "extend", c.LeaseID, "--for", "60h", "--reason", "more"); !strings.Contains(msg, "refused") {
		t.Errorf("extension past the maximum total: %q", msg)
	}
	w.fails("bob", "extend", c.LeaseID, "--for", "1m", "--reason", "not mine")

	// Two approval steps, each from its own groups, in order.
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30h", "--reason", "CHG-7 maintenance day", "-o", "json")
	if r.State != "pending" {
		t.Fatalf("30h request = %s; want pending", r.State)
	}
	var got reqOut
	w.ok("bob", &got, "approve", r.ID, "-o", "json") // step 1: dba
	if got.State != "pending" {
		t.Fatalf("after step 1 state = %s; want pending for step 2", got.State)
	}
	w.fails("dave", "approve", r.ID) // dba only; step 2 needs admin
	w.fails("bob", "approve", r.ID)  // one approver counts once
	w.fails("alice", "creds", r.ID)
	w.ok("carol", &got, "approve", r.ID, "-o", "json") // step 2: admin
	if got.State != "approved" {
		t.Fatalf("after step 2 state = %s; want approved", got.State)
	}
	w.ok("alice", nil, "creds", r.ID, "-o", "json")

	// Break-glass: immediate, flagged, reviewed later.
	var bg struct {
		ID          string `json:"id"`
		State       string `json:"state"`
		Credentials *struct {
			LeaseID string `json:"lease_id"`
		} `json:"credentials"`
	}
	w.fails("alice", "request", "local-pg/readonly", "--for", "10m", "--reason", "prod down", "--break-glass")
	w.fails("dave", "request", "local-pg/readonly", "--for", "10m", "--break-glass")
	w.ok("dave", &bg, "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-9 prod down", "--break-glass", "--creds", "-o", "json")
	if bg.State != "approved" || bg.Credentials == nil {
		t.Fatalf("break-glass = %+v; want approved with credentials", bg)
	}
	day := time.Now().UTC().Format("2006-01-02")
	tomorrow := time.Now().UTC().Add(24 * time.Hour).Format("2006-01-02")
	type access struct {
		LeaseID        string   `json:"lease_id"`
		Requester      string   `json:"requester"`
		Target         string   `json:"target"`
		Grant          string   `json:"grant"`
		Reason         string   `json:"reason"`
		Approvers      []string `json:"approvers"`
		StartedAt      string   `json:"started_at"`
		EndedAt        *string  `json:"ended_at"`
		EndReason      string   `json:"end_reason"`
		BreakGlass     bool     `json:"break_glass"`
		ReviewRequired bool     `json:"review_required"`
	}
	var rep struct {
		Leases []access        `json:"leases"`
		Totals json.RawMessage `json:"totals"`
	}
	w.fails("alice", "report", "access", "--from", day, "--to", tomorrow)
	w.ok("carol", &rep, "report", "access", "--from", day, "--to", tomorrow, "-o", "json")
	if len(rep.Leases) != 3 || len(rep.Totals) < 10 {
		t.Fatalf("report has %d leases; want 3 (and totals)", len(rep.Leases))
	}
	var bgRow access
	for _, a := range rep.Leases {
		if a.LeaseID == bg.Credentials.LeaseID {
			bgRow = a
		}
		if a.Requester == "alice" && a.Reason == "CHG-7 maintenance day" && (len(a.Approvers) != 2) {
			t.Errorf("two-step lease approvers = %v; want 2", a.Approvers)
		}
	}
	if !bgRow.BreakGlass || !bgRow.ReviewRequired {
		t.Errorf("break-glass row = %+v; want flagged and awaiting review", bgRow)
	}
	w.fails("dave", "review", bg.Credentials.LeaseID, "--note", "self review")
	w.ok("carol", nil, "review", bg.Credentials.LeaseID, "--note", "checked the session log; justified")
	w.ok("carol", &rep, "report", "access", "--from", day, "--to", tomorrow, "-o", "json")
	for _, a := range rep.Leases {
		if a.LeaseID == bg.Credentials.LeaseID && a.ReviewRequired {
			t.Errorf("break-glass lease still awaits review after the review")
		}
	}
	html := w.ok("carol", nil, "report", "access", "--from", day, "--to", tomorrow, "-o", "html")
	if !strings.Contains(html, "<svg") || strings.Contains(html, "<script") {
		t.Errorf("HTML report lacks inline SVG charts or carries scripts")
	}
	csv := w.ok("carol", nil, "report", "access", "--from", day, "--to", tomorrow, "-o", "csv")
	if n := strings.Count(strings.TrimSpace(csv), "\n"); n != 3 {
		t.Errorf("CSV has %d data rows; want 3", n)
	}
}

func TestPolicyCheckAndTestOffline(t *testing.T) {
	dir := t.TempDir()
	good := `targets:
  - {name: prod-db, kind: postgres, labels: {env: prod}, dsn: "postgres://x@127.0.0.1/db", grants: {readonly: {roles: [pg_read_all_data]}}}
users:
  - {name: alice, groups: [eng], token_sha256: "0000000000000000000000000000000000000000000000000000000000000001"}
policies:
  - {name: dev-logs, groups: [eng], target_labels: {env: prod}, grants: [readonly], max_duration: 1h, reason_pattern: "^(INC|CHG)-[0-9]+"}
tests:
  - {name: short read, user: alice, target: prod-db, grant: readonly, duration: 30m, reason: INC-1, expect: auto, policy: dev-logs}
  - {name: too long, user: alice, target: prod-db, grant: readonly, duration: 3h, reason: INC-1, expect: deny}
  - {name: no ticket, user: alice, target: prod-db, grant: readonly, duration: 30m, reason: because, expect: deny}
`
	p := filepath.Join(dir, "policies.yaml")
	os.WriteFile(p, []byte(good), 0o600)
	w := &world{t: t}
	out := w.ok("", nil, "policy", "check", p)
	if !strings.Contains(out, "OK") {
		t.Errorf("policy check: %q", out)
	}
	out = w.ok("", nil, "policy", "test", p)
	if !strings.Contains(out, "3 passed, 0 failed") {
		t.Errorf("policy test: %q", out)
	}
	bad := strings.Replace(good, "expect: deny}\n  - {name: no ticket", "expect: auto}\n  - {name: no ticket", 1)
	os.WriteFile(p, []byte(bad), 0o600)
	if msg := w.fails("", "policy", "test", p); !strings.Contains(msg, "1 of 3 policy tests failed") {
		t.Errorf("failing policy test: %q", msg)
	}
	broken := strings.Replace(good, `reason_pattern: "^(INC|CHG)-[0-9]+"`, `auto_approve_if: "request.duration <= "`, 1)
	os.WriteFile(p, []byte(broken), 0o600)
	if msg := w.fails("", "policy", "check", p); !strings.Contains(msg, "dev-logs") {
		t.Errorf("broken CEL: %q; want the policy named", msg)
	}
}

func TestPolicyReloadKeepsLastGood(t *testing.T) {
	w := startWorld(t, worldOpts{})
	orig, _ := os.ReadFile(w.cfg)
	broken := strings.Replace(string(orig), "max_duration: 1h, approvals: 0}", "max_duration: 1h, approvals: 0, auto_approve_if: \"request.duration <= \"}", 1)
	os.WriteFile(w.cfg, []byte(broken), 0o600)
	w.fails("alice", "policy", "reload") // not an admin
	if msg := w.fails("carol", "policy", "reload"); !strings.Contains(msg, "mayfly.yaml") || !strings.Contains(msg, "eng-read") {
		t.Errorf("reload of a broken file: %q; want file and policy named", msg)
	}
	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30m", "--reason", "x", "-o", "json")
	if r.State != "approved" {
		t.Errorf("after a refused reload the old policy should still decide: %s", r.State)
	}
	// A valid change takes effect.
	os.WriteFile(w.cfg, []byte(strings.Replace(string(orig), "max_duration: 1h, approvals: 0}", "max_duration: 3h, approvals: 0}", 1)), 0o600)
	w.ok("carol", nil, "policy", "reload")
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2h", "--reason", "x", "-o", "json")
	if r.State != "approved" {
		t.Errorf("after reload a 2h request = %s; want approved by the new eng-read", r.State)
	}
}
