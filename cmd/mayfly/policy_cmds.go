package main

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/report"
)

func cmdExtend(e *env, args []string) error {
	f := newFlags(e, "extend", true)
	dur := f.String("for", "", "how much longer, e.g. 30m, 2h or 1d (required)")
	reason := f.String("reason", "", "why")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(1); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	if *dur == "" {
		return usageErr("extend: --for is required")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var res struct {
		httpapi.LeaseView
		Request *httpapi.RequestView `json:"request"`
	}
	if err := c.Do(e.ctx, "POST", "/v1/leases/"+url.PathEscape(f.pos[0])+"/extend", nil, httpapi.ExtendBody{Duration: *dur, Reason: *reason}, &res); err != nil {
		return err
	}
	if res.Request != nil {
		if f.json() {
			return e.printJSON(res.Request)
		}
		fmt.Fprintf(e.stdout, "extension request %s: waiting for %s; it applies when approved\n", res.Request.ID, waitingFor(*res.Request))
		return nil
	}
	if f.json() {
		return e.printJSON(res.LeaseView)
	}
	fmt.Fprintf(e.stdout, "lease %s now expires %s\n", res.ID, res.ExpiresAt.Local().Format(time.RFC3339))
	return nil
}

func cmdReview(e *env, args []string) error {
	f := newFlags(e, "review", false)
	note := f.String("note", "", "what the review found (required)")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(1); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	if err := c.Do(e.ctx, "POST", "/v1/leases/"+url.PathEscape(f.pos[0])+"/review", nil, httpapi.ReviewBody{Note: *note}, nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "lease %s: review recorded\n", f.pos[0])
	return nil
}

func cmdPolicyCheck(e *env, args []string) error { return cmdPolicyOffline(e, "check", args) }
func cmdPolicyTest(e *env, args []string) error  { return cmdPolicyOffline(e, "test", args) }

// cmdPolicyOffline runs `policy check FILE` and `policy test FILE`.
func cmdPolicyOffline(e *env, sub string, args []string) error {
	f := newFlags(e, "policy "+sub, true)
	var cfgPath *string
	if sub == "test" {
		cfgPath = f.String("config", "", "take the policies (and users) from this file instead of FILE")
	} else {
		cfgPath = new(string)
	}
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(1); err != nil {
		return err
	}
	pf, err := config.LoadPolicyFile(f.pos[0])
	if err != nil {
		return err
	}
	if sub == "check" {
		warnings := policy.ApproverGroupWarnings(pf.Config.Policies, configGroups(pf.Config.Users))
		if pf.Config.SCIM.TokenSHA256 != "" {
			// SCIM groups live in the server's store, not in the file.
			for i := range warnings {
				warnings[i] += " among the users of this file (SCIM groups are checked by `mayfly policy reload`)"
			}
		}
		if warnings == nil {
			warnings = []string{}
		}
		if f.json() {
			return e.printJSON(map[string]any{"ok": true, "policies": len(pf.Config.Policies), "targets": len(pf.Config.Targets), "warnings": warnings})
		}
		for _, w := range warnings {
			fmt.Fprintf(e.stdout, "%s: warning: %s\n", f.pos[0], safeText(w))
		}
		fmt.Fprintf(e.stdout, "%s: %d policies, %d targets: OK", f.pos[0], len(pf.Config.Policies), len(pf.Config.Targets))
		if n := len(warnings); n > 0 {
			fmt.Fprintf(e.stdout, ", %d %s", n, map[bool]string{true: "warning", false: "warnings"}[n == 1])
		}
		fmt.Fprintln(e.stdout)
		return nil
	}
	rules := pf
	if *cfgPath != "" {
		if rules, err = config.LoadPolicyFile(*cfgPath); err != nil {
			return err
		}
	}
	if len(pf.Tests) == 0 {
		return usageErr("policy test: %s has no tests: section", f.pos[0])
	}
	groups := map[string][]string{}
	for _, u := range rules.Config.Users {
		groups[u.Name] = u.Groups
	}
	type result struct {
		Name   string `json:"name"`
		Line   int    `json:"line"`
		Pass   bool   `json:"pass"`
		Got    string `json:"got"`
		Policy string `json:"policy"`
		Why    string `json:"why,omitempty"`
	}
	var results []result
	failed := 0
	for i, tc := range pf.Tests {
		now := time.Now()
		if tc.At != "" {
			if now, err = time.Parse(time.RFC3339, tc.At); err != nil {
				return usageErr("%s:%d: at %q: want RFC 3339", f.pos[0], tc.Line, tc.At)
			}
		}
		g := tc.Groups
		if g == nil {
			g = groups[tc.User]
		}
		d := rules.Set.Decide(policy.Input{User: tc.User, Groups: g, Target: tc.Target, Grant: tc.Grant, Duration: tc.Duration,
			Reason: tc.Reason, BreakGlass: tc.BreakGlass, Now: now})
		name := tc.Name
		if name == "" {
			name = "case " + strconv.Itoa(i+1)
		}
		got := d.Decision
		pol := ""
		if d.Policy != nil {
			pol = *d.Policy
		}
		pass := got == tc.Expect && (tc.Policy == "" || tc.Policy == pol)
		if !pass {
			failed++
		}
		results = append(results, result{Name: name, Line: tc.Line, Pass: pass, Got: got, Policy: pol, Why: d.Reason})
	}
	if f.json() {
		if err := e.printJSON(results); err != nil {
			return err
		}
	} else {
		for i, r := range results {
			status := "ok  "
			if !r.Pass {
				status = "FAIL"
			}
			tc := pf.Tests[i]
			fmt.Fprintf(e.stdout, "%s %s:%d %s: %s %s/%s for %s → %s (policy %s)", status, f.pos[0], r.Line, r.Name, tc.User, tc.Target, tc.Grant, tc.Duration, r.Got, orNone(r.Policy))
			if !r.Pass {
				fmt.Fprintf(e.stdout, "; want %s", tc.Expect)
				if tc.Policy != "" {
					fmt.Fprintf(e.stdout, " by %s", tc.Policy)
				}
				if r.Why != "" {
					fmt.Fprintf(e.stdout, " (%s)", r.Why)
				}
			}
			fmt.Fprintln(e.stdout)
		}
		fmt.Fprintf(e.stdout, "%d passed, %d failed\n", len(results)-failed, failed)
	}
	if failed > 0 {
		return mayfly.Errorf(mayfly.ECONFLICT, "%d of %d policy tests failed", failed, len(results))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// cmdReportAccess prints the access review of a period.
func cmdReportAccess(e *env, args []string) error {
	f := newFlags(e, "report access", true).outputs("csv", "html")
	from := f.String("from", "", "start of the period (2006-01-02 or RFC 3339)")
	to := f.String("to", "", "end of the period, exclusive (2006-01-02 or RFC 3339)")
	target := f.String("target", "", "only this target")
	user := f.String("user", "", "only this requester")
	out := f.String("out", "", "write to this file instead of stdout")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	if *from == "" || *to == "" {
		return usageErr("report access: --from and --to are required")
	}
	for _, d := range []string{*from, *to} {
		if _, err := report.ParseDate(d); err != nil {
			return err
		}
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	q := url.Values{"from": {*from}, "to": {*to}}
	if *target != "" {
		q.Set("target", *target)
	}
	if *user != "" {
		q.Set("user", *user)
	}
	var r report.Report
	if err := c.Do(e.ctx, "GET", "/v1/reports/access", q, nil, &r); err != nil {
		return err
	}
	w := e.stdout
	if *out != "" {
		fh, err := os.OpenFile(*out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return usageErr("report: %v", err)
		}
		defer fh.Close()
		w = fh
	}
	switch strings.ToLower(*f.output) {
	case "json":
		return r.WriteJSON(w)
	case "csv":
		return r.WriteCSV(w)
	case "html":
		return r.WriteHTML(w)
	}
	return r.WriteTable(w)
}

// cmdStanding prints every target's standing privileges (unmanaged
// accounts that can log in) beside the access Mayfly manages.
func cmdStanding(e *env, args []string) error {
	f := newFlags(e, "report standing", true)
	c, err := f.start(e, args, 0)
	if err != nil {
		return err
	}
	var res []broker.StandingTarget
	if err := c.Do(e.ctx, "GET", "/v1/reports/standing", nil, nil, &res); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(res)
	}
	var rows [][]string
	for _, t := range res {
		if t.Error != "" {
			rows = append(rows, []string{t.Target, "?", "?", "inventory failed: " + t.Error})
			continue
		}
		for _, a := range t.Unmanaged {
			what := strings.Join(a.Privileges, ",")
			if a.Superuser {
				what = "SUPERUSER " + what
			}
			rows = append(rows, []string{t.Target, a.Name, "standing", what})
		}
		for _, l := range t.Managed {
			rows = append(rows, []string{t.Target, l.Username, "mayfly lease " + l.ID, l.Requester + "/" + l.Grant + " until " + fmtTime(l.ExpiresAt)})
		}
	}
	e.table("TARGET\tACCOUNT\tKIND\tWHAT", rows)
	return nil
}
