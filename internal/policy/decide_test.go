package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A Wednesday and a Saturday, in UTC.
var (
	weekday = time.Date(2025, 6, 4, 10, 0, 0, 0, time.UTC)
	weekend = time.Date(2025, 6, 7, 10, 0, 0, 0, time.UTC)
)

// examplePolicies are the policies of the documentation, in order.
func examplePolicies() []Policy {
	return []Policy{
		{
			Name: "dev-logs-read", Groups: []string{"developers"},
			Targets: []string{"logs-prod"}, Grants: []string{"readonly"},
			MaxDuration: time.Hour, DefaultDuration: time.Hour, ReasonRequired: true,
		},
		{
			Name: "devops-hotfix", Groups: []string{"devops"},
			TargetLabels: map[string]string{"env": "prod"}, Grants: []string{"deploy"},
			MaxDuration: 2 * time.Hour, DefaultDuration: time.Hour, MaxTotalDuration: 4 * time.Hour,
			ReasonPattern: `^(INC|CHG)-\d+`, Approvals: 1, ApproverGroups: []string{"sre"},
			IdleTimeout: 15 * time.Minute,
		},
		{
			Name: "contractor-maintenance", Users: []string{"carol"},
			Targets: []string{"db-stage", "db-prod"}, Grants: []string{"dba"},
			MaxDuration: 8 * time.Hour, ReasonRequired: true,
			Steps: []Step{
				{Approvals: 1, ApproverGroups: []string{"payments"}},
				{Approvals: 1, ApproverGroups: []string{"security"}},
			},
			PendingTTL: 72 * time.Hour, ActivationWindow: 4 * time.Hour,
		},
		{
			Name:    "oncall-break-glass",
			Targets: []string{"*"}, Grants: []string{"*"},
			BreakGlass: &BreakGlass{Groups: []string{"oncall"}, MaxDuration: time.Hour},
		},
		{
			Name: "eng-read", Groups: []string{"eng"},
			TargetLabels: map[string]string{"env": "prod"}, Grants: []string{"readonly"},
			MaxDuration: 4 * time.Hour, DefaultDuration: time.Hour,
			AutoApproveIf: `request.duration <= duration("1h") && !(target.labels.env == "prod" && now.getDayOfWeek() in [0, 6])`,
			Approvals:     1, ApproverGroups: []string{"eng-leads"},
		},
		{
			Name: "cache-auto-if", Groups: []string{"eng"},
			Targets: []string{"cache"}, Grants: []string{"readonly"},
			MaxDuration: time.Hour, DefaultDuration: 30 * time.Minute,
			AutoApproveIf: `target.labels.env == "dev"`, // cache has no labels: runtime error
		},
	}
}

func TestDecide(t *testing.T) {
	s := mustCompile(t, examplePolicies()...)
	tests := []struct {
		name     string
		in       Input
		decision string
		policy   string
		duration time.Duration
		steps    []Step
		reason   string // for denials
	}{
		{
			name:     "developer reads logs with the default duration",
			in:       Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Reason: "debug 500s", Now: weekday},
			decision: Auto, policy: "dev-logs-read", duration: time.Hour,
		},
		{
			name:     "one second is a valid duration",
			in:       Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Duration: time.Second, Reason: "x", Now: weekday},
			decision: Auto, policy: "dev-logs-read", duration: time.Second,
		},
		{
			name:   "developer without a reason",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Now: weekday},
			reason: `policy "dev-logs-read": a reason is required`,
		},
		{
			name:   "blank reason counts as none",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Reason: " \t", Now: weekday},
			reason: `policy "dev-logs-read": a reason is required`,
		},
		{
			name:   "duration over max",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Duration: 2 * time.Hour, Reason: "x", Now: weekday},
			reason: `policy "dev-logs-read": duration 2h0m0s exceeds max_duration 1h0m0s`,
		},
		{
			name:   "absurd duration",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Duration: math.MaxInt64, Reason: "x", Now: weekday},
			reason: `exceeds max_duration 1h0m0s`,
		},
		{
			name:   "negative duration",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Duration: -time.Hour, Reason: "x", Now: weekday},
			reason: `policy "dev-logs-read": duration -1h0m0s is negative`,
		},
		{
			name:   "most negative duration",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Duration: math.MinInt64, Reason: "x", Now: weekday},
			reason: `is negative`,
		},
		{
			name:   "sub-second duration",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Duration: time.Nanosecond, Reason: "x", Now: weekday},
			reason: `policy "dev-logs-read": duration 1ns is under the minimum of 1s`,
		},
		{
			name:   "no duration and no default",
			in:     Input{User: "carol", Target: "db-prod", Grant: "dba", Reason: "x", Now: weekday},
			reason: `policy "contractor-maintenance": no duration requested and the policy has no default_duration`,
		},
		{
			name:   "user in no group",
			in:     Input{User: "mallory", Target: "logs-prod", Grant: "readonly", Reason: "x", Now: weekday},
			reason: `no policy allows mallory logs-prod/readonly`,
		},
		{
			name:   "unknown target",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "nope", Grant: "readonly", Reason: "x", Now: weekday},
			reason: `no policy allows dana nope/readonly`,
		},
		{
			name:   "grant not covered",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "dba", Reason: "x", Now: weekday},
			reason: `no policy allows dana logs-prod/dba`,
		},
		{
			name:     "devops hotfix needs one approval",
			in:       Input{User: "omar", Groups: []string{"devops"}, Target: "db-prod", Grant: "deploy", Reason: "INC-4521 hotfix", Now: weekday},
			decision: Approval, policy: "devops-hotfix", duration: time.Hour,
			steps: []Step{{Approvals: 1, ApproverGroups: []string{"sre"}}},
		},
		{
			name:   "devops label selector does not cover staging",
			in:     Input{User: "omar", Groups: []string{"devops"}, Target: "db-stage", Grant: "deploy", Reason: "INC-1", Now: weekday},
			reason: `no policy allows omar db-stage/deploy`,
		},
		{
			name:   "reason pattern mismatch",
			in:     Input{User: "omar", Groups: []string{"devops"}, Target: "db-prod", Grant: "deploy", Reason: "fix stuff", Now: weekday},
			reason: `policy "devops-hotfix": reason "fix stuff" does not match reason_pattern "^(INC|CHG)-\d+"`,
		},
		{
			name:   "reason pattern mismatch with a long reason",
			in:     Input{User: "omar", Groups: []string{"devops"}, Target: "db-prod", Grant: "deploy", Reason: strings.Repeat("é", 100), Now: weekday},
			reason: `é…" does not match reason_pattern`,
		},
		{
			name:     "extension within the total",
			in:       Input{User: "omar", Groups: []string{"devops"}, Target: "db-prod", Grant: "deploy", Duration: time.Hour, Reason: "CHG-9", Now: weekday, Extension: true, TotalSoFar: 3 * time.Hour},
			decision: Approval, policy: "devops-hotfix", duration: time.Hour,
			steps: []Step{{Approvals: 1, ApproverGroups: []string{"sre"}}},
		},
		{
			name:   "extension over the total",
			in:     Input{User: "omar", Groups: []string{"devops"}, Target: "db-prod", Grant: "deploy", Duration: 2 * time.Hour, Reason: "CHG-9", Now: weekday, Extension: true, TotalSoFar: 3 * time.Hour},
			reason: `policy "devops-hotfix": duration 2h0m0s on top of 3h0m0s already granted exceeds max_total_duration 4h0m0s`,
		},
		{
			name:   "extension with an absurd total so far",
			in:     Input{User: "omar", Groups: []string{"devops"}, Target: "db-prod", Grant: "deploy", Duration: time.Hour, Reason: "CHG-9", Now: weekday, Extension: true, TotalSoFar: math.MaxInt64},
			reason: `already granted exceeds max_total_duration`,
		},
		{
			name:   "extension with a negative total so far",
			in:     Input{User: "omar", Groups: []string{"devops"}, Target: "db-prod", Grant: "deploy", Duration: time.Hour, Reason: "CHG-9", Now: weekday, Extension: true, TotalSoFar: -time.Hour},
			reason: `duration granted so far -1h0m0s is negative`,
		},
		{
			name:   "extension without max_total_duration",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Duration: time.Minute, Reason: "x", Now: weekday, Extension: true, TotalSoFar: time.Hour},
			reason: `exceeds max_duration (max_total_duration is not set) 1h0m0s`,
		},
		{
			name:     "contractor needs two steps",
			in:       Input{User: "carol", Target: "db-prod", Grant: "dba", Duration: 8 * time.Hour, Reason: "index rebuild", Now: weekday},
			decision: Approval, policy: "contractor-maintenance", duration: 8 * time.Hour,
			steps: []Step{{Approvals: 1, ApproverGroups: []string{"payments"}}, {Approvals: 1, ApproverGroups: []string{"security"}}},
		},
		{
			name:     "break glass by on-call",
			in:       Input{User: "olga", Groups: []string{"oncall"}, Target: "cache", Grant: "admin", Reason: "outage", BreakGlass: true, Now: weekend},
			decision: BreakGlassDecision, policy: "oncall-break-glass", duration: time.Hour,
		},
		{
			name:     "break glass with a short duration",
			in:       Input{User: "olga", Groups: []string{"oncall"}, Target: "db-prod", Grant: "dba", Duration: time.Minute, Reason: "outage", BreakGlass: true, Now: weekend},
			decision: BreakGlassDecision, policy: "oncall-break-glass", duration: time.Minute,
		},
		{
			name:   "break glass by a non-designated user",
			in:     Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Reason: "outage", BreakGlass: true, Now: weekday},
			reason: `policy "oncall-break-glass": user dana not in break_glass groups [oncall]`,
		},
		{
			name:   "break glass over its max",
			in:     Input{User: "olga", Groups: []string{"oncall"}, Target: "cache", Grant: "admin", Duration: 2 * time.Hour, Reason: "outage", BreakGlass: true, Now: weekday},
			reason: `policy "oncall-break-glass": duration 2h0m0s exceeds break_glass max_duration 1h0m0s`,
		},
		{
			name:   "break glass without a reason",
			in:     Input{User: "olga", Groups: []string{"oncall"}, Target: "cache", Grant: "admin", BreakGlass: true, Now: weekday},
			reason: `policy "oncall-break-glass": break-glass access needs a reason`,
		},
		{
			name:   "on-call without break glass has no standing access",
			in:     Input{User: "olga", Groups: []string{"oncall"}, Target: "cache", Grant: "admin", Reason: "outage", Now: weekday},
			reason: `no policy allows olga cache/admin`,
		},
		{
			name:     "condition true on a weekday",
			in:       Input{User: "erin", Groups: []string{"eng"}, Target: "db-prod", Grant: "readonly", Now: weekday},
			decision: Auto, policy: "eng-read", duration: time.Hour,
		},
		{
			name:     "condition false on a weekend falls back to approval",
			in:       Input{User: "erin", Groups: []string{"eng"}, Target: "db-prod", Grant: "readonly", Now: weekend},
			decision: Approval, policy: "eng-read", duration: time.Hour,
			steps: []Step{{Approvals: 1, ApproverGroups: []string{"eng-leads"}}},
		},
		{
			name:     "condition false for a long duration",
			in:       Input{User: "erin", Groups: []string{"eng"}, Target: "logs-prod", Grant: "readonly", Duration: 3 * time.Hour, Now: weekday},
			decision: Approval, policy: "eng-read", duration: 3 * time.Hour,
			steps: []Step{{Approvals: 1, ApproverGroups: []string{"eng-leads"}}},
		},
		{
			name:   "condition runtime error is not met",
			in:     Input{User: "erin", Groups: []string{"eng"}, Target: "cache", Grant: "readonly", Now: weekday},
			reason: `policy "cache-auto-if": auto_approve_if failed: no such key: env and the policy has no approval steps`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, explain := range []bool{false, true} {
				in := tt.in
				in.Explain = explain
				d := s.Decide(in)
				want := tt.decision
				if want == "" {
					want = Deny
				}
				if d.Decision != want {
					t.Fatalf("Decide(explain=%v).Decision = %q (reason %q); want %q", explain, d.Decision, d.Reason, want)
				}
				if want == Deny {
					if d.Policy != nil {
						t.Errorf("denied with Policy = %q; want nil", *d.Policy)
					}
					if !strings.Contains(d.Reason, tt.reason) {
						t.Errorf("Reason = %q; want it to contain %q", d.Reason, tt.reason)
					}
					if strings.Contains(d.Reason, "\n") {
						t.Errorf("Reason = %q spans several lines", d.Reason)
					}
					continue
				}
				if d.Policy == nil || *d.Policy != tt.policy {
					t.Errorf("Policy = %v; want %q", d.Policy, tt.policy)
				}
				if d.Duration != tt.duration {
					t.Errorf("Duration = %s; want %s", d.Duration, tt.duration)
				}
				if d.DurationText != tt.duration.String() {
					t.Errorf("DurationText = %q; want %q", d.DurationText, tt.duration.String())
				}
				if tt.steps == nil {
					tt.steps = []Step{}
				}
				if !reflect.DeepEqual(d.Steps, tt.steps) {
					t.Errorf("Steps = %v; want %v", d.Steps, tt.steps)
				}
				if d.Reason != "" {
					t.Errorf("Reason = %q on an allowed request", d.Reason)
				}
			}
		})
	}
}

func TestDecideTimers(t *testing.T) {
	s := mustCompile(t, examplePolicies()...)
	tests := []struct {
		in                    Input
		pending, window, idle time.Duration
	}{
		{Input{User: "dana", Groups: []string{"developers"}, Target: "logs-prod", Grant: "readonly", Reason: "x"}, 24 * time.Hour, time.Hour, 0},
		{Input{User: "omar", Groups: []string{"devops"}, Target: "db-prod", Grant: "deploy", Reason: "INC-1"}, 24 * time.Hour, time.Hour, 15 * time.Minute},
		{Input{User: "carol", Target: "db-prod", Grant: "dba", Duration: time.Hour, Reason: "x"}, 72 * time.Hour, 4 * time.Hour, 0},
	}
	for _, tt := range tests {
		d := s.Decide(tt.in)
		if d.Policy == nil {
			t.Fatalf("Decide(%s) denied: %s", tt.in.User, d.Reason)
		}
		if d.PendingTTL != tt.pending || d.ActivationWindow != tt.window || d.IdleTimeout != tt.idle {
			t.Errorf("%s: timers = %s, %s, %s; want %s, %s, %s", *d.Policy,
				d.PendingTTL, d.ActivationWindow, d.IdleTimeout, tt.pending, tt.window, tt.idle)
		}
	}
}

func TestDecideLeastFriction(t *testing.T) {
	base := func(name string) Policy {
		return Policy{Name: name, Groups: []string{"eng"}, Targets: []string{"db-prod"}, Grants: []string{"readonly"}, MaxDuration: time.Hour}
	}
	two := base("two-steps")
	two.Steps = []Step{{Approvals: 1, ApproverGroups: []string{"a"}}, {Approvals: 1, ApproverGroups: []string{"b"}}}
	oneTwo := base("one-step-two")
	oneTwo.Approvals, oneTwo.ApproverGroups = 2, []string{"a"}
	one := base("one")
	one.Approvals, one.ApproverGroups = 1, []string{"a"}
	oneAgain := base("one-again")
	oneAgain.Approvals, oneAgain.ApproverGroups = 1, []string{"b"}
	auto := base("auto")
	autoLate := base("auto-late")
	narrow := base("narrow")
	narrow.MaxDuration = time.Minute // refuses the request below

	tests := []struct {
		name     string
		policies []Policy
		want     string
	}{
		{"automatic beats approvals", []Policy{one, two, auto}, "auto"},
		{"fewer approvals", []Policy{two, one}, "one"},
		{"fewer steps at equal approvals", []Policy{two, oneTwo}, "one-step-two"},
		{"policy order at equal friction", []Policy{oneAgain, one}, "one-again"},
		{"first automatic policy", []Policy{autoLate, auto}, "auto-late"},
		{"a refusing policy does not block another", []Policy{narrow, one}, "one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustCompile(t, tt.policies...)
			d := s.Decide(Input{User: "erin", Groups: []string{"eng"}, Target: "db-prod", Grant: "readonly", Duration: time.Hour, Explain: true})
			if d.Policy == nil {
				t.Fatalf("denied: %s", d.Reason)
			}
			if got := *d.Policy; got != tt.want {
				t.Errorf("chosen policy = %q; want %q (considered %+v)", got, tt.want, d.Considered)
			}
		})
	}
}

func TestDecideExplain(t *testing.T) {
	s := mustCompile(t, examplePolicies()...)
	in := Input{User: "erin", Groups: []string{"eng", "developers"}, Target: "logs-prod", Grant: "readonly", Duration: 2 * time.Hour, Reason: "x", Now: weekday}

	d := s.Decide(in)
	if d.Considered != nil {
		t.Errorf("Considered = %v without Explain; want nil", d.Considered)
	}

	in.Explain = true
	d = s.Decide(in)
	want := []Considered{
		{"dev-logs-read", false, "duration 2h0m0s exceeds max_duration 1h0m0s"},
		{"devops-hotfix", false, "user erin not in groups [devops]"},
		{"contractor-maintenance", false, "user erin not in users [carol]"},
		{"oncall-break-glass", false, "user erin: the policy only allows break-glass"},
		{"eng-read", true, "chosen: 1 approval from [eng-leads] (auto_approve_if is false)"},
		{"cache-auto-if", false, "target logs-prod not in targets [cache]"},
	}
	if !reflect.DeepEqual(d.Considered, want) {
		t.Errorf("Considered =\n%s\nwant\n%s", fmtConsidered(d.Considered), fmtConsidered(want))
	}

	// A second allowing policy is listed as allowed but not chosen.
	in.Duration = time.Hour
	d = s.Decide(in)
	if got, want := d.Considered[0], (Considered{"dev-logs-read", true, "chosen: automatic approval"}); got != want {
		t.Errorf("Considered[0] = %+v; want %+v", got, want)
	}
	if got, want := d.Considered[4].Why, `allows (automatic approval (auto_approve_if is true)); not chosen: policy "dev-logs-read" is preferred`; got != want {
		t.Errorf("Considered[4].Why = %q; want %q", got, want)
	}

	// Break-glass lists why each policy did not apply.
	d = s.Decide(Input{User: "olga", Groups: []string{"oncall"}, Target: "db-prod", Grant: "dba", Reason: "outage", BreakGlass: true, Explain: true})
	if got, want := d.Considered[0].Why, "no break_glass section"; got != want {
		t.Errorf("break-glass Considered[0].Why = %q; want %q", got, want)
	}
	if got, want := d.Considered[3], (Considered{"oncall-break-glass", true, "chosen: break-glass, no approval"}); got != want {
		t.Errorf("break-glass Considered[3] = %+v; want %+v", got, want)
	}
}

func fmtConsidered(cs []Considered) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "  %s %v %q\n", c.Name, c.Matched, c.Why)
	}
	return b.String()
}

func TestDecisionJSON(t *testing.T) {
	s := mustCompile(t, examplePolicies()...)
	d := s.Decide(Input{User: "carol", Target: "db-prod", Grant: "dba", Duration: time.Hour, Reason: "x"})
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	want := `{"decision":"approval","policy":"contractor-maintenance","duration":"1h0m0s","steps":[{"approvals":1,"approver_groups":["payments"]},{"approvals":1,"approver_groups":["security"]}],"considered":null}`
	if got != want {
		t.Errorf("json = %s\nwant   %s", got, want)
	}
	d = s.Decide(Input{User: "x", Target: "db-prod", Grant: "dba"})
	b, _ = json.Marshal(d)
	if got, want := string(b), `{"decision":"deny","policy":null,"steps":[],"reason":"no policy allows x db-prod/dba","considered":null}`; got != want {
		t.Errorf("json = %s\nwant   %s", got, want)
	}
}

func TestConditionRuntime(t *testing.T) {
	mk := func(expr string) *Set {
		p := valid()
		p.Targets = []string{"*"}
		p.AutoApproveIf = expr
		return mustCompile(t, p)
	}
	in := Input{User: "erin", Groups: []string{"eng"}, Target: "cache", Grant: "readonly", Duration: time.Minute, Reason: "because", Now: weekday, Explain: true}
	tests := []struct {
		expr     string
		target   string
		decision string
		why      string
	}{
		{`request.user == "erin" && "eng" in user.groups && request.reason.startsWith("bec")`, "cache", Auto, "automatic approval (auto_approve_if is true)"},
		{`request.duration <= duration("30s")`, "cache", Deny, "auto_approve_if is false and the policy has no approval steps"},
		{`target.kind == "redis" && target.name == request.target && request.grant == "readonly"`, "cache", Auto, "automatic approval (auto_approve_if is true)"},
		{`target.labels.env == "prod"`, "cache", Deny, "auto_approve_if failed: no such key: env and the policy has no approval steps"},
		{`target.labels.env == "prod"`, "db-prod", Auto, "automatic approval (auto_approve_if is true)"},
		{`has(target.labels.env) && target.labels.env == "prod"`, "cache", Deny, "auto_approve_if is false and the policy has no approval steps"},
		{`target.labels.env == "prod"`, "unknown-target", Deny, "no such key"},
		{`request.user`, "cache", Deny, "auto_approve_if returned string, not a bool"},
		{`1 / (size(request.user) - 4) == 0`, "cache", Deny, "auto_approve_if failed: division by zero"},
		{`!request.break_glass && !request.extension && request.total_so_far == duration("0s")`, "cache", Auto, "automatic approval (auto_approve_if is true)"},
		{`now.getDayOfWeek() == 3 && now < timestamp("2030-01-01T00:00:00Z")`, "cache", Auto, "automatic approval (auto_approve_if is true)"},
		// Expensive conditions stop at the cost limit and are not met.
		{`[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, a+b+c+d+e > 0)))))`, "cache", Deny, "cost limit exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s := mk(tt.expr)
			in := in
			in.Target = tt.target
			d := s.Decide(in)
			if d.Decision != tt.decision {
				t.Errorf("Decision = %q (%s); want %q", d.Decision, d.Reason, tt.decision)
			}
			if got := d.Considered[0].Why; !strings.Contains(got, tt.why) {
				t.Errorf("Why = %q; want it to contain %q", got, tt.why)
			}
		})
	}
}

func TestCanApprove(t *testing.T) {
	step := Step{Approvals: 1, ApproverGroups: []string{"sre", "security"}}
	tests := []struct {
		name      string
		approver  string
		groups    []string
		requester string
		ok        bool
		why       string
	}{
		{"member of a group", "sam", []string{"dev", "sre"}, "alice", true, "sam may approve as a member of sre"},
		{"self-approval", "alice", []string{"sre"}, "alice", false, "alice requested this access and cannot approve it"},
		{"outside the groups", "bob", []string{"dev"}, "alice", false, "bob is not in approver groups [sre security]"},
		{"no groups", "bob", nil, "alice", false, "bob is not in approver groups [sre security]"},
		{"no approver", "", []string{"sre"}, "alice", false, "no approver given"},
		{"empty requester and approver", "", []string{"sre"}, "", false, "no approver given"},
		{"group name is not a user name", "sre", nil, "alice", false, "sre is not in approver groups [sre security]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := CanApprove(step, tt.approver, tt.groups, tt.requester)
			if ok != tt.ok || why != tt.why {
				t.Errorf("CanApprove(%q, %v, %q) = %v, %q; want %v, %q", tt.approver, tt.groups, tt.requester, ok, why, tt.ok, tt.why)
			}
		})
	}
}

// TestIndexAgreesWithFullScan checks that the indexed path decides exactly
// like a scan of every policy, over random policies and requests.
func TestIndexAgreesWithFullScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ps, targets := randomPolicies(r, 300)
	s, err := Compile(ps, targets)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for i := range 2000 {
		in := randomInput(r, targets)
		fast := s.Decide(in)
		seen[fast.Decision]++
		in.Explain = true
		full := s.Decide(in)
		full.Considered = nil
		if !reflect.DeepEqual(fast, full) {
			t.Fatalf("request %d %+v:\nindexed   %+v\nfull scan %+v", i, in, fast, full)
		}
	}
	// The random requests must exercise every outcome to mean anything.
	for _, d := range []string{Deny, Auto, Approval, BreakGlassDecision} {
		if seen[d] < 10 {
			t.Errorf("only %d of 2000 random requests decided %q (%v)", seen[d], d, seen)
		}
	}
}

// randomPolicies returns n valid policies over a few targets, mixing named
// targets, label selectors and wildcards.
func randomPolicies(r *rand.Rand, n int) ([]Policy, []TargetInfo) {
	var targets []TargetInfo
	envs := []string{"prod", "staging", "dev"}
	grants := []string{"readonly", "deploy", "dba", "admin"}
	for i := range 50 {
		targets = append(targets, TargetInfo{
			Name: fmt.Sprintf("t%d", i), Kind: "postgres",
			Labels: map[string]string{"env": envs[i%3], "team": fmt.Sprintf("team%d", i%7)},
			Grants: grants,
		})
	}
	groups := []string{"g0", "g1", "g2", "g3", "g4", "g5", "g6", "g7"}
	var ps []Policy
	for i := range n {
		p := Policy{
			Name:        fmt.Sprintf("p%d", i),
			Groups:      []string{groups[r.IntN(len(groups))]},
			Grants:      []string{grants[r.IntN(len(grants))]},
			MaxDuration: time.Duration(1+r.IntN(8)) * time.Hour,
		}
		switch r.IntN(10) {
		case 0:
			p.Targets = []string{"*"}
		case 1, 2:
			p.TargetLabels = map[string]string{"env": envs[r.IntN(3)]}
		case 3:
			p.Targets = []string{fmt.Sprintf("t%d", r.IntN(50))}
			p.TargetLabels = map[string]string{"team": fmt.Sprintf("team%d", r.IntN(7))}
		default:
			p.Targets = []string{fmt.Sprintf("t%d", r.IntN(50)), fmt.Sprintf("t%d", r.IntN(50))}
		}
		if r.IntN(10) == 0 {
			p.Grants = []string{"*"}
		}
		if r.IntN(4) == 0 {
			p.Users = []string{fmt.Sprintf("u%d", r.IntN(20))}
		}
		switch r.IntN(4) {
		case 0:
			p.Approvals, p.ApproverGroups = 1+r.IntN(2), []string{"approvers"}
		case 1:
			p.Steps = []Step{{Approvals: 1, ApproverGroups: []string{"a"}}, {Approvals: 1, ApproverGroups: []string{"b"}}}
		}
		if r.IntN(5) == 0 {
			p.DefaultDuration = p.MaxDuration / 2
		}
		if r.IntN(6) == 0 {
			p.ReasonPattern = `^INC-\d+`
		}
		if r.IntN(8) == 0 {
			p.AutoApproveIf = `request.duration <= duration("2h") && target.labels.env != "prod"`
		}
		if r.IntN(10) == 0 {
			p.BreakGlass = &BreakGlass{Groups: []string{"oncall"}, MaxDuration: time.Hour}
		}
		ps = append(ps, p)
	}
	return ps, targets
}

func randomInput(r *rand.Rand, targets []TargetInfo) Input {
	grants := []string{"readonly", "deploy", "dba", "admin", "none"}
	in := Input{
		User:     fmt.Sprintf("u%d", r.IntN(25)),
		Groups:   []string{fmt.Sprintf("g%d", r.IntN(10)), fmt.Sprintf("g%d", r.IntN(10))},
		Target:   targets[r.IntN(len(targets))].Name,
		Grant:    grants[r.IntN(len(grants))],
		Duration: time.Duration(r.IntN(10)) * time.Hour,
		Now:      weekday,
	}
	if r.IntN(20) == 0 {
		in.Target = "unknown"
	}
	if r.IntN(2) == 0 {
		in.Reason = fmt.Sprintf("INC-%d", r.IntN(1000))
	}
	if r.IntN(10) == 0 {
		in.BreakGlass = true
		in.Groups = append(in.Groups, "oncall")
	}
	if r.IntN(10) == 0 {
		in.Extension, in.TotalSoFar = true, time.Duration(r.IntN(6))*time.Hour
	}
	return in
}

func TestDecideConcurrent(t *testing.T) {
	s := mustCompile(t, examplePolicies()...)
	in := Input{User: "erin", Groups: []string{"eng"}, Target: "db-prod", Grant: "readonly", Now: weekday}
	want := s.Decide(in)
	errs := make(chan string, 8)
	for range 8 {
		go func() {
			for range 200 {
				if got := s.Decide(in); got.Decision != want.Decision || *got.Policy != *want.Policy {
					errs <- fmt.Sprintf("Decide = %s by %s; want %s by %s", got.Decision, *got.Policy, want.Decision, *want.Policy)
					return
				}
			}
			errs <- ""
		}()
	}
	for range 8 {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}
