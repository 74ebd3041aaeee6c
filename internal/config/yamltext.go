package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/mayflyhq/mayfly"
	"gopkg.in/yaml.v3"
)

var durationType = reflect.TypeOf(time.Duration(0))

// keyIndex names the key of each scalar value, by line and value, so a
// decoding error of yaml.v3 (which gives a line and a Go type) can say
// which key it is about.
type keyIndex map[int]map[string]string

func (k keyIndex) add(line int, value, key string) {
	if k[line] == nil {
		k[line] = map[string]string{}
	}
	k[line][value] = key
}

// prepareDurations walks the document beside the Go type it decodes into.
// In every time.Duration field it rewrites a value with days ("1d",
// "2d12h") to hours in data, lines kept, so the decoder accepts it; a
// value that is no duration is an error naming the key. It also indexes
// every scalar's key for yamlErr.
func prepareDurations(data []byte, root *yaml.Node, t reflect.Type, file string) ([]byte, keyIndex, error) {
	type edit struct {
		line, col int
		old, new  string
	}
	var edits []edit
	keys := keyIndex{}
	var firstErr error
	var walk func(n *yaml.Node, t reflect.Type, key string)
	walk = func(n *yaml.Node, t reflect.Type, key string) {
		if n == nil || t == nil {
			return
		}
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if n.Kind == yaml.DocumentNode {
			for _, c := range n.Content {
				walk(c, t, key)
			}
			return
		}
		if n.Kind == yaml.ScalarNode {
			keys.add(n.Line, n.Value, key)
		}
		if tag := collectionMismatch(n, t); tag != "" && keys[n.Line][tag] == "" {
			// yaml.v3 names only the line of such a value; the first on
			// a line is the one it reports first.
			keys.add(n.Line, tag, key)
		}
		switch {
		case t == durationType:
			if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
				return
			}
			d, err := mayfly.ParseDuration(n.Value)
			if err != nil {
				if firstErr == nil {
					firstErr = lineErr(file, n.Line, "%s: want %s, got %q", key, mayfly.DurationSyntax, n.Value)
				}
				return
			}
			if strings.Contains(n.Value, "d") {
				edits = append(edits, edit{n.Line, n.Column, n.Value, d.String()})
			}
		case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
			fields := yamlFields(t)
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if ft, ok := fields[k]; ok {
					walk(n.Content[i+1], ft, k)
				}
			}
		case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], t.Elem(), key+"."+n.Content[i].Value)
			}
		case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, t.Elem(), key)
			}
		}
	}
	walk(root, t, "")
	if firstErr != nil {
		return nil, nil, firstErr
	}
	if len(edits) == 0 {
		return data, keys, nil
	}
	lines := strings.SplitAfter(string(data), "\n")
	// Right to left within a line, so earlier columns stay valid.
	for i := len(edits) - 1; i >= 0; i-- {
		e := edits[i]
		if e.line < 1 || e.line > len(lines) {
			continue
		}
		l := lines[e.line-1]
		start := e.col - 1
		if start < 0 || start > len(l) {
			continue
		}
		j := strings.Index(l[start:], e.old)
		if j < 0 {
			continue
		}
		j += start
		lines[e.line-1] = l[:j] + e.new + l[j+len(e.old):]
	}
	return []byte(strings.Join(lines, "")), keys, nil
}

// collectionMismatch returns the index entry of a list or a mapping n
// where t wants something else ("\x00seq", "\x00map"), or "".
func collectionMismatch(n *yaml.Node, t reflect.Type) string {
	if reflect.PointerTo(t).Implements(yamlUnmarshalerType) {
		return "" // decodes itself, maybe from either
	}
	switch k := t.Kind(); {
	case n.Kind == yaml.MappingNode && k != reflect.Struct && k != reflect.Map && k != reflect.Interface:
		return "\x00map"
	case n.Kind == yaml.SequenceNode && k != reflect.Slice && k != reflect.Array && k != reflect.Interface:
		return "\x00seq"
	}
	return ""
}

var yamlUnmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// yamlFields maps the YAML keys of struct type t (inline fields included)
// to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range yamlFields(ft) {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

var (
	yamlUnmarshalRE = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")
	yamlFieldRE     = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
)

// plainYAMLError says a yaml.v3 decoding message in the words of the file,
// without Go type names: "max_duration: want a duration ..., got "1x"".
func plainYAMLError(msg string, line int, keys keyIndex) string {
	if m := yamlFieldRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("unknown key %q in %s", m[1], typeWords(m[2]))
	}
	m := yamlUnmarshalRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	tag, value, goType := m[1], m[2], m[3]
	got := map[string]string{"seq": "a list", "map": "a mapping (key: value)", "null": "nothing"}[tag]
	if got == "" {
		got = fmt.Sprintf("%q", value)
	}
	want := "a mapping (key: value)"
	switch {
	case goType == "time.Duration":
		want = mayfly.DurationSyntax
	case goType == "string":
		want = "a string"
	case goType == "bool":
		want = "true or false"
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint"):
		want = "a whole number"
	case strings.HasPrefix(goType, "float"):
		want = "a number"
	case strings.HasPrefix(goType, "[]"):
		want = "a list"
	}
	if k := keys[line][value]; k != "" && tag != "seq" && tag != "map" {
		return fmt.Sprintf("%s: want %s, got %s", k, want, got)
	}
	if k := keys[line]["\x00"+tag]; k != "" && (tag == "seq" || tag == "map") {
		return fmt.Sprintf("%s: want %s, got %s", k, want, got)
	}
	return fmt.Sprintf("want %s, got %s", want, got)
}

// typeWords turns a Go type name (mayfly.Target, config.SSHCA) into words
// (target, SSH CA).
func typeWords(goType string) string {
	name := goType[strings.LastIndexAny(goType, ".*]")+1:]
	if name == "Config" {
		return "the top level"
	}
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		if i > 0 && unicode.IsUpper(r) && (unicode.IsLower(rs[i-1]) || (i+1 < len(rs) && unicode.IsLower(rs[i+1]))) {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	words := strings.Fields(b.String())
	for i, w := range words {
		if strings.ToUpper(w) != w {
			words[i] = strings.ToLower(w)
		}
	}
	return "a " + strings.Join(words, " ")
}
