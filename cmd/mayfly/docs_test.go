package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly/internal/config"
	"gopkg.in/yaml.v3"
)

// A fenced block that is deliberately not a whole example (or not one of
// Mayfly's files) carries this marker on the line before its opening
// fence, with the reason:
//
//	<!-- doc-test: skip (one channel of the notifications list) -->
const partialMarker = "<!-- doc-test: skip"

type docBlock struct {
	file    string
	line    int // of the opening fence
	lang    string
	text    string
	partial bool
}

// docBlocks returns the fenced code blocks of the README and docs/.
func docBlocks(t *testing.T) []docBlock {
	t.Helper()
	files, _ := filepath.Glob("../../docs/*.md")
	more, _ := filepath.Glob("../../docs/*/*.md")
	files = append(append([]string{"../../README.md"}, files...), more...)
	var out []docBlock
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i < len(lines); i++ {
			l := strings.TrimSpace(lines[i])
			if !strings.HasPrefix(l, "```") {
				continue
			}
			blk := docBlock{file: strings.TrimPrefix(f, "../../"), line: i + 1, lang: strings.TrimPrefix(l, "```")}
			blk.partial = i > 0 && strings.HasPrefix(strings.TrimSpace(lines[i-1]), partialMarker)
			var body []string
			for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
				body = append(body, lines[i])
			}
			blk.text = strings.Join(body, "\n") + "\n"
			out = append(out, blk)
		}
	}
	return out
}

// docBase completes a configuration snippet: what an example leaves out
// (a store, users, a PostgreSQL target) so it can be loaded.
const docBase = `store: {sqlite: /var/lib/mayfly/mayfly.db}
users:
  - {name: alice, groups: [eng], token_sha256: "0000000000000000000000000000000000000000000000000000000000000001"}
  - {name: bob, groups: [dba], token_sha256: "0000000000000000000000000000000000000000000000000000000000000002"}
  - {name: carol, groups: [dba, admin, security, oncall], token_sha256: "0000000000000000000000000000000000000000000000000000000000000003"}
admins: {groups: [admin]}
targets:
  - name: local-pg
    kind: postgres
    dsn_env: MAYFLY_DOC_PG_DSN
    labels: {env: dev}
    grants: {readonly: {roles: [pg_read_all_data]}, readwrite: {roles: [pg_read_all_data, pg_write_all_data]}}
  - name: db-prod
    kind: postgres
    dsn_env: MAYFLY_DOC_PROD_DSN
    labels: {env: prod}
    grants: {readonly: {roles: [pg_read_all_data]}, deploy: {roles: [pg_write_all_data]}, dba: {roles: [pg_read_all_data, pg_write_all_data]}}
`

// completeConfig merges snippet over docBase: its lists of users, targets
// and policies are added to the base's (an entry of the same name
// replaces the base's), its other keys replace the base's.
func completeConfig(snippet string) (string, error) {
	// Placeholders for hashes: a distinct valid one each.
	n := 10
	snippet = regexp.MustCompile(`<hex>`).ReplaceAllStringFunc(snippet, func(string) string {
		n++
		return fmt.Sprintf("%064d", n)
	})
	var base, add map[string]any
	if err := yaml.Unmarshal([]byte(docBase), &base); err != nil {
		return "", err
	}
	var list []any
	if yaml.Unmarshal([]byte(snippet), &list) == nil && len(list) > 0 {
		// A list of policies, as docs/policy.md shows them.
		add = map[string]any{"policies": list}
	} else if err := yaml.Unmarshal([]byte(snippet), &add); err != nil {
		return "", err
	}
	for k, v := range add {
		list, isList := v.([]any)
		old, hadList := base[k].([]any)
		if !isList || !hadList {
			base[k] = v
			continue
		}
		names := map[any]bool{}
		for _, e := range list {
			if m, ok := e.(map[string]any); ok {
				names[m["name"]] = true
			}
		}
		var merged []any
		for _, e := range old {
			if m, ok := e.(map[string]any); !ok || !names[m["name"]] {
				merged = append(merged, e)
			}
		}
		base[k] = append(merged, list...)
	}
	addPolicyTargets(base)
	b, err := yaml.Marshal(base)
	return string(b), err
}

// addPolicyTargets adds a PostgreSQL target for every target a policy
// names that the configuration lacks, with the grants the policy names.
func addPolicyTargets(c map[string]any) {
	have := map[any]map[string]any{}
	targets, _ := c["targets"].([]any)
	for _, t := range targets {
		if m, ok := t.(map[string]any); ok {
			have[m["name"]] = m
		}
	}
	pols, _ := c["policies"].([]any)
	for _, p := range pols {
		m, _ := p.(map[string]any)
		names, _ := m["targets"].([]any)
		grants, _ := m["grants"].([]any)
		for _, name := range names {
			if name == "*" {
				continue
			}
			t := have[name]
			if t == nil {
				t = map[string]any{"name": name, "kind": "postgres", "dsn_env": "MAYFLY_DOC_PG_DSN", "grants": map[string]any{}}
				have[name] = t
				targets = append(targets, t)
			}
			gs, _ := t["grants"].(map[string]any)
			for _, g := range grants {
				if s, ok := g.(string); ok && s != "*" && gs != nil && gs[s] == nil && t["kind"] == "postgres" {
					gs[s] = map[string]any{"roles": []any{"pg_read_all_data"}}
				}
			}
		}
	}
	c["targets"] = targets
}

// TestDocConfigExamples loads every YAML example of the README and docs/
// as a configuration (completed with a store, users and a target where it
// shows only part of one), as `mayfly policy check` does, and runs the
// tests: table of an example that has one.
func TestDocConfigExamples(t *testing.T) {
	n := 0
	for _, b := range docBlocks(t) {
		if b.lang != "yaml" || b.partial {
			continue
		}
		n++
		t.Run(fmt.Sprintf("%s:%d", b.file, b.line), func(t *testing.T) {
			text, err := completeConfig(b.text)
			if err != nil {
				t.Fatalf("%s:%d: not YAML: %v", b.file, b.line, err)
			}
			path := filepath.Join(t.TempDir(), "mayfly.yaml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			pf, err := config.LoadPolicyFile(path)
			if err != nil {
				t.Fatalf("%s:%d: the example does not load: %v\n(completed as:\n%s)", b.file, b.line, err, text)
			}
			if len(pf.Tests) > 0 {
				// Offline: runs the table, as the docs say it does.
				var out bytes.Buffer
				if err := run(context.Background(), []string{"policy", "test", path}, func(string) string { return "" }, strings.NewReader(""), &out, &out); err != nil {
					t.Fatalf("%s:%d: policy test: %v\n%s", b.file, b.line, err, out.String())
				}
			}
		})
	}
	if n < 10 {
		t.Errorf("found %d YAML examples; the docs have more: is the extraction broken?", n)
	}
}

var envAssignRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// docCommands returns the mayfly command lines of a shell block, split
// into words, with environment assignments, the binary's path and shell
// plumbing (pipes, redirections, comments) removed.
func docCommands(text string) [][]string {
	var out [][]string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		words := shellWords(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "$ "))
		for len(words) > 0 && envAssignRE.MatchString(words[0]) {
			words = words[1:]
		}
		if len(words) < 2 {
			continue
		}
		switch filepath.Base(words[0]) {
		case "mayfly":
			out = append(out, words[1:])
		}
	}
	return out
}

// shellWords splits a command line as sh would for simple lines: quotes
// group, and it stops at an unquoted |, ;, &, <, > or #.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case strings.ContainsRune("|;&<>#", r):
			if inWord {
				words = append(words, cur.String())
			}
			return words
		case r == '\\':
			// a line continuation or escape: keep going
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestDocCommandExamples parses every mayfly command of the README's and
// docs' shell blocks with the CLI's own parser, without running it: a
// wrong flag, subcommand or -o format in an example fails here.
func TestDocCommandExamples(t *testing.T) {
	n := 0
	for _, b := range docBlocks(t) {
		if b.partial || b.lang == "yaml" || b.lang == "json" || b.lang == "go" {
			continue
		}
		for _, args := range docCommands(b.text) {
			n++
			if err := parseOnly(args); err != nil {
				t.Errorf("%s:%d: mayfly %s: %v", b.file, b.line, strings.Join(args, " "), err)
			}
		}
	}
	// Commands quoted in the text: `mayfly request db-prod/dba --break-glass`.
	// A synopsis ([OPTIONAL], A|B, ...) is not an example and is left out.
	files, _ := filepath.Glob("../../docs/*.md")
	more, _ := filepath.Glob("../../docs/*/*.md")
	for _, f := range append(append([]string{"../../README.md"}, files...), more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range inlineCommandRE.FindAllStringSubmatch(line, -1) {
				if strings.ContainsAny(m[1], "[]|…<>") || strings.Contains(m[1], "...") {
					continue
				}
				args := shellWords(m[1])
				if len(args) == 0 || isPlaceholder(args[0]) {
					continue // `mayfly COMMAND --help`
				}
				n++
				err := parseOnly(args)
				if err != nil && strings.Contains(err.Error(), "got 0 (usage") {
					continue // a command named in the text, not an example: `mayfly creds`
				}
				if err != nil {
					t.Errorf("%s:%d: `mayfly %s`: %v", strings.TrimPrefix(f, "../../"), i+1, m[1], err)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("found %d mayfly commands in the docs; is the extraction broken?", n)
	}
}

var inlineCommandRE = regexp.MustCompile("`mayfly ([^`]+)`")

// TestDocParseCatchesWrongFlags proves the dry parse refuses what the
// documentation test must catch.
func TestDocParseCatchesWrongFlags(t *testing.T) {
	for _, args := range [][]string{
		{"policy", "explain", "--target", "t", "--grant", "g", "--duration", "1h"},
		{"leases", "-o", "yaml"},
		{"report", "nosuch"},
		{"nosuch"},
	} {
		if err := parseOnly(args); err == nil {
			t.Errorf("parseOnly(%q) = nil; want an error", args)
		}
	}
	for _, args := range [][]string{
		{"policy", "explain", "--target", "t", "--grant", "g", "--for", "1h"},
		{"audit", "--since", "1h", "-o", "csv"},
		{"request", "local-pg/readonly", "--for", "1d", "--reason", "x", "--creds", "-o", "env"},
	} {
		if err := parseOnly(args); err != nil {
			t.Errorf("parseOnly(%q) = %v; want nil", args, err)
		}
	}
	if got := shellWords(`MAYFLY_TOKEN=$T bin/mayfly request a/b --reason "INC-1 slow" | jq .id`); strings.Join(got, "|") != "MAYFLY_TOKEN=$T|bin/mayfly|request|a/b|--reason|INC-1 slow" {
		t.Errorf("shellWords = %q", got)
	}
}
