package policy

import (
	"fmt"
	"slices"
)

// ApproverGroupWarnings names every approver group of ps (of each step)
// that no user has, according to has, so nobody can ever approve what that
// step guards: most often a misspelt group. A step is only unapprovable
// when none of its groups has a member; the warning says so.
func ApproverGroupWarnings(ps []Policy, has func(group string) bool) []string {
	var out []string
	for _, p := range ps {
		steps := p.Steps
		if len(steps) == 0 && len(p.ApproverGroups) > 0 {
			steps = []Step{{Approvals: p.Approvals, ApproverGroups: p.ApproverGroups}}
		}
		for i, st := range steps {
			var missing []string
			for _, g := range st.ApproverGroups {
				if !has(g) && !slices.Contains(missing, g) {
					missing = append(missing, g)
				}
			}
			if len(missing) == 0 {
				continue
			}
			where := fmt.Sprintf("policy %q", p.Name)
			if p.Line > 0 {
				where = fmt.Sprintf("line %d: %s", p.Line, where)
			}
			if len(steps) > 1 {
				where += fmt.Sprintf(" step %d", i+1)
			}
			what := fmt.Sprintf("%s: approver group %s has no member", where, quoted(missing))
			if len(missing) > 1 {
				what = fmt.Sprintf("%s: approver groups %s have no member", where, quoted(missing))
			}
			if len(missing) == len(st.ApproverGroups) {
				what += "; nobody can approve it"
			}
			out = append(out, what)
		}
	}
	return out
}

func quoted(xs []string) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", x)
	}
	return s
}
