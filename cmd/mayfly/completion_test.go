package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestBashCompletion loads the generated script into bash and completes
// as a user pressing TAB would: commands, subcommands and each command's
// own flags, all taken from the command table.
func TestBashCompletion(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		testenv.Unavailable(t, "bash", err)
	}
	var script bytes.Buffer
	if err := run(context.Background(), []string{"completion", "bash"}, func(string) string { return "" }, strings.NewReader(""), &script, &script); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "mayfly.bash")
	if err := os.WriteFile(file, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) []string {
		t.Helper()
		var q []string
		for _, w := range words {
			q = append(q, shellQuote(w))
		}
		prog := `source ` + shellQuote(file) + `; COMP_WORDS=(mayfly ` + strings.Join(q, " ") + `); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _mayfly; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"pol"}, []string{"policy"}},
		{[]string{"policy", "ex"}, []string{"explain"}},
		{[]string{"policy", "explain", "--ta"}, []string{"--target"}},
		{[]string{"leases", "--ac"}, []string{"--active"}},
		{[]string{"ssh", "ca", "r"}, []string{"rotate"}},
		{[]string{"audit", "-"}, []string{"-o", "--since", "--follow"}},
		{[]string{"completion", ""}, []string{"bash", "fish", "zsh"}},
	} {
		got := complete(tc.words...)
		for _, w := range tc.want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				t.Errorf("complete mayfly %s = %v; want it to offer %q", strings.Join(tc.words, " "), got, w)
			}
		}
	}
	// Every command is offered at the top level.
	top := strings.Join(complete(""), " ")
	for n := range commands {
		if !strings.Contains(" "+top+" ", " "+n+" ") {
			t.Errorf("top-level completion %q lacks %q", top, n)
		}
	}
}

// TestFishAndZshCompletion checks the other scripts name every command,
// and are valid where the shell is installed.
func TestFishAndZshCompletion(t *testing.T) {
	for _, shell := range []string{"fish", "zsh"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"completion", shell}, func(string) string { return "" }, strings.NewReader(""), &out, &out); err != nil {
			t.Fatalf("completion %s: %v", shell, err)
		}
		for n := range commands {
			if !strings.Contains(out.String(), n) {
				t.Errorf("completion %s lacks %q", shell, n)
			}
		}
		if _, err := exec.LookPath(shell); err == nil {
			cmd := exec.Command(shell, "-n")
			cmd.Stdin = &out
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", shell, err, b)
			}
		}
	}
}
