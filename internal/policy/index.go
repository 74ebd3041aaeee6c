package policy

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
	// The buckets are disjoint and each is sorted: merge them.
	lists := [4][]int32{
		ix.exact[tgKey{target, grant}],
		ix.targetAnyGrant[target],
		ix.grantAnyTarget[grant],
		ix.any,
	}
	for {
		best := -1
		for i, l := range lists {
			if len(l) > 0 && (best < 0 || l[0] < lists[best][0]) {
				best = i
			}
		}
		if best < 0 {
			return buf
		}
		buf = append(buf, lists[best][0])
		lists[best] = lists[best][1:]
	}
}
