package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// A report read back from its JSON (as the CLI does) draws the same
// per-day chart as the original.
func TestHTMLFromDecodedJSONKeepsDailyChart(t *testing.T) {
	f := newFixture(day0, day1.AddDate(0, 0, 1), day1,
		spec{id: "l1", user: "ann", target: "pg", reason: "x", start: day0.Add(time.Hour), dur: time.Hour, auto: true})
	var js bytes.Buffer
	if err := Build(f.in).WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(js.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	var html bytes.Buffer
	if err := r.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Count(html.String(), "No leases in this window"), 0; got != want {
		t.Errorf("HTML of the decoded report says %d times there are no leases; want %d", got, want)
	}
	if !strings.Contains(html.String(), "2025-03-01 · pg: 1") {
		t.Errorf("HTML of the decoded report lacks the per-day bar of 2025-03-01")
	}
}

// Break-glass access is counted as break-glass, not as an automatic
// approval, and extensions are listed with who approved them.
func TestBreakGlassAndExtensions(t *testing.T) {
	f := newFixture(day0, day1, day1,
		spec{id: "l1", user: "ann", target: "pg", reason: "outage", start: day0.Add(time.Hour), dur: time.Hour},
		spec{id: "l2", user: "bob", target: "pg", reason: "routine", start: day0.Add(2 * time.Hour), dur: time.Hour})
	for _, e := range f.in.Events {
		if e.RequestID == "req_l1" && e.Action == "request.create" {
			e.Data["decision"], e.Data["break_glass"] = "break_glass", "true"
		}
		if e.RequestID == "req_l2" && e.Action == "request.create" {
			e.Data["decision"] = "auto"
		}
	}
	f.in.Requests["req_l1"].BreakGlass = true
	f.in.Events = append(f.in.Events,
		&mayfly.AuditEvent{Time: day0.Add(150 * time.Minute), Action: "lease.extend", Subject: "lease:l2", LeaseID: "l2",
			RequestID: "req_l2", Reason: "more", Data: map[string]string{"by": "20m0s", "policy": "pol-pg"}},
		&mayfly.AuditEvent{Time: day0.Add(160 * time.Minute), Action: "lease.extend", Subject: "lease:l2", LeaseID: "l2",
			RequestID: "req_l2", Reason: "even more", Data: map[string]string{"by": "2h0m0s", "policy": "long", "request": "req_x", "approvers": "carol"}})
	r := Build(f.in)
	bg, auto := r.Leases[0], r.Leases[1]
	if !bg.BreakGlass || bg.AutoApproved {
		t.Errorf("break-glass lease: break_glass=%v auto_approved=%v; want true, false", bg.BreakGlass, bg.AutoApproved)
	}
	if got, want := r.Totals.AutoApprovedShare, 0.5; got != want {
		t.Errorf("auto-approved share = %v; want %v (break-glass is not automatic)", got, want)
	}
	if got := approvedBy(bg, ","); got != "break-glass" {
		t.Errorf("approved by = %q; want break-glass", got)
	}
	if len(auto.Extensions) != 2 {
		t.Fatalf("extensions = %+v; want 2", auto.Extensions)
	}
	x1, x2 := auto.Extensions[0], auto.Extensions[1]
	if !x1.AutoApproved || x1.BySeconds != 1200 || x2.AutoApproved || x2.RequestID != "req_x" || len(x2.Approvers) != 1 || x2.Approvers[0] != "carol" {
		t.Errorf("extensions = %+v; want +20m auto, then +2h by carol through req_x", auto.Extensions)
	}
	var csv bytes.Buffer
	if err := r.WriteCSV(&csv); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(csv.String(), "+20m auto;+2h by carol") {
		t.Errorf("CSV lacks the extensions:\n%s", csv.String())
	}
}
