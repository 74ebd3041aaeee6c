package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// code runs a CLI command as user that must fail, and returns its exit
// code and message.
func (w *world) code(user string, args ...string) (int, string) {
	w.t.Helper()
	out, err := w.try(user, args...)
	if err == nil {
		w.t.Fatalf("mayfly %s (as %s) succeeded; want an error\n%s", strings.Join(args, " "), user, out)
	}
	return exitCode(err), err.Error()
}

// request returns request id as user sees it in `requests -o json`.
func (w *world) request(user, id string) map[string]any {
	w.t.Helper()
	var rs []map[string]any
	w.ok(user, &rs, "requests", "-o", "json")
	for _, r := range rs {
		if r["id"] == id {
			return r
		}
	}
	w.t.Fatalf("request %s not in %s's list", id, user)
	return nil
}

// post sends an API request as user and returns the status and the
// decoded body.
func (w *world) post(user, path string, body any) (int, map[string]any) {
	w.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest("POST", "http://"+w.addr+path, rd)
	req.Header.Set("Authorization", "Bearer "+w.tokens[user])
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// A pending extension of a lease that has ended cannot be approved: the
// approval fails with a conflict, and the request ends up cancelled with
// the reason, never approved. Extensions are labelled in `requests`.
func TestExtensionOfEndedLease(t *testing.T) {
	w := startWorld(t, worldOpts{})
	var r reqOut
	var c credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-1", "-o", "json")
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	var ext reqOut
	w.ok("alice", &ext, "extend", c.LeaseID, "--for", "2h", "--reason", "more", "-o", "json")
	if ext.State != "pending" {
		t.Fatalf("2h extension = %+v; want pending", ext)
	}
	if got := w.request("bob", ext.ID)["kind"]; got != "extension" {
		t.Errorf("extension request kind = %v; want extension", got)
	}
	table := w.ok("bob", nil, "requests", "--pending")
	if !strings.Contains(grep(table, ext.ID), "extend "+c.LeaseID) {
		t.Errorf("`requests --pending` does not label the extension:\n%s", table)
	}
	w.ok("carol", nil, "revoke", c.LeaseID, "--reason", "done with it")

	code, msg := w.code("bob", "approve", ext.ID)
	if code != 4 {
		t.Errorf("approving the extension of a revoked lease: exit %d (%s); want 4", code, msg)
	}
	got := w.request("alice", ext.ID)
	if why, _ := got["decision_reason"].(string); got["state"] != "cancelled" || !strings.Contains(why, "revoked") {
		t.Errorf("extension request after its lease ended = %v (%q); want cancelled, saying the lease was revoked", got["state"], why)
	}
	if l := w.lease(c.LeaseID); l.State != "revoked" {
		t.Errorf("lease = %s; want revoked", l.State)
	}
	// Nothing is left for anyone to decide.
	if out := w.ok("bob", nil, "requests", "--pending"); strings.Contains(out, ext.ID) {
		t.Errorf("the void extension is still pending:\n%s", out)
	}
}

// Deny and cancel each do one thing: a deny needs a reason (over HTTP as
// well) and is an approver's; cancel is the requester's.
func TestDenyAndCancelAreSeparate(t *testing.T) {
	w := startWorld(t, worldOpts{})
	ask := func() string {
		var r reqOut
		w.ok("alice", &r, "request", "local-pg/readonly", "--for", "4h", "--reason", "INC-2", "-o", "json")
		if r.State != "pending" {
			t.Fatalf("4h request = %s; want pending", r.State)
		}
		return r.ID
	}
	id := ask()
	for _, body := range []any{nil, map[string]string{"reason": ""}, map[string]string{"reason": "  "}} {
		status, m := w.post("bob", "/v1/requests/"+id+"/deny", body)
		if status != 400 || errCode(m) != "invalid" {
			t.Errorf("deny with body %v = %d %v; want 400 invalid", body, status, m)
		}
	}
	if code, msg := w.code("bob", "cancel", id); code != 3 {
		t.Errorf("an approver's cancel of someone else's request: exit %d (%s); want 3", code, msg)
	}
	if code, msg := w.code("alice", "deny", id, "--reason", "never mind"); code != 3 || !strings.Contains(msg, "cancel") {
		t.Errorf("the requester's deny: exit %d (%s); want 3, pointing to cancel", code, msg)
	}
	if got := w.request("alice", id); got["state"] != "pending" {
		t.Fatalf("after refused verbs the request is %v; want pending", got["state"])
	}
	w.ok("alice", nil, "cancel", id, "--reason", "not needed")
	if got := w.request("alice", id); got["state"] != "cancelled" || got["decider"] != "alice" {
		t.Errorf("cancelled request = %v by %v; want cancelled by alice", got["state"], got["decider"])
	}

	id = ask()
	w.ok("bob", nil, "deny", id, "--reason", "use the replica")
	if got := w.request("alice", id); got["state"] != "denied" || got["decision_reason"] != "use the replica" {
		t.Errorf("denied request = %v (%v); want denied with the reason", got["state"], got["decision_reason"])
	}
}

// An approver who cannot approve now is told why, not "not found".
func TestApproverToldWhatIsWrong(t *testing.T) {
	w := startWorld(t, worldOpts{extraYAML: extraPolicies})
	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30h", "--reason", "CHG-7", "-o", "json")
	w.ok("bob", nil, "approve", r.ID) // step 1 of 2: dba
	code, msg := w.code("bob", "approve", r.ID)
	if code != 4 || !strings.Contains(msg, "already approved") || strings.Contains(msg, "not found") {
		t.Errorf("second approval by bob: exit %d, %q; want 4 saying he already approved", code, msg)
	}
	code, msg = w.code("dave", "approve", r.ID)
	if code != 3 || !strings.Contains(msg, "not an eligible approver") || !strings.Contains(msg, "step 2 of 2") || !strings.Contains(msg, "admin") {
		t.Errorf("approval by dave (dba) at the admin step: exit %d, %q; want 3 naming step 2 and its groups", code, msg)
	}
	if code, msg := w.code("dave", "deny", r.ID, "--reason", "no"); code != 3 || strings.Contains(msg, "not found") {
		t.Errorf("deny by dave at the admin step: exit %d, %q; want 3 saying why", code, msg)
	}
	w.ok("carol", nil, "approve", r.ID)
}

// Break-glass access is labelled in `leases` and `requests`, and the
// report does not count it as an automatic approval.
func TestBreakGlassVisible(t *testing.T) {
	w := startWorld(t, worldOpts{extraYAML: extraPolicies})
	var bg struct {
		ID          string `json:"id"`
		Kind        string `json:"kind"`
		Credentials *struct {
			LeaseID string `json:"lease_id"`
		} `json:"credentials"`
	}
	w.ok("dave", &bg, "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-9 prod down", "--break-glass", "--creds", "-o", "json")
	if bg.Credentials == nil {
		t.Fatalf("break-glass gave no credentials")
	}
	if bg.Kind != "break_glass" {
		t.Errorf("break-glass request kind = %q; want break_glass", bg.Kind)
	}
	if row := grep(w.ok("carol", nil, "leases"), bg.Credentials.LeaseID); !strings.Contains(row, "BREAK-GLASS") {
		t.Errorf("`leases` row of the break-glass lease is not labelled: %q", row)
	}
	if row := grep(w.ok("dave", nil, "requests"), bg.ID); !strings.Contains(row, "BREAK-GLASS") {
		t.Errorf("`requests` row of the break-glass request is not labelled: %q", row)
	}
	var ls []struct {
		ID         string `json:"id"`
		BreakGlass bool   `json:"break_glass"`
	}
	w.ok("dave", &ls, "leases", "-o", "json")
	if len(ls) != 1 || !ls[0].BreakGlass {
		t.Errorf("leases -o json = %+v; want the lease marked break_glass", ls)
	}
	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "10m", "--reason", "routine", "-o", "json")
	w.ok("alice", nil, "creds", r.ID, "-o", "json")

	day := time.Now().UTC().Format("2006-01-02")
	tomorrow := time.Now().UTC().Add(24 * time.Hour).Format("2006-01-02")
	var rep struct {
		Leases []struct {
			LeaseID      string `json:"lease_id"`
			BreakGlass   bool   `json:"break_glass"`
			AutoApproved bool   `json:"auto_approved"`
		} `json:"leases"`
		Totals struct {
			AutoApprovedShare float64 `json:"auto_approved_share"`
			BreakGlass        int     `json:"break_glass"`
		} `json:"totals"`
	}
	w.ok("carol", &rep, "report", "access", "--from", day, "--to", tomorrow, "-o", "json")
	for _, a := range rep.Leases {
		if a.LeaseID == bg.Credentials.LeaseID && (!a.BreakGlass || a.AutoApproved) {
			t.Errorf("report row of the break-glass lease = %+v; want break_glass and not auto_approved", a)
		}
	}
	if rep.Totals.AutoApprovedShare != 0.5 || rep.Totals.BreakGlass != 1 {
		t.Errorf("totals = %+v; want auto-approved share 0.5 and 1 break-glass", rep.Totals)
	}

	// The HTML report the CLI renders draws the leases of the day.
	html := w.ok("carol", nil, "report", "access", "--from", day, "--to", tomorrow, "-o", "html")
	if strings.Contains(html, "No leases in this window") || !strings.Contains(html, day+" · local-pg: 2") {
		t.Errorf("HTML report: the leases-per-day chart lacks today's 2 leases")
	}
}

// Control characters in a reason are refused everywhere a reason is
// given, so nobody can forge a line on an approver's terminal.
func TestControlCharactersRefused(t *testing.T) {
	w := startWorld(t, worldOpts{})
	forged := "INC-3\r\x1b[2Kreq_forged  carol  local-pg/readonly  approved\a"
	if code, msg := w.code("alice", "request", "local-pg/readonly", "--for", "4h", "--reason", forged); code != 2 {
		t.Errorf("request with control characters: exit %d (%s); want 2", code, msg)
	}
	var r reqOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "4h", "--reason", "INC-3", "-o", "json")
	if code, msg := w.code("bob", "deny", r.ID, "--reason", "no\x1b]0;pwned\a"); code != 2 {
		t.Errorf("deny with control characters: exit %d (%s); want 2", code, msg)
	}
	if code, msg := w.code("bob", "approve", r.ID, "--reason", "ok\rforged"); code != 2 {
		t.Errorf("approve with control characters: exit %d (%s); want 2", code, msg)
	}
	if code, msg := w.code("alice", "cancel", r.ID, "--reason", "x\x1bc"); code != 2 {
		t.Errorf("cancel with control characters: exit %d (%s); want 2", code, msg)
	}
	if out := w.ok("bob", nil, "requests", "--pending"); strings.ContainsAny(out, "\r\x1b\a") {
		t.Errorf("requests --pending printed control characters: %q", out)
	}
}

// A reload applies what it can and names what needs a restart, such as
// changed notification channels.
func TestReloadNamesWhatNeedsRestart(t *testing.T) {
	w := startWorld(t, worldOpts{})
	orig, _ := os.ReadFile(w.cfg)
	out := w.ok("carol", nil, "policy", "reload")
	if strings.Contains(out, "restart") {
		t.Errorf("reload of an unchanged file: %q; want nothing to restart", out)
	}
	withHook := string(orig) + `notifications:
  channels:
    - {name: ops-hook, type: webhook, url: "http://127.0.0.1:9/hook", secret_env: MAYFLY_TEST_HOOK_SECRET}
`
	if err := os.WriteFile(w.cfg, []byte(withHook), 0o600); err != nil {
		t.Fatal(err)
	}
	out = w.ok("carol", nil, "policy", "reload")
	if !strings.Contains(out, "notification channels added: ops-hook") || !strings.Contains(out, "restart") {
		t.Errorf("reload with a new notification channel: %q; want it named as needing a restart", out)
	}
}

// policy check warns about an approver group no user is in.
func TestPolicyCheckWarnsAboutEmptyApproverGroups(t *testing.T) {
	p := filepath.Join(t.TempDir(), "policies.yaml")
	os.WriteFile(p, []byte(`targets:
  - {name: db, kind: postgres, dsn: "postgres://x@127.0.0.1/db", grants: {readonly: {roles: [pg_read_all_data]}}}
users:
  - {name: alice, groups: [eng], token_sha256: "0000000000000000000000000000000000000000000000000000000000000001"}
  - {name: bob, groups: [dba], token_sha256: "0000000000000000000000000000000000000000000000000000000000000002"}
policies:
  - {name: good, groups: [eng], targets: [db], grants: [readonly], max_duration: 8h, approvals: 1, approver_groups: [dba]}
  - {name: typo, groups: [eng], targets: [db], grants: [readonly], max_duration: 24h, approvals: 1, approver_groups: [dbas]}
`), 0o600)
	w := &world{t: t}
	out := w.ok("", nil, "policy", "check", p)
	if !strings.Contains(out, `approver group "dbas" has no member`) || strings.Contains(out, `"dba" has`) || !strings.Contains(out, "1 warning") {
		t.Errorf("policy check: %q; want one warning about dbas", out)
	}
}
