package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

var testTargets = []TargetInfo{
	{Name: "db-prod", Kind: "postgres", Labels: map[string]string{"env": "prod", "team": "payments"}, Grants: []string{"dba", "deploy", "readonly"}},
	{Name: "db-stage", Kind: "postgres", Labels: map[string]string{"env": "staging"}, Grants: []string{"deploy", "readonly"}},
	{Name: "logs-prod", Kind: "postgres", Labels: map[string]string{"env": "prod"}, Grants: []string{"readonly"}},
	{Name: "cache", Kind: "redis", Grants: []string{"admin", "readonly"}},
}

// valid returns a policy that compiles against testTargets.
func valid() Policy {
	return Policy{
		Name:        "p",
		Groups:      []string{"eng"},
		Targets:     []string{"db-prod"},
		Grants:      []string{"readonly"},
		MaxDuration: time.Hour,
		Line:        7,
	}
}

func mustCompile(t *testing.T, ps ...Policy) *Set {
	t.Helper()
	s, err := Compile(ps, testTargets)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(p *Policy)
		want   string // substring of the error; "" = compiles
	}{
		{"valid", func(p *Policy) {}, ""},
		{"missing name", func(p *Policy) { p.Name = "" }, `policy "" (line 7): name is required`},
		{"nobody", func(p *Policy) { p.Groups = nil }, "applies to nobody"},
		{"wildcard group", func(p *Policy) { p.Groups = []string{"*"} }, `groups: "*" is not a valid name`},
		{"no targets", func(p *Policy) { p.Targets = nil }, "covers no target"},
		{"unknown target", func(p *Policy) { p.Targets = []string{"nope"} }, `unknown target "nope"`},
		{"no grants", func(p *Policy) { p.Grants = nil }, "covers no grant"},
		{"unknown grant", func(p *Policy) { p.Grants = []string{"admin"} }, `grant "admin" is not defined on any target the policy covers`},
		{"grant via any target", func(p *Policy) { p.Targets = []string{"*"}; p.Grants = []string{"admin"} }, ""},
		{"grant via labels", func(p *Policy) {
			p.Targets = nil
			p.TargetLabels = map[string]string{"env": "staging"}
			p.Grants = []string{"deploy"}
		}, ""},
		{"labels select nothing", func(p *Policy) {
			p.Targets = nil
			p.TargetLabels = map[string]string{"env": "mars"}
		}, `grant "readonly" is not defined`},
		{"no max duration", func(p *Policy) { p.MaxDuration = 0 }, "max_duration is required"},
		{"negative max", func(p *Policy) { p.MaxDuration = -time.Hour }, "max_duration -1h0m0s is negative"},
		{"sub-second max", func(p *Policy) { p.MaxDuration = time.Millisecond }, "max_duration 1ms is under the minimum of 1s"},
		{"one second max", func(p *Policy) { p.MaxDuration = time.Second }, ""},
		{"default over max", func(p *Policy) { p.DefaultDuration = 2 * time.Hour }, "default_duration 2h0m0s exceeds max_duration 1h0m0s"},
		{"total under max", func(p *Policy) { p.MaxTotalDuration = time.Minute }, "max_total_duration 1m0s is less than max_duration 1h0m0s"},
		{"negative pending ttl", func(p *Policy) { p.PendingTTL = -1 }, "pending_ttl -1ns is negative"},
		{"negative idle", func(p *Policy) { p.IdleTimeout = -time.Second }, "idle_timeout -1s is negative"},
		{"negative approvals", func(p *Policy) { p.Approvals = -1 }, "approvals -1 is negative"},
		{"absurd approvals", func(p *Policy) { p.Approvals = 1 << 40; p.ApproverGroups = []string{"sre"} }, "exceeds the limit"},
		{"approvals without groups", func(p *Policy) { p.Approvals = 1 }, "approvals 1 needs approver_groups"},
		{"groups without approvals", func(p *Policy) { p.ApproverGroups = []string{"sre"} }, "approver_groups is set but approvals is 0"},
		{"steps and shorthand", func(p *Policy) {
			p.Approvals, p.ApproverGroups = 1, []string{"sre"}
			p.Steps = []Step{{Approvals: 1, ApproverGroups: []string{"sec"}}}
		}, "not both"},
		{"step without approvals", func(p *Policy) { p.Steps = []Step{{ApproverGroups: []string{"sec"}}} }, "step 1: approvals 0 must be between 1 and 100"},
		{"step without groups", func(p *Policy) { p.Steps = []Step{{Approvals: 1}} }, "step 1: approver_groups is required"},
		{"bad pattern", func(p *Policy) { p.ReasonPattern = "(" }, `reason_pattern "(": error parsing regexp`},
		{"long pattern", func(p *Policy) { p.ReasonPattern = strings.Repeat("a", MaxPatternLen+1) }, "reason_pattern is longer than"},
		{"cel syntax error", func(p *Policy) { p.AutoApproveIf = `request.user ==` }, "auto_approve_if: 1:16: Syntax error"},
		{"cel type error", func(p *Policy) { p.AutoApproveIf = `request.duration <= duration("1h") && now + 1 > now` }, `policy "p" (line 7): auto_approve_if: `},
		{"cel undeclared", func(p *Policy) { p.AutoApproveIf = `resource.env == "prod"` }, "undeclared reference to 'resource'"},
		{"cel not bool", func(p *Policy) { p.AutoApproveIf = `1 + 2` }, "condition is of type int, want bool"},
		{"cel unknown field", func(p *Policy) { p.AutoApproveIf = `request.durration < duration("1h")` }, `request has no field "durration"`},
		{"cel too long", func(p *Policy) { p.AutoApproveIf = "true" + strings.Repeat(" || true", MaxExprLen/8+1) }, "longer than"},
		{"cel too deep", func(p *Policy) { p.AutoApproveIf = strings.Repeat("(", 200) + "true" + strings.Repeat(")", 200) }, "auto_approve_if"},
		{"cel example", func(p *Policy) {
			p.AutoApproveIf = `request.duration <= duration("1h") && !(target.labels.env == "prod" && now.getDayOfWeek() in [0, 6])`
		}, ""},
		{"break glass without groups", func(p *Policy) { p.BreakGlass = &BreakGlass{MaxDuration: time.Hour} }, "break_glass: groups is required"},
		{"break glass without max", func(p *Policy) { p.BreakGlass = &BreakGlass{Groups: []string{"oncall"}} }, "break_glass: max_duration must be positive"},
		{"break glass only", func(p *Policy) {
			p.Groups, p.MaxDuration = nil, 0
			p.BreakGlass = &BreakGlass{Groups: []string{"oncall"}, MaxDuration: time.Hour}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			tt.change(&p)
			_, err := Compile([]Policy{p}, testTargets)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Compile: %v; want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Compile succeeded; want error containing %q", tt.want)
			}
			if got := err.Error(); !strings.Contains(got, tt.want) {
				t.Errorf("Compile error = %q; want it to contain %q", got, tt.want)
			}
			if got := mayfly.ErrorCode(err); got != mayfly.EINVALID {
				t.Errorf("ErrorCode = %q; want %q", got, mayfly.EINVALID)
			}
			if !strings.Contains(err.Error(), `policy "`) {
				t.Errorf("Compile error %q does not name the policy", err)
			}
		})
	}
}

func TestCompileDuplicateAndNilTargets(t *testing.T) {
	a, b := valid(), valid()
	b.Line = 12
	_, err := Compile([]Policy{a, b}, testTargets)
	if err == nil || !strings.Contains(err.Error(), `policy "p" (line 12): is defined twice`) {
		t.Errorf("Compile duplicate = %v; want it to name the second policy", err)
	}
	// Without targets, names are not checked.
	c := valid()
	c.Targets, c.Grants = []string{"anything"}, []string{"whatever"}
	if _, err := Compile([]Policy{c}, nil); err != nil {
		t.Errorf("Compile with nil targets: %v", err)
	}
}

func TestPoliciesIsACopy(t *testing.T) {
	s := mustCompile(t, valid())
	ps := s.Policies()
	ps[0].Name = "changed"
	if got := s.Policies()[0].Name; got != "p" {
		t.Errorf("Policies()[0].Name = %q after editing the copy; want %q", got, "p")
	}
	if _, ok := s.Policy("p"); !ok {
		t.Errorf("Policy(%q) not found", "p")
	}
}

// TestDocumentedConditions compiles the conditions shown in docs/policy.md.
func TestDocumentedConditions(t *testing.T) {
	for _, expr := range []string{
		`request.duration <= duration("1h") && !(target.labels.env == "prod" && now.getDayOfWeek() in [0, 6])`,
		`"sre" in user.groups && request.reason.matches("^INC-[0-9]+$")`,
		`now.getHours("Europe/Paris") >= 9 && now.getHours("Europe/Paris") < 18`,
		`has(target.labels.tier) && target.labels.tier != "critical"`,
	} {
		if _, err := compileCondition(expr); err != nil {
			t.Errorf("compileCondition(%q): %v", expr, err)
		}
	}
	_, err := compileCondition(`request.duration <= duration("1h") && now + 1 > now`)
	if want := "1:43: found no matching overload for '_+_' applied to '(timestamp, int)'"; err == nil || err.Error() != want {
		t.Errorf("type error = %v; want %q", err, want)
	}
}
