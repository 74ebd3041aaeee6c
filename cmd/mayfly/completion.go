package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
)

func cmdCompletionBash(e *env, args []string) error { return completion(e, "bash", args) }
func cmdCompletionZsh(e *env, args []string) error  { return completion(e, "zsh", args) }
func cmdCompletionFish(e *env, args []string) error { return completion(e, "fish", args) }

// completion prints a completion script for shell, made from the command
// table and each command's own flags.
func completion(e *env, shell string, args []string) error {
	f := newFlags(e, "completion "+shell, false)
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	switch shell {
	case "bash":
		writeBashCompletion(e.stdout)
	case "zsh":
		fmt.Fprint(e.stdout, "#compdef mayfly\n# mayfly completion for zsh: eval \"$(mayfly completion zsh)\", or save it as _mayfly in $fpath.\nautoload -U +X bashcompinit && bashcompinit\n")
		writeBashCompletion(e.stdout)
	case "fish":
		writeFishCompletion(e.stdout)
	}
	return nil
}

// commandFlags returns the flags of the command at path (without the
// leading dashes), by parsing nothing with it in a dry run.
func commandFlags(path string) []string {
	var names []string
	e := &env{dryRun: true, flagNames: &names, ctx: context.Background(), getenv: func(string) string { return "" },
		stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	runPath(e, strings.Fields(path))
	sort.Strings(names)
	return names
}

func writeBashCompletion(w io.Writer) {
	paths := commandPaths()
	fmt.Fprint(w, `# mayfly completion for bash: eval "$(mayfly completion bash)", or save it in
# /etc/bash_completion.d/mayfly.
_mayfly() {
  local cur="${COMP_WORDS[COMP_CWORD]}" path="" cand w i opts
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${COMP_WORDS[i]}"
    [[ $w == -* ]] && continue
    cand="${path:+$path }$w"
    case "$cand" in
`)
	quoted := make([]string, len(paths))
	for i, p := range paths {
		quoted[i] = fmt.Sprintf("%q", p)
	}
	fmt.Fprintf(w, "      %s) path=\"$cand\" ;;\n", strings.Join(quoted, "|"))
	fmt.Fprint(w, `    esac
  done
  case "$path" in
`)
	fmt.Fprintf(w, "    \"\") opts=%q ;;\n", strings.Join(append(sortedKeys(commands), "--help", "--version"), " "))
	for _, p := range paths {
		var words []string
		words = append(words, sortedKeys(subcommands[p])...)
		for _, fl := range commandFlags(p) {
			if len(fl) == 1 {
				words = append(words, "-"+fl)
			} else {
				words = append(words, "--"+fl)
			}
		}
		words = append(words, "--help")
		fmt.Fprintf(w, "    %q) opts=%q ;;\n", p, strings.Join(words, " "))
	}
	fmt.Fprint(w, `  esac
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  if [[ ${#COMPREPLY[@]} -eq 0 && $cur != -* ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _mayfly mayfly
`)
}

func writeFishCompletion(w io.Writer) {
	fmt.Fprint(w, "# mayfly completion for fish: mayfly completion fish > ~/.config/fish/completions/mayfly.fish\n")
	fmt.Fprint(w, "complete -c mayfly -f\n")
	for _, n := range sortedKeys(commands) {
		fmt.Fprintf(w, "complete -c mayfly -n __fish_use_subcommand -a %s -d %s\n", fishQuote(n), fishQuote(firstLine(commands[n].summary)))
	}
	for _, p := range commandPaths() {
		parts := strings.Fields(p)
		// The command line holds the path's words and none of its subcommands.
		cond := "__fish_seen_subcommand_from " + parts[len(parts)-1]
		if len(parts) > 1 {
			cond = fmt.Sprintf("__fish_seen_subcommand_from %s; and __fish_seen_subcommand_from %s", parts[0], parts[len(parts)-1])
		}
		if subs := subcommands[p]; len(subs) > 0 {
			cond2 := cond + "; and not __fish_seen_subcommand_from " + strings.Join(sortedKeys(subs), " ")
			for _, n := range sortedKeys(subs) {
				fmt.Fprintf(w, "complete -c mayfly -n %s -a %s -d %s\n", fishQuote(cond2), fishQuote(n), fishQuote(firstLine(subs[n].summary)))
			}
		}
		for _, fl := range commandFlags(p) {
			if len(fl) == 1 {
				fmt.Fprintf(w, "complete -c mayfly -n %s -s %s\n", fishQuote(cond), fl)
			} else {
				fmt.Fprintf(w, "complete -c mayfly -n %s -l %s\n", fishQuote(cond), fl)
			}
		}
	}
}

func fishQuote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.ReplaceAll(s, "`", "")
}
