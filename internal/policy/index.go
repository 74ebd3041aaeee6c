package policy

import (
	"slices"
)

// index finds the policies that may cover a target and grant without
// looking at the others. Label selectors are resolved to target names at
// compile time, so every policy lands in exactly one of four buckets by
// whether it names its targets and grants or takes any. Each bucket holds
// policy positions in ascending order.
type index struct {
	exact          map[tgKey][]int32 // named target, named grant
	targetAnyGrant map[string][]int32
	grantAnyTarget map[string][]int32
	any            []int32 // any target, any grant
}

type tgKey struct{ target, grant string }

func buildIndex(cs []*compiled, targets []TargetInfo) index {
	ix := index{
		exact:          map[tgKey][]int32{},
		targetAnyGrant: map[string][]int32{},
		grantAnyTarget: map[string][]int32{},
	}
	for _, c := range cs {
		pos := int32(c.pos)
		grants := make([]string, 0, len(c.grants))
		for g := range c.grants {
			if g != "*" {
				grants = append(grants, g)
			}
		}
		switch {
		case c.anyTarget && c.anyGrant:
			ix.any = append(ix.any, pos)
		case c.anyTarget:
			for _, g := range grants {
				ix.grantAnyTarget[g] = append(ix.grantAnyTarget[g], pos)
			}
		case c.anyGrant:
			for t := range c.targets {
				ix.targetAnyGrant[t] = append(ix.targetAnyGrant[t], pos)
			}
		default:
			for t := range c.targets {
				for _, g := range grants {
					k := tgKey{t, g}
					ix.exact[k] = append(ix.exact[k], pos)
				}
			}
		}
	}
	return ix
}

// candidates appends to buf, in policy order, the positions of the
// policies that cover target and grant, and returns it.
func (ix *index) candidates(target, grant string, buf []int32) []int32 {
	buf = append(buf, ix.exact[tgKey{target, grant}]...)
	buf = append(buf, ix.targetAnyGrant[target]...)
	buf = append(buf, ix.grantAnyTarget[grant]...)
	buf = append(buf, ix.any...)
	// The buckets are disjoint, so sorting restores policy order.
	slices.Sort(buf)
	return buf
}
