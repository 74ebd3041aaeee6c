package policy

import (
	"slices"
	"strings"
	"time"
)

// Offer is one grant of one target that a user may ask for, with the
// terms of every policy that would consider the request.
type Offer struct {
	Target string `json:"target"`
	Kind   string `json:"kind"`
	Grant  string `json:"grant"`
	// Terms are the policies that cover this user, target and grant, in
	// policy order; a request is decided among them by Decide.
	Terms []Terms `json:"terms"`
}

// Terms are what one policy asks of a request.
type Terms struct {
	Policy string `json:"policy"`
	// BreakGlass is true when the policy offers this user break-glass
	// access only (emergency access taken without approval, always with a
	// reason); MaxDuration is then the break-glass limit.
	BreakGlass      bool   `json:"break_glass"`
	MaxDuration     string `json:"max_duration"`
	DefaultDuration string `json:"default_duration,omitempty"`
	// Steps are the approvals required; none means automatic (unless
	// AutoApproveIf is set, which decides per request).
	Steps          []Step `json:"steps"`
	AutoApproveIf  string `json:"auto_approve_if,omitempty"`
	ReasonRequired bool   `json:"reason_required"`
	ReasonPattern  string `json:"reason_pattern,omitempty"`
}

// Catalog lists the grants user (in groups) may ask for under the
// policies, each with the terms of the policies that cover it, ordered by
// target and grant. A policy offers its grants to the users it names and
// the members of its groups, and break-glass access to the members of its
// break-glass groups.
func (s *Set) Catalog(user string, groups []string) []Offer {
	in := Input{User: user, Groups: groups}
	var buf [4]uint64
	who := s.requester(&in, buf[:0])
	names := make([]string, 0, len(s.targets))
	for n := range s.targets {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []Offer
	for _, tn := range names {
		t := s.targets[tn]
		grants := slices.Sorted(slices.Values(t.Grants))
		for _, g := range grants {
			o := Offer{Target: tn, Kind: t.Kind, Grant: g}
			for _, c := range s.compiled {
				if !c.coversTarget(tn) || !c.coversGrant(g) {
					continue
				}
				if c.subject(&who) {
					o.Terms = append(o.Terms, c.terms(false))
				}
				if c.p.BreakGlass != nil && who.inAny(c.bgGroups) {
					o.Terms = append(o.Terms, c.terms(true))
				}
			}
			if len(o.Terms) > 0 {
				out = append(out, o)
			}
		}
	}
	if out == nil {
		out = []Offer{}
	}
	return out
}

func (c *compiled) terms(bg bool) Terms {
	p := c.p
	t := Terms{Policy: p.Name, BreakGlass: bg, MaxDuration: durText(c.limit(bg)), DefaultDuration: durText(p.DefaultDuration),
		Steps: []Step{}, ReasonRequired: bg || c.needReason, ReasonPattern: p.ReasonPattern}
	if !bg {
		t.Steps = cloneSteps(c.steps)
		t.AutoApproveIf = strings.TrimSpace(p.AutoApproveIf)
	}
	if t.Steps == nil {
		t.Steps = []Step{}
	}
	return t
}

func durText(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}
