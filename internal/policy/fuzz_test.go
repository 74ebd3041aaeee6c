package policy

import (
	"strings"
	"testing"
	"time"
)

// FuzzCompile compiles a policy with arbitrary condition and reason pattern
// text: it must return an error or a set, never panic, and a set must
// decide any request.
func FuzzCompile(f *testing.F) {
	f.Add(`request.duration <= duration("1h") && !(target.labels.env == "prod" && now.getDayOfWeek() in [0, 6])`, `^(INC|CHG)-\d+`, "INC-1")
	f.Add(`target.labels.env == "prod"`, ``, "")
	f.Add(`request.user`, `(`, "x")
	f.Add(`[1,2,3].all(x, x > 0) && request.reason.matches("^a+$")`, `a{1000}`, "aaa")
	f.Add(`size(request.groups) > 0 || request.total_so_far > duration("1h")`, `\p{Greek}`, "αβ")
	f.Add(`request.reason + request.reason == ""`, `.*`, strings.Repeat("a", 100))
	f.Fuzz(func(t *testing.T, expr, pattern, reason string) {
		p := valid()
		p.Targets = []string{"*"}
		p.AutoApproveIf = expr
		p.ReasonPattern = pattern
		s, err := Compile([]Policy{p}, testTargets)
		if err != nil {
			if !strings.HasPrefix(err.Error(), `policy "p" (line 7): `) {
				t.Fatalf("Compile error %q does not name the policy", err)
			}
			return
		}
		for _, target := range []string{"db-prod", "cache", "unknown"} {
			d := s.Decide(Input{User: "erin", Groups: []string{"eng"}, Target: target, Grant: "readonly", Duration: time.Minute, Reason: reason, Now: weekday, Explain: true})
			checkDecision(t, d)
		}
	})
}

// FuzzDecide decides arbitrary requests against the documented policies:
// never a panic, and the decision is always consistent.
func FuzzDecide(f *testing.F) {
	f.Add("dana", "developers", "logs-prod", "readonly", int64(time.Hour), "debug", false, int64(0), false)
	f.Add("olga", "oncall", "cache", "admin", int64(0), "outage", true, int64(0), false)
	f.Add("omar", "devops", "db-prod", "deploy", int64(time.Hour), "INC-1", false, int64(3*time.Hour), true)
	f.Add("carol", "", "db-prod", "dba", int64(-1), "", false, int64(-1), true)
	f.Add("erin", "eng", "db-prod", "readonly", int64(1<<62), "x", false, int64(1<<62), true)
	s, err := Compile(examplePolicies(), testTargets)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, user, group, target, grant string, dur int64, reason string, bg bool, soFar int64, ext bool) {
		in := Input{
			User: user, Groups: []string{group}, Target: target, Grant: grant,
			Duration: time.Duration(dur), Reason: reason, BreakGlass: bg, Now: weekend,
			TotalSoFar: time.Duration(soFar), Extension: ext,
		}
		d := s.Decide(in)
		checkDecision(t, d)
		if d.Decision != Deny {
			p, _ := s.Policy(*d.Policy)
			limit := p.MaxDuration
			if bg {
				limit = p.BreakGlass.MaxDuration
			}
			if d.Duration < MinDuration || d.Duration > limit {
				t.Fatalf("allowed duration %s outside [%s, %s]", d.Duration, MinDuration, limit)
			}
			if in.Duration != 0 && d.Duration != in.Duration {
				t.Fatalf("allowed duration %s; requested %s", d.Duration, in.Duration)
			}
			if bg != (d.Decision == BreakGlassDecision) {
				t.Fatalf("break-glass request %v decided %q", bg, d.Decision)
			}
		}
		in.Explain = true
		full := s.Decide(in)
		checkDecision(t, full)
		if full.Decision != d.Decision || full.Reason != d.Reason {
			t.Fatalf("explain decided %q (%q); without explain %q (%q)", full.Decision, full.Reason, d.Decision, d.Reason)
		}
		if len(full.Considered) != len(s.Policies()) {
			t.Fatalf("Considered has %d entries; want %d", len(full.Considered), len(s.Policies()))
		}
	})
}

func checkDecision(t *testing.T, d Decision) {
	t.Helper()
	switch d.Decision {
	case Deny:
		if d.Policy != nil || d.Reason == "" || strings.Contains(d.Reason, "\n") {
			t.Fatalf("bad denial: policy %v, reason %q", d.Policy, d.Reason)
		}
	case Auto, BreakGlassDecision:
		if d.Policy == nil || len(d.Steps) != 0 {
			t.Fatalf("bad %s: policy %v, steps %v", d.Decision, d.Policy, d.Steps)
		}
	case Approval:
		if d.Policy == nil || len(d.Steps) == 0 {
			t.Fatalf("bad approval: policy %v, steps %v", d.Policy, d.Steps)
		}
	default:
		t.Fatalf("unknown decision %q", d.Decision)
	}
}
