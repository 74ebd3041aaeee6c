package policy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Decisions.
const (
	Deny               = "deny"
	Auto               = "auto"
	Approval           = "approval"
	BreakGlassDecision = "break_glass"
)

// Input is one request to decide.
type Input struct {
	User       string
	Groups     []string
	Target     string
	Grant      string
	Duration   time.Duration // 0 = the policy's default_duration
	Reason     string
	BreakGlass bool
	Now        time.Time
	// TotalSoFar is the duration already granted to the lease when this
	// is an extension (0 for new requests).
	TotalSoFar time.Duration
	Extension  bool
	// Explain asks for Decision.Considered to list every policy.
	Explain bool
}

// Decision is the outcome of a request and why.
type Decision struct {
	// Decision is Deny, Auto, Approval or BreakGlassDecision.
	Decision string `json:"decision"`
	// Policy names the chosen policy; nil when denied.
	Policy *string `json:"policy"`
	// Duration is the effective duration: the policy's default when the
	// request gave none.
	Duration     time.Duration `json:"-"`
	DurationText string        `json:"duration,omitempty"`
	// Steps are the approvals still required, in order; empty unless the
	// decision is Approval.
	Steps []Step `json:"steps"`
	// Reason says, for a denial, which rule of the nearest-matching policy
	// refused, in one line.
	Reason string `json:"reason,omitempty"`
	// Considered lists every policy and what it made of the request, in
	// policy order; only filled when Input.Explain is set.
	Considered []Considered `json:"considered"`
	// Timers of the chosen policy, defaults applied.
	PendingTTL       time.Duration `json:"-"`
	ActivationWindow time.Duration `json:"-"`
	IdleTimeout      time.Duration `json:"-"`
}

// Considered is one policy's verdict on a request. Matched is true when the
// policy allows the request (whether or not it was chosen).
type Considered struct {
	Name    string `json:"name"`
	Matched bool   `json:"matched"`
	Why     string `json:"why"`
}

// How far a policy got with a request; a denial quotes the policy that got
// furthest.
const (
	stageNoMatch    = iota // the policy does not cover this user, target or grant
	stageBreakGlass        // break-glass: user not designated
	stageDuration
	stageTotal
	stageReason
	stageCondition
	stageAllowed
)

type outcome struct {
	stage    int
	rule     rule
	decision string
	d        time.Duration
	steps    []Step
	// approvals is the total approvals required (0 for auto and break-glass).
	approvals int
	cond      string // what the condition said, if it was evaluated
}

// Decide decides in against the policies: deny by default; when several
// policies allow the request, the one with the least friction is chosen
// (automatic, then fewer approvals, then fewer steps, then policy order).
func (s *Set) Decide(in Input) Decision {
	t := s.targets[in.Target]
	var groupBuf [4]uint64
	who := s.requester(&in, groupBuf[:0])
	var ci *celInput
	var (
		best, near       outcome
		bestPos, nearPos = -1, -1
	)
	consider := func(c *compiled, covered bool) outcome {
		o := c.evaluate(&in, &who, t, &ci, covered)
		switch {
		case o.stage == stageAllowed:
			if bestPos < 0 || less(o, best) {
				best, bestPos = o, c.pos
			}
		case nearPos < 0 || o.stage > near.stage:
			near, nearPos = o, c.pos
		}
		return o
	}

	var all []outcome
	if in.Explain {
		all = make([]outcome, len(s.compiled))
		for i, c := range s.compiled {
			all[i] = consider(c, false)
		}
	} else {
		var buf [32]int32
		for _, i := range s.index.candidates(in.Target, in.Grant, buf[:0]) {
			consider(s.compiled[i], true)
		}
	}

	var d Decision
	if bestPos >= 0 {
		p := s.compiled[bestPos].p
		name := p.Name
		d = Decision{
			Decision:         best.decision,
			Policy:           &name,
			Duration:         best.d,
			DurationText:     best.d.String(),
			Steps:            cloneSteps(best.steps),
			PendingTTL:       orDefault(p.PendingTTL, DefaultPendingTTL),
			ActivationWindow: orDefault(p.ActivationWindow, DefaultActivationWindow),
			IdleTimeout:      p.IdleTimeout,
		}
	} else {
		d = Decision{Decision: Deny, Steps: []Step{}, Duration: in.Duration}
		if in.Duration > 0 {
			d.DurationText = in.Duration.String()
		}
		if nearPos >= 0 && near.stage > stageNoMatch {
			c := s.compiled[nearPos]
			d.Reason = fmt.Sprintf("policy %q: %s", c.p.Name, c.why(near, &in))
		} else if in.BreakGlass {
			d.Reason = fmt.Sprintf("no break-glass policy allows %s %s/%s", safe(in.User), safe(in.Target), safe(in.Grant))
		} else {
			d.Reason = fmt.Sprintf("no policy allows %s %s/%s", safe(in.User), safe(in.Target), safe(in.Grant))
		}
	}
	if in.Explain {
		d.Considered = make([]Considered, len(all))
		for i, o := range all {
			why := s.compiled[i].why(o, &in)
			if o.stage == stageAllowed {
				if i == bestPos {
					why = "chosen: " + why
				} else {
					why = fmt.Sprintf("allows (%s); not chosen: policy %q is preferred", why, s.compiled[bestPos].p.Name)
				}
			}
			d.Considered[i] = Considered{Name: s.compiled[i].p.Name, Matched: o.stage == stageAllowed, Why: why}
		}
	}
	return d
}

// less reports whether allowing outcome a has less friction than b.
func less(a, b outcome) bool {
	if a.approvals != b.approvals {
		return a.approvals < b.approvals
	}
	return len(a.steps) < len(b.steps)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// The rule that stopped a policy, or rulePass.
type rule uint8

const (
	rulePass rule = iota
	ruleNoBreakGlass
	ruleSubject
	ruleTarget
	ruleGrant
	ruleBreakGlassGroups
	ruleNegative
	ruleNoDefault
	ruleTooShort
	ruleTooLong
	ruleSoFarNegative
	ruleTotal
	ruleNoReason
	rulePattern
	ruleCondition
)

// evaluate applies one policy to a request. t is the target's description
// (nil for a target the set does not know); ci is built on first use. It
// formats no text: why does, only for the outcomes that are shown.
//
// covered says the index already found that the policy covers the target
// and grant.
func (c *compiled) evaluate(in *Input, who *requester, t *TargetInfo, ci **celInput, covered bool) outcome {
	p := c.p
	bg := in.BreakGlass
	switch {
	case bg && p.BreakGlass == nil:
		return outcome{stage: stageNoMatch, rule: ruleNoBreakGlass}
	case !bg && !c.subject(who):
		return outcome{stage: stageNoMatch, rule: ruleSubject}
	case !covered && !c.coversTarget(in.Target):
		return outcome{stage: stageNoMatch, rule: ruleTarget}
	case !covered && !c.coversGrant(in.Grant):
		return outcome{stage: stageNoMatch, rule: ruleGrant}
	case bg && !who.inAny(c.bgGroups):
		return outcome{stage: stageBreakGlass, rule: ruleBreakGlassGroups}
	}

	// Duration.
	limit := c.limit(bg)
	d := in.Duration
	switch {
	case d < 0:
		return outcome{stage: stageDuration, rule: ruleNegative, d: d}
	case d == 0 && bg:
		d = limit
		if p.DefaultDuration > 0 && p.DefaultDuration < limit {
			d = p.DefaultDuration
		}
	case d == 0 && p.DefaultDuration == 0:
		return outcome{stage: stageDuration, rule: ruleNoDefault}
	case d == 0:
		d = p.DefaultDuration
	}
	if d < MinDuration {
		return outcome{stage: stageDuration, rule: ruleTooShort, d: d}
	}
	if d > limit {
		return outcome{stage: stageDuration, rule: ruleTooLong, d: d}
	}

	// Extensions.
	if in.Extension || in.TotalSoFar != 0 {
		total, _ := c.total(bg)
		switch {
		case in.TotalSoFar < 0:
			return outcome{stage: stageTotal, rule: ruleSoFarNegative, d: d}
		case in.TotalSoFar > total || d > total-in.TotalSoFar:
			return outcome{stage: stageTotal, rule: ruleTotal, d: d}
		}
	}

	// Reason.
	if (c.needReason || bg) && strings.TrimSpace(in.Reason) == "" {
		return outcome{stage: stageReason, rule: ruleNoReason, d: d}
	}
	if c.reason != nil && !c.reason.MatchString(in.Reason) {
		return outcome{stage: stageReason, rule: rulePattern, d: d}
	}

	if bg {
		return outcome{stage: stageAllowed, decision: BreakGlassDecision, d: d}
	}

	// Approval.
	var cond string
	if c.prg != nil {
		if *ci == nil {
			*ci = newCELInput(in, t)
		}
		ok, why := evalCondition(c.prg, *ci, d)
		if ok {
			return outcome{stage: stageAllowed, decision: Auto, d: d, cond: why}
		}
		if len(c.steps) == 0 {
			return outcome{stage: stageCondition, rule: ruleCondition, d: d, cond: why}
		}
		cond = why
	}
	if len(c.steps) == 0 {
		return outcome{stage: stageAllowed, decision: Auto, d: d}
	}
	return outcome{stage: stageAllowed, decision: Approval, d: d, steps: c.steps, approvals: c.approvals, cond: cond}
}

// limit is the longest duration one request may ask for.
func (c *compiled) limit(bg bool) time.Duration {
	if bg {
		return c.p.BreakGlass.MaxDuration
	}
	return c.p.MaxDuration
}

// total is the longest a lease may last with its extensions, and the name
// of the setting that says so.
func (c *compiled) total(bg bool) (time.Duration, string) {
	switch {
	case c.p.MaxTotalDuration > 0:
		return c.maxTotal, "max_total_duration"
	case bg:
		return c.limit(bg), "break_glass max_duration (max_total_duration is not set)"
	}
	return c.maxTotal, "max_duration (max_total_duration is not set)"
}

// why says in one line what the policy made of the request.
func (c *compiled) why(o outcome, in *Input) string {
	p := c.p
	limitName := "max_duration"
	if in.BreakGlass {
		limitName = "break_glass max_duration"
	}
	switch o.rule {
	case ruleNoBreakGlass:
		return "no break_glass section"
	case ruleSubject:
		return c.subjectWhy(in.User)
	case ruleTarget:
		return c.targetWhy(in.Target)
	case ruleGrant:
		return fmt.Sprintf("grant %s not in grants %s", safe(in.Grant), list(p.Grants))
	case ruleBreakGlassGroups:
		return fmt.Sprintf("user %s not in break_glass groups %s", safe(in.User), list(p.BreakGlass.Groups))
	case ruleNegative:
		return fmt.Sprintf("duration %s is negative", o.d)
	case ruleNoDefault:
		return "no duration requested and the policy has no default_duration"
	case ruleTooShort:
		return fmt.Sprintf("duration %s is under the minimum of %s", o.d, MinDuration)
	case ruleTooLong:
		return fmt.Sprintf("duration %s exceeds %s %s", o.d, limitName, c.limit(in.BreakGlass))
	case ruleSoFarNegative:
		return fmt.Sprintf("duration granted so far %s is negative", in.TotalSoFar)
	case ruleTotal:
		total, name := c.total(in.BreakGlass)
		return fmt.Sprintf("duration %s on top of %s already granted exceeds %s %s", o.d, in.TotalSoFar, name, total)
	case ruleNoReason:
		if in.BreakGlass {
			return "break-glass access needs a reason"
		}
		return "a reason is required"
	case rulePattern:
		return fmt.Sprintf("reason %s does not match reason_pattern %s", quoteShort(in.Reason), quotePattern(p.ReasonPattern))
	case ruleCondition:
		return o.cond + " and the policy has no approval steps"
	}
	switch {
	case o.decision == BreakGlassDecision:
		return "break-glass, no approval"
	case o.decision == Auto && o.cond != "":
		return "automatic approval (" + o.cond + ")"
	case o.decision == Auto:
		return "automatic approval"
	case o.cond != "":
		return stepsText(o.steps) + " (" + o.cond + ")"
	}
	return stepsText(o.steps)
}

func (c *compiled) subject(who *requester) bool {
	return (who.user >= 0 && slices.Contains(c.users, who.user)) || who.inAny(c.groups)
}

// requester is the requester's user and groups as interned symbols.
type requester struct {
	user   int32 // -1 when no policy names the user
	groups []uint64
}

func (s *Set) requester(in *Input, buf []uint64) requester {
	r := requester{user: -1}
	if id, ok := s.symbols.users[in.User]; ok {
		r.user = id
	}
	words := (len(s.symbols.groups) + 63) / 64
	if cap(buf) < words {
		buf = make([]uint64, words)
	}
	r.groups = buf[:words]
	clear(r.groups)
	for _, g := range in.Groups {
		if id, ok := s.symbols.groups[g]; ok {
			r.groups[id/64] |= 1 << (id % 64)
		}
	}
	return r
}

// inAny reports whether the requester is in any of groups.
func (r *requester) inAny(groups []int32) bool {
	for _, id := range groups {
		if r.groups[id/64]&(1<<(id%64)) != 0 {
			return true
		}
	}
	return false
}

func (c *compiled) subjectWhy(user string) string {
	p := c.p
	user = safe(user)
	switch {
	case len(p.Users) == 0 && len(p.Groups) == 0:
		return fmt.Sprintf("user %s: the policy only allows break-glass", user)
	case len(p.Users) == 0:
		return fmt.Sprintf("user %s not in groups %s", user, list(p.Groups))
	case len(p.Groups) == 0:
		return fmt.Sprintf("user %s not in users %s", user, list(p.Users))
	}
	return fmt.Sprintf("user %s not in users %s or groups %s", user, list(p.Users), list(p.Groups))
}

func (c *compiled) coversTarget(name string) bool {
	if c.anyTarget {
		return true
	}
	_, ok := c.targets[name]
	return ok
}

func (c *compiled) targetWhy(name string) string {
	p := c.p
	var parts []string
	if len(p.Targets) > 0 {
		parts = append(parts, "targets "+list(p.Targets))
	}
	if len(p.TargetLabels) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(p.TargetLabels)) {
			kv = append(kv, k+"="+p.TargetLabels[k])
		}
		parts = append(parts, "target_labels "+list(kv))
	}
	return fmt.Sprintf("target %s not in %s", safe(name), strings.Join(parts, " or "))
}

func (c *compiled) coversGrant(name string) bool {
	if c.anyGrant {
		return true
	}
	_, ok := c.grants[name]
	return ok
}

func list(xs []string) string {
	return "[" + strings.Join(xs, " ") + "]"
}

func stepsText(steps []Step) string {
	if len(steps) == 1 {
		s := steps[0]
		return fmt.Sprintf("%d %s from %s", s.Approvals, plural(s.Approvals, "approval"), list(s.ApproverGroups))
	}
	var parts []string
	for _, s := range steps {
		parts = append(parts, fmt.Sprintf("%d from %s", s.Approvals, list(s.ApproverGroups)))
	}
	return fmt.Sprintf("%d steps of approval: %s", len(steps), strings.Join(parts, ", then "))
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// quoteShort quotes s, cut to a length fit for one line.
func quoteShort(s string) string {
	const limit = 64
	if len(s) <= limit {
		return fmt.Sprintf("%q", s)
	}
	cut := limit
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q", s[:cut]+"…")
}

// quotePattern quotes a regular expression as written, unless it holds
// characters that would break the line or the quoting.
func quotePattern(p string) string {
	if strings.ContainsFunc(p, func(r rune) bool { return r == '"' || !unicode.IsPrint(r) }) {
		return strconv.Quote(p)
	}
	return `"` + p + `"`
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// safe returns a name as is when it is plain, or quoted and cut short when
// it holds spaces or characters that would break a one-line message.
func safe(s string) string {
	if s != "" && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' }) {
		return s
	}
	return quoteShort(s)
}

// CanApprove reports whether approver, a member of approverGroups, may
// approve a step of a request made by requester, and if not, why. Nobody
// may approve their own request.
func CanApprove(step Step, approver string, approverGroups []string, requester string) (bool, string) {
	switch {
	case approver == "":
		return false, "no approver given"
	case approver == requester:
		return false, fmt.Sprintf("%s requested this access and cannot approve it", safe(approver))
	}
	for _, g := range approverGroups {
		if slices.Contains(step.ApproverGroups, g) {
			return true, fmt.Sprintf("%s may approve as a member of %s", safe(approver), safe(g))
		}
	}
	return false, fmt.Sprintf("%s is not in approver groups %s", safe(approver), list(step.ApproverGroups))
}
