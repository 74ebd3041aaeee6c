// Package policy decides access requests: given a request, the compiled
// policies and the current time, it returns a decision (deny, automatic
// approval, approval steps or break-glass) with an explanation of every
// policy it considered. It is pure: no I/O, no clock, no global state.
package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/cel-go/cel"

	"github.com/mayflyhq/mayfly"
)

// Limits on what a policy may say.
const (
	// MaxApprovals bounds the approvals of one step.
	MaxApprovals = 100
	// MaxSteps bounds the approval steps of one policy.
	MaxSteps = 10
	// MaxPatternLen bounds reason_pattern, in bytes.
	MaxPatternLen = 1024
	// MaxExprLen bounds auto_approve_if, in bytes.
	MaxExprLen = 4096
	// MinDuration is the shortest access that may be requested.
	MinDuration = time.Second
)

// Defaults applied to the chosen policy's timers when they are unset.
const (
	DefaultPendingTTL       = 24 * time.Hour
	DefaultActivationWindow = time.Hour
)

// Policy is one rule as written in the configuration file.
type Policy struct {
	Name string `yaml:"name"`
	// Groups and Users are who the policy applies to: a user listed in
	// Users or a member of any of Groups.
	Groups []string `yaml:"groups"`
	Users  []string `yaml:"users"`
	// Targets names the targets the policy covers; "*" covers any target.
	Targets []string `yaml:"targets"`
	// TargetLabels selects targets by label: a target is covered when it is
	// named in Targets or carries every one of these labels.
	TargetLabels map[string]string `yaml:"target_labels"`
	// Grants names the grants the policy covers; "*" covers any grant.
	Grants []string `yaml:"grants"`
	// MaxDuration caps one request (or one extension).
	MaxDuration time.Duration `yaml:"max_duration"`
	// DefaultDuration applies when the request gives no duration.
	DefaultDuration time.Duration `yaml:"default_duration"`
	// MaxTotalDuration caps a lease including its extensions; unset means
	// max_duration, so leases cannot be extended.
	MaxTotalDuration time.Duration `yaml:"max_total_duration"`
	// Approvals (0 = automatic) from ApproverGroups: shorthand for one step.
	Approvals      int      `yaml:"approvals"`
	ApproverGroups []string `yaml:"approver_groups"`
	// ReasonRequired asks for a non-empty reason; ReasonPattern (RE2)
	// implies it and must match the reason.
	ReasonRequired bool   `yaml:"reason_required"`
	ReasonPattern  string `yaml:"reason_pattern"`
	// AutoApproveIf is a CEL condition; when it holds the request is
	// approved automatically, otherwise the approval steps apply.
	AutoApproveIf string `yaml:"auto_approve_if"`
	// Steps are approval steps that must all pass, in order.
	Steps []Step `yaml:"steps"`
	// PendingTTL is how long a request may wait for approval (default 24h).
	PendingTTL time.Duration `yaml:"pending_ttl"`
	// ActivationWindow is how long an approved request may wait to be
	// activated (default 1h).
	ActivationWindow time.Duration `yaml:"activation_window"`
	// IdleTimeout revokes a lease unused this long (0 = off).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// BreakGlass allows emergency access without approval.
	BreakGlass *BreakGlass `yaml:"break_glass"`
	// SlackChannel is the Slack channel where the approval messages of
	// this policy's requests go (a channel id or #name; default:
	// slack.default_channel). The policy engine does not use it.
	SlackChannel string `yaml:"slack_channel"`
	// Line is the policy's line in the configuration file, for messages.
	Line int `yaml:"-"`
}

// Step is one approval step: Approvals distinct approvers, none of them the
// requester, each a member of any of ApproverGroups.
type Step struct {
	Approvals      int      `yaml:"approvals" json:"approvals"`
	ApproverGroups []string `yaml:"approver_groups" json:"approver_groups"`
}

// BreakGlass lets members of Groups take access at once, without approval,
// for at most MaxDuration, always with a reason.
type BreakGlass struct {
	Groups      []string      `yaml:"groups"`
	MaxDuration time.Duration `yaml:"max_duration"`
}

// TargetInfo is what the policy engine knows about a target.
type TargetInfo struct {
	Name   string
	Kind   string
	Labels map[string]string
	Grants []string
}

// Set is a compiled, immutable set of policies, safe for concurrent use.
type Set struct {
	policies []Policy
	compiled []*compiled
	targets  map[string]*TargetInfo
	index    index
	symbols  symbols
}

// symbols interns the user and group names the policies mention, so that a
// decision resolves the requester's names once and then compares integers.
type symbols struct {
	users  map[string]int32
	groups map[string]int32
}

func (sy *symbols) intern(m map[string]int32, names []string) []int32 {
	ids := make([]int32, 0, len(names))
	for _, n := range names {
		id, ok := m[n]
		if !ok {
			id = int32(len(m))
			m[n] = id
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// compiled is a policy prepared for fast decisions.
type compiled struct {
	p          *Policy
	pos        int
	users      []int32 // interned names, see symbols
	groups     []int32
	bgGroups   []int32
	anyTarget  bool
	targets    map[string]struct{} // named targets plus those selected by labels
	anyGrant   bool
	grants     map[string]struct{}
	reason     *regexp.Regexp
	needReason bool
	prg        cel.Program
	steps      []Step
	approvals  int // total over steps
	maxTotal   time.Duration
}

// Compile validates and compiles policies. targets are the configured
// targets, used to resolve label selectors and to reject unknown target and
// grant names; with nil targets, names are not checked. The error names the
// first invalid policy, its line when known, and the reason.
func Compile(policies []Policy, targets []TargetInfo) (*Set, error) {
	s := &Set{
		policies: slices.Clone(policies),
		targets:  make(map[string]*TargetInfo, len(targets)),
		symbols:  symbols{users: map[string]int32{}, groups: map[string]int32{}},
	}
	for i := range targets {
		t := &targets[i]
		s.targets[t.Name] = t
	}
	names := make(map[string]int, len(policies))
	for i := range s.policies {
		p := &s.policies[i]
		if prev, ok := names[p.Name]; ok && p.Name != "" {
			return nil, policyErr(p, "is defined twice (first at policy %d)", prev+1)
		}
		names[p.Name] = i
		c, err := compileOne(p, i, targets)
		if err != nil {
			return nil, err
		}
		c.users = s.symbols.intern(s.symbols.users, p.Users)
		c.groups = s.symbols.intern(s.symbols.groups, p.Groups)
		if p.BreakGlass != nil {
			c.bgGroups = s.symbols.intern(s.symbols.groups, p.BreakGlass.Groups)
		}
		s.compiled = append(s.compiled, c)
	}
	s.index = buildIndex(s.compiled, targets)
	return s, nil
}

// Policies returns a copy of the policies in the set, in order.
func (s *Set) Policies() []Policy {
	return slices.Clone(s.policies)
}

// Policy returns the named policy.
func (s *Set) Policy(name string) (Policy, bool) {
	for _, p := range s.policies {
		if p.Name == name {
			return p, true
		}
	}
	return Policy{}, false
}

func policyErr(p *Policy, format string, args ...any) error {
	where := fmt.Sprintf("policy %q", p.Name)
	if p.Line > 0 {
		where += fmt.Sprintf(" (line %d)", p.Line)
	}
	return mayfly.Errorf(mayfly.EINVALID, "%s: %s", where, fmt.Sprintf(format, args...))
}

func set(xs []string) map[string]struct{} {
	m := make(map[string]struct{}, len(xs))
	for _, x := range xs {
		m[x] = struct{}{}
	}
	return m
}

func compileOne(p *Policy, pos int, targets []TargetInfo) (*compiled, error) {
	if p.Name == "" {
		return nil, policyErr(p, "name is required")
	}
	if strings.ContainsFunc(p.Name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return nil, policyErr(p, "name contains control characters")
	}
	c := &compiled{p: p, pos: pos, targets: map[string]struct{}{}}
	for _, field := range []struct {
		name string
		xs   []string
	}{{"users", p.Users}, {"groups", p.Groups}, {"approver_groups", p.ApproverGroups}} {
		for _, x := range field.xs {
			if x == "" || x == "*" {
				return nil, policyErr(p, "%s: %q is not a valid name", field.name, x)
			}
		}
	}
	if len(p.Users) == 0 && len(p.Groups) == 0 && p.BreakGlass == nil {
		return nil, policyErr(p, "applies to nobody: set users, groups or break_glass")
	}

	// Targets and grants.
	if len(p.Targets) == 0 && len(p.TargetLabels) == 0 {
		return nil, policyErr(p, "covers no target: set targets or target_labels")
	}
	for _, t := range p.Targets {
		switch {
		case t == "*":
			c.anyTarget = true
		case t == "":
			return nil, policyErr(p, "targets: empty target name")
		case targets != nil && !slices.ContainsFunc(targets, func(ti TargetInfo) bool { return ti.Name == t }):
			return nil, policyErr(p, "unknown target %q", t)
		default:
			c.targets[t] = struct{}{}
		}
	}
	for k := range p.TargetLabels {
		if k == "" {
			return nil, policyErr(p, "target_labels: empty label name")
		}
	}
	if len(p.TargetLabels) > 0 {
		for _, t := range targets {
			if labelsMatch(p.TargetLabels, t.Labels) {
				c.targets[t.Name] = struct{}{}
			}
		}
	}
	if len(p.Grants) == 0 {
		return nil, policyErr(p, "covers no grant: set grants (\"*\" for any)")
	}
	c.grants = set(p.Grants)
	for _, g := range p.Grants {
		switch {
		case g == "*":
			c.anyGrant = true
		case g == "":
			return nil, policyErr(p, "grants: empty grant name")
		case targets != nil && !c.grantDefined(g, targets):
			return nil, policyErr(p, "grant %q is not defined on any target the policy covers", g)
		}
	}

	// Durations.
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"max_duration", p.MaxDuration}, {"default_duration", p.DefaultDuration},
		{"max_total_duration", p.MaxTotalDuration}, {"pending_ttl", p.PendingTTL},
		{"activation_window", p.ActivationWindow}, {"idle_timeout", p.IdleTimeout},
	} {
		if d.v < 0 {
			return nil, policyErr(p, "%s %s is negative", d.name, d.v)
		}
		if d.v > 0 && d.v < MinDuration {
			return nil, policyErr(p, "%s %s is under the minimum of %s", d.name, d.v, MinDuration)
		}
	}
	if len(p.Users) > 0 || len(p.Groups) > 0 {
		if p.MaxDuration == 0 {
			return nil, policyErr(p, "max_duration is required")
		}
	}
	if p.MaxDuration > 0 && p.DefaultDuration > p.MaxDuration {
		return nil, policyErr(p, "default_duration %s exceeds max_duration %s", p.DefaultDuration, p.MaxDuration)
	}
	if p.MaxTotalDuration > 0 && p.MaxTotalDuration < p.MaxDuration {
		return nil, policyErr(p, "max_total_duration %s is less than max_duration %s", p.MaxTotalDuration, p.MaxDuration)
	}
	c.maxTotal = p.MaxTotalDuration
	if c.maxTotal == 0 {
		c.maxTotal = p.MaxDuration
	}

	// Approval.
	if p.Approvals < 0 {
		return nil, policyErr(p, "approvals %d is negative", p.Approvals)
	}
	if p.Approvals > MaxApprovals {
		return nil, policyErr(p, "approvals %d exceeds the limit of %d", p.Approvals, MaxApprovals)
	}
	if p.Approvals > 0 && len(p.ApproverGroups) == 0 {
		return nil, policyErr(p, "approvals %d needs approver_groups", p.Approvals)
	}
	if p.Approvals == 0 && len(p.ApproverGroups) > 0 {
		return nil, policyErr(p, "approver_groups is set but approvals is 0")
	}
	if len(p.Steps) > 0 && (p.Approvals > 0 || len(p.ApproverGroups) > 0) {
		return nil, policyErr(p, "set either approvals/approver_groups or steps, not both")
	}
	if len(p.Steps) > MaxSteps {
		return nil, policyErr(p, "%d steps exceed the limit of %d", len(p.Steps), MaxSteps)
	}
	for i, st := range p.Steps {
		if st.Approvals < 1 || st.Approvals > MaxApprovals {
			return nil, policyErr(p, "step %d: approvals %d must be between 1 and %d", i+1, st.Approvals, MaxApprovals)
		}
		if len(st.ApproverGroups) == 0 {
			return nil, policyErr(p, "step %d: approver_groups is required", i+1)
		}
		for _, g := range st.ApproverGroups {
			if g == "" || g == "*" {
				return nil, policyErr(p, "step %d: approver_groups: %q is not a valid group", i+1, g)
			}
		}
	}
	switch {
	case len(p.Steps) > 0:
		c.steps = cloneSteps(p.Steps)
	case p.Approvals > 0:
		c.steps = []Step{{Approvals: p.Approvals, ApproverGroups: slices.Clone(p.ApproverGroups)}}
	}
	for _, st := range c.steps {
		c.approvals += st.Approvals
	}

	// Reason.
	c.needReason = p.ReasonRequired || p.ReasonPattern != ""
	if p.ReasonPattern != "" {
		if len(p.ReasonPattern) > MaxPatternLen {
			return nil, policyErr(p, "reason_pattern is longer than %d bytes", MaxPatternLen)
		}
		re, err := regexp.Compile(p.ReasonPattern)
		if err != nil {
			return nil, policyErr(p, "reason_pattern %q: %v", p.ReasonPattern, err)
		}
		c.reason = re
	}

	// Automatic approval condition.
	if p.AutoApproveIf != "" {
		prg, err := compileCondition(p.AutoApproveIf)
		if err != nil {
			return nil, policyErr(p, "auto_approve_if: %v", err)
		}
		c.prg = prg
	}

	// Break-glass.
	if bg := p.BreakGlass; bg != nil {
		if len(bg.Groups) == 0 {
			return nil, policyErr(p, "break_glass: groups is required")
		}
		for _, g := range bg.Groups {
			if g == "" || g == "*" {
				return nil, policyErr(p, "break_glass: groups: %q is not a valid group", g)
			}
		}
		if bg.MaxDuration <= 0 {
			return nil, policyErr(p, "break_glass: max_duration must be positive")
		}
		if bg.MaxDuration < MinDuration {
			return nil, policyErr(p, "break_glass: max_duration %s is under the minimum of %s", bg.MaxDuration, MinDuration)
		}
		if p.MaxTotalDuration > 0 && bg.MaxDuration > p.MaxTotalDuration {
			return nil, policyErr(p, "break_glass: max_duration %s exceeds max_total_duration %s", bg.MaxDuration, p.MaxTotalDuration)
		}
	}
	return c, nil
}

// grantDefined reports whether grant g exists on any target the policy covers.
func (c *compiled) grantDefined(g string, targets []TargetInfo) bool {
	for _, t := range targets {
		if !c.anyTarget {
			if _, ok := c.targets[t.Name]; !ok {
				continue
			}
		}
		if slices.Contains(t.Grants, g) {
			return true
		}
	}
	return false
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		got, ok := labels[k]
		if !ok || got != v {
			return false
		}
	}
	return true
}

func cloneSteps(steps []Step) []Step {
	out := make([]Step, len(steps))
	for i, st := range steps {
		out[i] = Step{Approvals: st.Approvals, ApproverGroups: slices.Clone(st.ApproverGroups)}
	}
	return out
}
