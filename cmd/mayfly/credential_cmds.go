package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/seal"
)

// subcommand is one subcommand of a command, for its --help.
type subcommand struct{ usage, summary string }

// subcommandHelp prints the help of command name and its subcommands, and
// dispatches to the subcommand's flags help; it returns the subcommand
// and its arguments, or errHelp/an error.
func subcommandHelp(e *env, name string, subs map[string]subcommand, order []string, args []string, f *flags) (string, []string, error) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		fmt.Fprintf(e.stdout, "Usage: mayfly %s\n\n%s\n\nSubcommands:\n", commands[name].usage, commands[name].summary)
		for _, n := range order {
			fmt.Fprintf(e.stdout, "  mayfly %s\n      %s\n", subs[n].usage, strings.ReplaceAll(subs[n].summary, "\n", "\n      "))
		}
		fmt.Fprintf(e.stdout, "\nRun \"mayfly %s SUBCOMMAND --help\" for its flags.\n", name)
		if len(args) == 0 {
			return "", nil, usageErr("%s: want a subcommand: %s", name, strings.Join(order, ", "))
		}
		return "", nil, errHelp
	}
	sub, rest := args[0], args[1:]
	if _, ok := subs[sub]; !ok {
		return "", nil, usageErr("%s: unknown subcommand %q (want %s)", name, sub, strings.Join(order, ", "))
	}
	return sub, rest, nil
}

// subFlagsHelp prints the flags of a subcommand when args ask for help.
func subFlagsHelp(e *env, info subcommand, f *flags, args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "--help" || a == "-help" {
			fmt.Fprintf(e.stdout, "Usage: mayfly %s\n\n%s\n\nFlags:\n", info.usage, info.summary)
			f.FlagSet.SetOutput(e.stdout)
			f.FlagSet.PrintDefaults()
			return errHelp
		}
	}
	return nil
}

var targetSubcommands = map[string]subcommand{
	"set-credential": {"targets set-credential TARGET [--no-check] [-o json] < CREDENTIAL",
		"store the admin credential of TARGET sealed in the store (admins), read from standard input: what the\n" +
			"target's configuration would otherwise hold (postgres, mysql: the admin DSN; redis: the admin_user's\n" +
			"password). Mayfly logs in with it first (--no-check: not). The configuration then needs no secret;\n" +
			"no answer, log line or audit event ever shows it. Needs seal.key_file or seal.key_env on the server."},
	"rotate-credential": {"targets rotate-credential TARGET [-o json]",
		"change the password of Mayfly's own admin account on TARGET to a new random one nobody sees,\n" +
			"verify it and store it sealed (admins; postgres, mysql, redis; the credential must be stored\n" +
			"with set-credential). rotate_every in the target's configuration does it on a schedule."},
}

func cmdTargets(e *env, args []string) error {
	f := newFlags(e, "targets", true)
	sub, args, err := subcommandHelp(e, "targets", targetSubcommands, []string{"set-credential", "rotate-credential"}, args, f)
	if err != nil {
		return err
	}
	var noCheck *bool
	if sub == "set-credential" {
		noCheck = f.Bool("no-check", false, "store the credential without logging in with it first")
	}
	if err := subFlagsHelp(e, targetSubcommands[sub], f, args); err != nil {
		return err
	}
	c, err := f.start(e, args, 1)
	if err != nil {
		return err
	}
	target := f.pos[0]
	path := "/v1/targets/" + url.PathEscape(target) + "/credential"
	var res httpapi.CredentialResult
	switch sub {
	case "set-credential":
		b, err := io.ReadAll(io.LimitReader(e.stdin, 64<<10))
		if err != nil {
			return fmt.Errorf("targets set-credential: read standard input: %w", err)
		}
		cred := strings.TrimRight(string(b), "\r\n")
		if strings.TrimSpace(cred) == "" {
			return usageErr("targets set-credential: give the credential on standard input (postgres, mysql: the admin DSN; redis: the admin password)")
		}
		if err := c.Do(e.ctx, "PUT", path, nil, httpapi.CredentialBody{Credential: cred, SkipCheck: *noCheck}, &res); err != nil {
			return err
		}
	case "rotate-credential":
		if err := c.Do(e.ctx, "POST", path+"/rotate", nil, nil, &res); err != nil {
			return err
		}
	}
	if f.json() {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", res.Target, res.Status)
	return nil
}

var sealSubcommands = map[string]subcommand{
	"new-key": {"seal new-key [--out FILE]",
		"make a new random master key (64 hex digits) for seal.key_file or seal.key_env; with --out, write it\n" +
			"to FILE (created, mode 0600) instead of standard output"},
	"rotate-key": {"seal rotate-key --config FILE (--new-key-file FILE | --new-key-env NAME) [-o json]",
		"re-wrap the store's data keys under a new master key, in one store transaction (a crash leaves the\n" +
			"old key in force). Reads the current key as the configuration says. Afterwards, point seal.key_file\n" +
			"or seal.key_env at the new key and restart every replica: one started with the old key refuses to start."},
}

func cmdSeal(e *env, args []string) error {
	f := newFlags(e, "seal", true)
	sub, args, err := subcommandHelp(e, "seal", sealSubcommands, []string{"new-key", "rotate-key"}, args, f)
	if err != nil {
		return err
	}
	var out, cfgPath, newFile, newEnv *string
	switch sub {
	case "new-key":
		out = f.String("out", "", "write the key to this new file (mode 0600) instead of standard output")
	case "rotate-key":
		cfgPath = f.String("config", "", "the server's configuration file: its store and current seal key (required)")
		newFile = f.String("new-key-file", "", "file holding the new master key")
		newEnv = f.String("new-key-env", "", "environment variable holding the new master key")
	}
	if err := subFlagsHelp(e, sealSubcommands[sub], f, args); err != nil {
		return err
	}
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	if sub == "new-key" {
		k := seal.NewKey()
		if *out == "" {
			fmt.Fprintln(e.stdout, k)
			return nil
		}
		fh, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return mayfly.Errorf(mayfly.EINVALID, "seal new-key: %v", err)
		}
		if _, err := fmt.Fprintln(fh, k); err != nil {
			fh.Close()
			return err
		}
		return fh.Close()
	}
	if *cfgPath == "" {
		return usageErr("seal rotate-key: --config FILE is required")
	}
	next := seal.Config{KeyFile: *newFile, KeyEnv: *newEnv}
	if !next.Enabled() {
		return usageErr("seal rotate-key: give the new key with --new-key-file FILE or --new-key-env NAME")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if !cfg.Seal.Enabled() {
		return mayfly.Errorf(mayfly.EINVALID, "seal rotate-key: %s sets no seal.key_file or seal.key_env: there is no current key to rotate", *cfgPath)
	}
	oldKey, err := seal.LoadKey(cfg.Seal, e.getenv)
	if err != nil {
		return err
	}
	newKey, err := seal.LoadKey(next, e.getenv)
	if err != nil {
		return mayfly.Errorf(mayfly.EINVALID, "seal rotate-key: new key: %s", strings.TrimPrefix(mayfly.ErrorMessageOrText(err), "seal."))
	}
	st, err := openStore(e.ctx, cfg.Store, e.getenv)
	if err != nil {
		return err
	}
	defer st.Close()
	n, err := seal.RotateMaster(e.ctx, st, oldKey, newKey, nil)
	if err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(map[string]any{"rotated": true, "data_keys": n})
	}
	fmt.Fprintf(e.stdout, "master key rotated: %d data keys re-wrapped. Configure the new key (seal.key_file or seal.key_env) and restart every replica.\n", n)
	return nil
}
