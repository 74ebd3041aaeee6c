package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestEveryCommandHelp walks the whole command tree, from the command
// table itself, and checks that every command and subcommand answers
// --help and -h with exit 0 and its own usage, and runs nothing: no call
// reaches the server, and a command that would start work finds its
// context already cancelled.
func TestEveryCommandHelp(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "no call expected", http.StatusTeapot)
	}))
	defer srv.Close()
	getenv := func(k string) string {
		switch k {
		case "MAYFLY_ADDR":
			return srv.URL
		case "MAYFLY_TOKEN":
			return "mfy_help_test"
		case "HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR":
			return t.TempDir()
		}
		return ""
	}
	paths := commandPaths()
	if len(paths) < len(commands) {
		t.Fatalf("commandPaths() = %d paths, fewer than the %d commands", len(paths), len(commands))
	}
	for _, path := range paths {
		c, ok := lookupCommand(path)
		if !ok {
			t.Fatalf("lookupCommand(%q) found nothing", path)
		}
		// The table's usage names the command, so help cannot show another's.
		if c.usage != path && !strings.HasPrefix(c.usage, path+" ") {
			t.Errorf("%q: usage %q does not start with the command's path", path, c.usage)
		}
		if strings.TrimSpace(c.summary) == "" {
			t.Errorf("%q: no summary", path)
		}
		for _, h := range []string{"--help", "-h"} {
			t.Run(path+" "+h, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				var out, errOut bytes.Buffer
				done := make(chan error, 1)
				args := append(strings.Fields(path), h)
				go func() { done <- run(ctx, args, getenv, strings.NewReader(""), &out, &errOut) }()
				var err error
				select {
				case err = <-done:
				case <-time.After(10 * time.Second):
					t.Fatalf("mayfly %s did not return within 10s: it runs instead of printing help", strings.Join(args, " "))
				}
				if err != nil {
					t.Fatalf("mayfly %s: %v (exit %d); want exit 0 and help", strings.Join(args, " "), err, exitCode(err))
				}
				want := "Usage: mayfly " + c.usage
				if !strings.Contains(out.String(), want) {
					t.Errorf("mayfly %s printed:\n%s\nwant it to contain %q", strings.Join(args, " "), out.String(), want)
				}
				for _, n := range sortedKeys(subcommands[path]) {
					if !strings.Contains(out.String(), path+" "+n) {
						t.Errorf("mayfly %s does not list its subcommand %q:\n%s", strings.Join(args, " "), n, out.String())
					}
				}
				if n := hits.Load(); n != 0 {
					t.Fatalf("mayfly %s called the server (%d calls); help must run nothing", strings.Join(args, " "), n)
				}
			})
		}
	}
}

// TestTopLevelHelpListsEveryCommand checks `mayfly help` and `mayfly
// --help` against the command table, and `mayfly help CMD SUB` prints
// that subcommand's usage.
func TestTopLevelHelpListsEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, strings.NewReader(""), &out, &out); err != nil {
			t.Fatalf("mayfly %v: %v", args, err)
		}
		for n := range commands {
			if !strings.Contains(out.String(), "  "+n+" ") {
				t.Errorf("mayfly %v does not list %q", args, n)
			}
		}
	}
	for _, path := range commandPaths() {
		c, _ := lookupCommand(path)
		var out bytes.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := run(ctx, append([]string{"help"}, strings.Fields(path)...), func(string) string { return "" }, strings.NewReader(""), &out, &out)
		if err != nil || !strings.Contains(out.String(), "Usage: mayfly "+c.usage) {
			t.Errorf("mayfly help %s = %v, %q; want its usage", path, err, out.String())
		}
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"help", "nosuch"}, func(string) string { return "" }, strings.NewReader(""), &out, &out)
	if exitCode(err) != 2 {
		t.Errorf("mayfly help nosuch = %v; want a usage error (exit 2)", err)
	}
}

// TestGroupsWithoutSubcommand checks that a command made only of
// subcommands, run bare or with an unknown one, is a usage error naming
// the subcommands.
func TestGroupsWithoutSubcommand(t *testing.T) {
	for path, subs := range subcommands {
		c, _ := lookupCommand(path)
		if c.run != nil {
			continue
		}
		for _, args := range [][]string{strings.Fields(path), append(strings.Fields(path), "nosuch")} {
			var out bytes.Buffer
			err := run(context.Background(), args, func(string) string { return "" }, strings.NewReader(""), &out, &out)
			if exitCode(err) != 2 {
				t.Errorf("mayfly %s = %v; want exit 2", strings.Join(args, " "), err)
				continue
			}
			for n := range subs {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("mayfly %s: %q does not name subcommand %q", strings.Join(args, " "), err, n)
				}
			}
		}
	}
}

// TestOutputHelpMatchesAccepted checks that the -o formats --help lists
// are those the command accepts, for every command with -o: each listed
// format parses, and a format not listed is refused.
func TestOutputHelpMatchesAccepted(t *testing.T) {
	for _, path := range commandPaths() {
		var out bytes.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := run(ctx, append(strings.Fields(path), "--help"), func(string) string { return "" }, strings.NewReader(""), &out, &out); err != nil {
			continue // reported by TestEveryCommandHelp
		}
		_, line, ok := strings.Cut(out.String(), "\n  -o string\n")
		if !ok {
			continue
		}
		line, _, _ = strings.Cut(line, "\n")
		formats, ok := strings.CutPrefix(strings.TrimSpace(line), "output format: ")
		if !ok {
			t.Errorf("%s: -o help %q; want \"output format: ...\"", path, line)
			continue
		}
		formats, _, _ = strings.Cut(formats, " (default")
		list := strings.FieldsFunc(strings.ReplaceAll(formats, " or ", ","), func(r rune) bool { return r == ',' || r == ' ' })
		c, _ := lookupCommand(path)
		for _, f := range list {
			if !strings.Contains(c.usage, f) {
				t.Errorf("%s: -o accepts %q but the usage %q does not say so", path, f, c.usage)
			}
			if err := parseOnly(append(strings.Fields(path), "-o", f)); err != nil && strings.HasPrefix(err.Error(), "-o ") {
				t.Errorf("%s -o %s: %v; --help lists it", path, f, err)
			}
		}
		if err := parseOnly(append(strings.Fields(path), "-o", "yaml")); err == nil || !strings.HasPrefix(err.Error(), "-o ") {
			t.Errorf("%s -o yaml: %v; want it refused", path, err)
		}
	}
}

func TestWithScheme(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8765":              "http://127.0.0.1:8765",
		"localhost:8765":              "http://localhost:8765",
		"[::1]:8765":                  "http://[::1]:8765",
		"mayfly.example.com":          "https://mayfly.example.com",
		"mayfly.example.com:8443/":    "https://mayfly.example.com:8443",
		"http://10.0.0.1:8765":        "http://10.0.0.1:8765",
		"https://mayfly.example.com/": "https://mayfly.example.com",
	} {
		if got := withScheme(in); got != want {
			t.Errorf("withScheme(%q) = %q; want %q", in, got, want)
		}
	}
}
