package scim

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on filters and paths, so a request cannot make the parser recurse
// without bound or hold on to a huge expression.
const (
	maxFilterLen   = 4096
	maxFilterDepth = 32
)

// attrPath is an attribute reference: an optional schema URN, an attribute
// name and an optional sub-attribute name (RFC 7644 section 3.10).
type attrPath struct {
	URN  string
	Name string
	Sub  string
}

func (p attrPath) String() string {
	s := p.Name
	if p.Sub != "" {
		s += "." + p.Sub
	}
	if p.URN != "" {
		s = p.URN + ":" + s
	}
	return s
}

// key is the lowercase dotted name, without the URN.
func (p attrPath) key() string {
	if p.Sub == "" {
		return strings.ToLower(p.Name)
	}
	return strings.ToLower(p.Name + "." + p.Sub)
}

// filterNode is a parsed filter expression (RFC 7644 section 3.4.2.2).
type filterNode interface {
	String() string
}

// logicalExpr is "left and right" or "left or right".
type logicalExpr struct {
	Op          string // "and" or "or"
	Left, Right filterNode
}

func (e *logicalExpr) String() string {
	return "(" + e.Left.String() + " " + e.Op + " " + e.Right.String() + ")"
}

// notExpr is "not (x)".
type notExpr struct {
	X filterNode
}

func (e *notExpr) String() string { return "not (" + e.X.String() + ")" }

// compareExpr is "path op value", or "path pr" with no value.
type compareExpr struct {
	Path  attrPath
	Op    string // lowercase: eq ne co sw ew gt ge lt le pr
	Value any    // string, bool, float64 or nil (null); unused for pr
}

func (e *compareExpr) String() string {
	if e.Op == "pr" {
		return e.Path.String() + " pr"
	}
	return e.Path.String() + " " + e.Op + " " + literal(e.Value)
}

// valuePathExpr is "path[filter]": some element of a multi-valued
// attribute matches filter.
type valuePathExpr struct {
	Path   attrPath
	Filter filterNode
}

func (e *valuePathExpr) String() string {
	return e.Path.String() + "[" + e.Filter.String() + "]"
}

func literal(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case string:
		// As JSON, without escaping <, > and & (the filter is no HTML).
		var b strings.Builder
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(false)
		e.Encode(v)
		return strings.TrimSuffix(b.String(), "\n")
	}
	panic(fmt.Sprintf("scim: unexpected literal %T", v))
}

var compareOps = map[string]bool{
	"eq": true, "ne": true, "co": true, "sw": true, "ew": true,
	"gt": true, "ge": true, "lt": true, "le": true, "pr": true,
}

// token kinds.
const (
	tokWord   = iota // attribute path, keyword, number, true/false/null
	tokString        // a JSON string, decoded
	tokLParen
	tokRParen
	tokLBracket
	tokRBracket
)

type token struct {
	kind int
	text string // word text or decoded string
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == ':' || c == '.' || c == '$' || c == '+'
}

// tokenize splits a filter or path into tokens.
func tokenize(s string) ([]token, error) {
	if !utf8.ValidString(s) {
		// A JSON string literal would read such bytes as U+FFFD: refuse
		// them rather than match something the client did not send.
		return nil, fmt.Errorf("not valid UTF-8")
	}
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			toks = append(toks, token{kind: tokLParen})
			i++
		case c == ')':
			toks = append(toks, token{kind: tokRParen})
			i++
		case c == '[':
			toks = append(toks, token{kind: tokLBracket})
			i++
		case c == ']':
			toks = append(toks, token{kind: tokRBracket})
			i++
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at offset %d", i)
			}
			var str string
			if err := json.Unmarshal([]byte(s[i:j+1]), &str); err != nil {
				return nil, fmt.Errorf("invalid string at offset %d", i)
			}
			toks = append(toks, token{kind: tokString, text: str})
			i = j + 1
		case isWordByte(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			toks = append(toks, token{kind: tokWord, text: s[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("unexpected character %q at offset %d", c, i)
		}
	}
	return toks, nil
}

func isAttrName(s string) bool {
	if s == "$ref" {
		return true
	}
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// parseAttrPath parses "[urn:...:]name[.sub]".
func parseAttrPath(s string) (attrPath, error) {
	var p attrPath
	rest := s
	if len(s) > 4 && strings.EqualFold(s[:4], "urn:") {
		i := strings.LastIndexByte(s, ':')
		p.URN, rest = s[:i], s[i+1:]
	}
	name, sub, dotted := strings.Cut(rest, ".")
	if !isAttrName(name) || dotted && !isAttrName(sub) {
		return attrPath{}, fmt.Errorf("invalid attribute path %q", s)
	}
	p.Name, p.Sub = name, sub
	return p, nil
}

type parser struct {
	toks  []token
	pos   int
	depth int
}

func (p *parser) peek() *token {
	if p.pos < len(p.toks) {
		return &p.toks[p.pos]
	}
	return nil
}

func (p *parser) next() *token {
	t := p.peek()
	if t != nil {
		p.pos++
	}
	return t
}

func (p *parser) keyword(kw string) bool {
	t := p.peek()
	return t != nil && t.kind == tokWord && strings.EqualFold(t.text, kw)
}

// parseFilter parses a complete filter expression.
func parseFilter(s string) (filterNode, error) {
	if len(s) > maxFilterLen {
		return nil, fmt.Errorf("filter longer than %d bytes", maxFilterLen)
	}
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.peek() != nil {
		return nil, fmt.Errorf("unexpected %s after the end of the filter", p.describe(p.peek()))
	}
	return n, nil
}

func (p *parser) describe(t *token) string {
	switch t.kind {
	case tokWord:
		return strconv.Quote(t.text)
	case tokString:
		return "string"
	case tokLParen:
		return `"("`
	case tokRParen:
		return `")"`
	case tokLBracket:
		return `"["`
	default:
		return `"]"`
	}
}

func (p *parser) or() (filterNode, error) {
	left, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.keyword("or") {
		p.next()
		right, err := p.and()
		if err != nil {
			return nil, err
		}
		left = &logicalExpr{Op: "or", Left: left, Right: right}
	}
	return left, nil
}

func (p *parser) and() (filterNode, error) {
	left, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.keyword("and") {
		p.next()
		right, err := p.unary()
		if err != nil {
			return nil, err
		}
		left = &logicalExpr{Op: "and", Left: left, Right: right}
	}
	return left, nil
}

func (p *parser) unary() (filterNode, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxFilterDepth {
		return nil, fmt.Errorf("filter nested deeper than %d", maxFilterDepth)
	}
	t := p.peek()
	if t == nil {
		return nil, fmt.Errorf("unexpected end of filter")
	}
	if t.kind == tokWord && strings.EqualFold(t.text, "not") {
		if n := p.pos + 1; n < len(p.toks) && p.toks[n].kind == tokLParen {
			p.next()
			x, err := p.group()
			if err != nil {
				return nil, err
			}
			return &notExpr{X: x}, nil
		}
	}
	if t.kind == tokLParen {
		return p.group()
	}
	if t.kind != tokWord {
		return nil, fmt.Errorf("expected an attribute, got %s", p.describe(t))
	}
	p.next()
	path, err := parseAttrPath(t.text)
	if err != nil {
		return nil, err
	}
	if nt := p.peek(); nt != nil && nt.kind == tokLBracket {
		if path.Sub != "" {
			return nil, fmt.Errorf("invalid attribute path %q before \"[\"", t.text)
		}
		p.next()
		inner, err := p.or()
		if err != nil {
			return nil, err
		}
		if ct := p.next(); ct == nil || ct.kind != tokRBracket {
			return nil, fmt.Errorf(`missing "]"`)
		}
		return &valuePathExpr{Path: path, Filter: inner}, nil
	}
	ot := p.next()
	if ot == nil || ot.kind != tokWord || !compareOps[strings.ToLower(ot.text)] {
		return nil, fmt.Errorf("expected an operator after %q", t.text)
	}
	op := strings.ToLower(ot.text)
	if op == "pr" {
		return &compareExpr{Path: path, Op: op}, nil
	}
	vt := p.next()
	if vt == nil {
		return nil, fmt.Errorf("missing value after %q", ot.text)
	}
	var v any
	switch {
	case vt.kind == tokString:
		v = vt.text
	case vt.kind == tokWord && vt.text == "true":
		v = true
	case vt.kind == tokWord && vt.text == "false":
		v = false
	case vt.kind == tokWord && vt.text == "null":
		v = nil
	case vt.kind == tokWord && isNumber(vt.text):
		f, err := strconv.ParseFloat(vt.text, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid number %q", vt.text)
		}
		v = f
	default:
		return nil, fmt.Errorf("invalid value %s (strings must be quoted)", p.describe(vt))
	}
	return &compareExpr{Path: path, Op: op, Value: v}, nil
}

func (p *parser) group() (filterNode, error) {
	p.next() // "("
	x, err := p.or()
	if err != nil {
		return nil, err
	}
	if t := p.next(); t == nil || t.kind != tokRParen {
		return nil, fmt.Errorf(`missing ")"`)
	}
	return x, nil
}

// isNumber reports whether s is a JSON number.
func isNumber(s string) bool {
	var n json.Number
	return json.Unmarshal([]byte(s), &n) == nil
}

// caseExact lists the attributes compared case-sensitively (RFC 7643
// "caseExact": true); all other strings compare case-insensitively.
var caseExact = map[string]bool{
	"id":            true,
	"externalid":    true,
	"members.value": true,
	"groups.value":  true,
	"meta.version":  true,
	"meta.location": true,
}

// match reports whether the resource, in its JSON form, matches f. core is
// the resource's core schema URN: paths naming any other schema match
// nothing, since extension attributes are not stored.
func match(f filterNode, res map[string]any, core, prefix string) bool {
	switch f := f.(type) {
	case *logicalExpr:
		if f.Op == "and" {
			return match(f.Left, res, core, prefix) && match(f.Right, res, core, prefix)
		}
		return match(f.Left, res, core, prefix) || match(f.Right, res, core, prefix)
	case *notExpr:
		return !match(f.X, res, core, prefix)
	case *valuePathExpr:
		if f.Path.URN != "" && !strings.EqualFold(f.Path.URN, core) {
			return false
		}
		v, ok := lookup(res, f.Path.Name)
		if !ok {
			return false
		}
		elems, isList := v.([]any)
		if !isList {
			elems = []any{v}
		}
		for _, e := range elems {
			if m, ok := e.(map[string]any); ok && match(f.Filter, m, core, prefix+strings.ToLower(f.Path.Name)+".") {
				return true
			}
		}
		return false
	case *compareExpr:
		if f.Path.URN != "" && !strings.EqualFold(f.Path.URN, core) {
			return f.Op == "eq" && f.Value == nil
		}
		vals := values(res, f.Path)
		if f.Op == "pr" {
			for _, v := range vals {
				if present(v) {
					return true
				}
			}
			return false
		}
		if f.Value == nil {
			found := false
			for _, v := range vals {
				found = found || present(v)
			}
			return f.Op == "eq" && !found || f.Op == "ne" && found
		}
		exact := caseExact[prefix+f.Path.key()]
		if f.Op == "ne" {
			for _, v := range vals {
				if compare(v, "eq", f.Value, exact) {
					return false
				}
			}
			return true
		}
		for _, v := range vals {
			if compare(v, f.Op, f.Value, exact) {
				return true
			}
		}
		return false
	}
	return false
}

func present(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

func lookup(m map[string]any, name string) (any, bool) {
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

// values returns the simple values p refers to in res: all elements of a
// multi-valued attribute, and the "value" sub-attribute of complex
// elements when p names no sub-attribute.
func values(res map[string]any, p attrPath) []any {
	v, ok := lookup(res, p.Name)
	if !ok {
		return nil
	}
	elems, isList := v.([]any)
	if !isList {
		elems = []any{v}
	}
	var out []any
	for _, e := range elems {
		m, complex := e.(map[string]any)
		switch {
		case complex && p.Sub != "":
			if sv, ok := lookup(m, p.Sub); ok {
				out = append(out, sv)
			}
		case complex:
			if sv, ok := lookup(m, "value"); ok && isList {
				out = append(out, sv)
			}
		case p.Sub == "":
			out = append(out, e)
		}
	}
	return out
}

func compare(have any, op string, want any, exact bool) bool {
	switch w := want.(type) {
	case string:
		h, ok := have.(string)
		if !ok {
			return false
		}
		if !exact {
			h, w = strings.ToLower(h), strings.ToLower(w)
		}
		switch op {
		case "eq":
			return h == w
		case "co":
			return strings.Contains(h, w)
		case "sw":
			return strings.HasPrefix(h, w)
		case "ew":
			return strings.HasSuffix(h, w)
		case "gt":
			return h > w
		case "ge":
			return h >= w
		case "lt":
			return h < w
		case "le":
			return h <= w
		}
	case bool:
		h, ok := have.(bool)
		return ok && op == "eq" && h == w
	case float64:
		var h float64
		switch hv := have.(type) {
		case float64:
			h = hv
		case int:
			h = float64(hv)
		default:
			return false
		}
		switch op {
		case "eq":
			return h == w
		case "gt":
			return h > w
		case "ge":
			return h >= w
		case "lt":
			return h < w
		case "le":
			return h <= w
		}
	}
	return false
}
