package scim

import (
	"fmt"
	"strings"
)

// patchPath is the target of a PATCH operation (RFC 7644 section 3.5.2):
// an attribute path, optionally followed by a value filter on a
// multi-valued attribute and a sub-attribute of the matching elements, as
// in `emails[type eq "work"].value`.
type patchPath struct {
	Attr   attrPath
	Filter filterNode // nil without "[...]"
	Sub    string     // sub-attribute after "]"
}

func (p *patchPath) String() string {
	if p.Filter == nil {
		return p.Attr.String()
	}
	s := p.Attr.String() + "[" + p.Filter.String() + "]"
	if p.Sub != "" {
		s += "." + p.Sub
	}
	return s
}

// sub is the sub-attribute the path selects, before or after a filter.
func (p *patchPath) sub() string {
	if p.Filter != nil {
		return p.Sub
	}
	return p.Attr.Sub
}

// parsePath parses a PATCH operation's path.
func parsePath(s string) (*patchPath, error) {
	if len(s) > maxFilterLen {
		return nil, fmt.Errorf("path longer than %d bytes", maxFilterLen)
	}
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 || toks[0].kind != tokWord {
		return nil, fmt.Errorf("path must start with an attribute name")
	}
	attr, err := parseAttrPath(toks[0].text)
	if err != nil {
		return nil, err
	}
	pp := &patchPath{Attr: attr}
	if len(toks) == 1 {
		return pp, nil
	}
	if toks[1].kind != tokLBracket || attr.Sub != "" {
		return nil, fmt.Errorf("invalid path %q", s)
	}
	p := &parser{toks: toks, pos: 2}
	pp.Filter, err = p.or()
	if err != nil {
		return nil, err
	}
	if t := p.next(); t == nil || t.kind != tokRBracket {
		return nil, fmt.Errorf(`missing "]" in path`)
	}
	if t := p.next(); t != nil {
		sub, ok := strings.CutPrefix(t.text, ".")
		if t.kind != tokWord || !ok || !isAttrName(sub) {
			return nil, fmt.Errorf("invalid sub-attribute after \"]\" in path %q", s)
		}
		pp.Sub = sub
	}
	if p.peek() != nil {
		return nil, fmt.Errorf("unexpected text at the end of path %q", s)
	}
	return pp, nil
}
