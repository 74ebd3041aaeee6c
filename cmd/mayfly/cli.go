package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/httpapi"
)

type env struct {
	// dryRun: commands stop once their arguments parse (errDryRun).
	dryRun bool
	// flagNames, in a dry run, collects the names of the command's flags.
	flagNames *[]string
	ctx       context.Context
	getenv    func(string) string
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	// onStop, when set, runs as the server stops, before the connectors
	// close (mayfly dev: end the leases it made).
	onStop func(ctx context.Context, b *broker.Broker)
}

// command is one entry of the command table: what `mayfly help` lists,
// what `--help` prints, what completion offers, and what runs.
type command struct {
	summary string
	usage   string // starts with the command's path, e.g. "policy explain --target T ..."
	run     func(e *env, args []string) error
}

// commands are the top-level commands; subcommands holds the subcommands
// of a command by its path ("policy", "ssh ca"). A command with
// subcommands dispatches to them; its own run (nil for a pure group)
// handles arguments that name no subcommand. Everything that walks the
// command tree (help, completion, the --help test) reads these two tables:
// register every subcommand here rather than switching on args[0].
var (
	commands    map[string]command
	subcommands map[string]map[string]command
)

func init() {
	// Assigned in init to break the reference cycle help → commands.
	commands = map[string]command{
		"server":     {"run the broker", "server --config FILE", cmdServer},
		"man":        {"print the manual page, mayfly(1), in roff (mayfly man | man -l -)", "man", cmdMan},
		"doctor":     {"check a configuration against its real targets: what is missing and how to fix it (exit 0 only when all is well)", "doctor [--config FILE] [--timeout 10s] [-o table|json]", cmdDoctor},
		"dev":        {"run a throw-away broker against the local PostgreSQL, with demo users", "dev [--listen ADDR] [--pg-dsn DSN] [--env-file FILE] [--dir DIR] [--tls]", cmdDev},
		"request":    {"ask for access to TARGET/GRANT", "request TARGET/GRANT --for DURATION --reason TEXT [--creds] [--public-key FILE] [--break-glass] [-o table|json|env]", cmdRequest},
		"requests":   {"list requests you may see (--pending: waiting for a decision)", "requests [--pending] [--limit N] [--cursor C] [--all] [-o table|json]", cmdRequests},
		"approve":    {"approve a pending request", "approve REQUEST_ID [--reason TEXT] [-o table|json]", cmdApprove},
		"deny":       {"deny a pending request", "deny REQUEST_ID --reason TEXT [-o table|json]", cmdDeny},
		"cancel":     {"withdraw your own request", "cancel REQUEST_ID [--reason TEXT] [-o table|json]", cmdCancel},
		"creds":      {"create the account now and print its credential (once)", "creds REQUEST_ID [--public-key FILE] [-o table|json|env]", cmdCreds},
		"connect":    {"request access, wait for approval, run the client with the credential, revoke when it exits", "connect TARGET/GRANT [--for D] [--reason R] [--heartbeat 60s] [--wait 30m] [-- COMMAND ARGS]", cmdConnect},
		"done":       {"end the lease of a request (or a lease id) now", "done ID [--reason TEXT] [--wait [--timeout 5m]] [-o table|json]", cmdDone},
		"revoke":     {"revoke a lease (admins: anyone's)", "revoke LEASE_ID [--reason TEXT] [--wait [--timeout 5m]] [-o table|json]", cmdRevoke},
		"leases":     {"list leases (admins: all; others: their own)", "leases [--active] [--target T] [--user U] [--limit N] [--cursor C] [--all] [-o table|json]", cmdLeases},
		"audit":      {"show the audit trail; `audit verify` checks the hash chain, `audit hash` traces a leaked secret, `audit prune` (admins)", "audit [--actor U] [--action A] [--target T] [--lease ID] [--request ID] [--since T] [--until T] [--after SEQ] [--limit N] [--cursor C] [--all] [--follow] [-o table|json|jsonl|csv]", cmdAudit},
		"policy":     {"`policy explain` a decision; `policy check FILE`, `policy test FILE` offline; `policy reload` (admins)", "policy explain|check|test|reload ...", nil},
		"extend":     {"extend an active lease, through policy", "extend LEASE_ID --for DURATION --reason TEXT [-o table|json]", cmdExtend},
		"review":     {"record the review of a break-glass lease (admins)", "review LEASE_ID --note TEXT", cmdReview},
		"report":     {"`report access`: every lease in a period, with totals; `report standing`: standing privileges on every target (admins)", "report access|standing ...", nil},
		"ssh":        {"SSH CA: `ssh ca` prints its public keys, `ssh ca rotate [--activate|--now]` (admins), `ssh revoked-keys --target T`", "ssh ca|revoked-keys ...", nil},
		"users":      {"list users, or `users suspend|resume|remove NAME` (admins): suspending revokes every lease at once", "users [-o table|json]", cmdUsers},
		"reconcile":  {"compare targets' managed accounts with leases now: remove orphans, end missing leases (admins)", "reconcile [TARGET] [-o table|json]", cmdReconcile},
		"inventory":  {"list every account on a target, marking those Mayfly manages (admins)", "inventory TARGET [--unmanaged] [-o table|json]", cmdInventory},
		"whoami":     {"show who you are: user, groups, how you authenticated and until when", "whoami [-o table|json]", cmdWhoami},
		"login":      {"log in with single sign-on (OIDC) and keep the session for this server", "login [--device | --server-callback] [--no-browser] [-o table|json]", cmdLogin},
		"logout":     {"end the session of mayfly login on the server and forget it", "logout", cmdLogout},
		"token":      {"generate a bearer token and the token_sha256 line for the config", "token", cmdToken},
		"tokens":     {"create, list and revoke expiring API tokens", "tokens create|list|revoke ...", nil},
		"cluster":    {"list the replicas sharing the store, their last heartbeat and the work each leads (admins)", "cluster [-o table|json]", cmdCluster},
		"sessions":   {"gateway sessions: list them; `sessions show ID` with every statement, `sessions verify ID` checks the chain", "sessions [--lease ID] [--user U] [--kind K] [--open] [--limit N] [--cursor C] [--all] [-o table|json|text]", cmdSessions},
		"targets":    {"admin credentials of targets, kept sealed: `targets set-credential TARGET`, `targets rotate-credential TARGET` (admins)", "targets set-credential|rotate-credential ...", nil},
		"seal":       {"the master key that seals stored credentials: `seal new-key`, `seal rotate-key` (server's machine)", "seal new-key|rotate-key ...", nil},
		"store":      {"`store migrate` copies a SQLite store into a new PostgreSQL store (server stopped)", "store migrate ...", nil},
		"completion": {"print a shell completion script: `completion bash`, `completion zsh`, `completion fish`", "completion bash|zsh|fish", nil},
		"version":    {"print the version, commit and build date (also `mayfly --version`)", "version [-o table|json]", cmdVersion},
		"help":       {"show the commands, or a command's usage and flags", "help [COMMAND [SUBCOMMAND]]", cmdHelp},
	}
	subcommands = map[string]map[string]command{
		"audit": {
			"verify": {"check the hash chain; exits 0 only when intact, otherwise names the first broken event", "audit verify [--from SEQ] [--to SEQ] [-o table|json]", cmdAuditVerify},
			"hash":   {"the keyed HMAC Mayfly recorded for an issued secret, and the lease it went to; the value is read from standard input unless given", "audit hash [VALUE|-] [-o table|json]", cmdAuditHash},
			"prune":  {"archive and remove events older than a duration (admins)", "audit prune --older-than DURATION [-o table|json]", cmdAuditPrune},
		},
		"policy": {
			"explain": {"explain the decision policy would make for a request", "policy explain [--user U] --target T --grant G [--for D] [--reason R] [--break-glass] [-o table|json]", cmdPolicyExplain},
			"check":   {"validate a configuration or policy file offline", "policy check FILE [-o table|json]", cmdPolicyCheck},
			"test":    {"run the tests: table of a file against its policies (or those of --config)", "policy test FILE [--config FILE] [-o table|json]", cmdPolicyTest},
			"reload":  {"reload the server's configuration file now (admins)", "policy reload [-o table|json]", cmdPolicyReload},
		},
		"report": {
			"access":   {"access review: every lease in a period, with totals (admins)", "report access --from DATE --to DATE [--target T] [--user U] [--out FILE] [-o table|json|csv|html]", cmdReportAccess},
			"standing": {"standing privileges: unmanaged accounts that can log in on every target, beside Mayfly's leases (admins)", "report standing [-o table|json]", cmdStanding},
		},
		"ssh": {
			"ca":           {"print the SSH CA's public keys, as lines for TrustedUserCAKeys", "ssh ca [-o table|json]", cmdSSHCA},
			"revoked-keys": {"fetch a target's key revocation list (KRL) for RevokedKeys", "ssh revoked-keys --target T [--out FILE]", cmdSSHRevokedKeys},
		},
		"ssh ca": {
			"rotate": {"rotate the SSH CA key in two steps (admins): publish the next key, then --activate it once hosts have it; --now for both at once", "ssh ca rotate [--activate | --now] [--reason TEXT] [-o table|json]", cmdSSHCARotate},
		},
		"users": {
			"suspend": {"suspend a user: every lease revoked, every request cancelled, tokens refused (admins)", "users suspend NAME [--reason TEXT] [-o table|json]", cmdUsersSuspend},
			"resume":  {"let a suspended user in again (admins)", "users resume NAME [--reason TEXT] [-o table|json]", cmdUsersResume},
			"remove":  {"deprovision a user: like suspend, for good (admins)", "users remove NAME [--reason TEXT] [-o table|json]", cmdUsersRemove},
		},
		"tokens": {
			"create": {"create an API token and print it, once. Use it as MAYFLY_TOKEN. Anyone may create tokens for themselves;\n" +
				"admins also for other users (e.g. service users). The TTL is capped by auth.max_token_ttl (default 720h).",
				"tokens create --name NAME --ttl DURATION [--user U] [-o table|json]", cmdTokensCreate},
			"list":   {"list API tokens and sessions (admins: everyone's, or one user's with --user; others: their own)", "tokens list [--user U] [-o table|json]", cmdTokensList},
			"revoke": {"revoke a token or session at once (admins: anyone's; others: their own)", "tokens revoke ID [-o table|json]", cmdTokensRevoke},
		},
		"sessions": {
			"show":   {"one gateway session with every statement it ran", "sessions show ID [--events] [-o table|json|text]", cmdSessionShow},
			"verify": {"check the hash chain of a gateway session's log", "sessions verify ID [-o table|json|text]", cmdSessionVerify},
			"play":   {"replay an SSH session's terminal at its original pace (--speed 2: twice as fast)", "sessions play ID [--speed F] [--channel N] [--idle-limit D]", cmdSessionPlay},
		},
		"targets": {
			"set-credential": {"store the admin credential of TARGET sealed in the store (admins), read from standard input: what the\n" +
				"target's configuration would otherwise hold (postgres, mysql: the admin DSN; redis: the admin_user's\n" +
				"password). Mayfly logs in with it first (--no-check: not). The configuration then needs no secret;\n" +
				"no answer, log line or audit event ever shows it. Needs seal.key_file or seal.key_env on the server.",
				"targets set-credential TARGET [--no-check] [-o table|json] < CREDENTIAL", cmdTargetsSetCredential},
			"rotate-credential": {"change the password of Mayfly's own admin account on TARGET to a new random one nobody sees,\n" +
				"verify it and store it sealed (admins; postgres, mysql, redis; the credential must be stored\n" +
				"with set-credential). rotate_every in the target's configuration does it on a schedule.",
				"targets rotate-credential TARGET [-o table|json]", cmdTargetsRotateCredential},
		},
		"seal": {
			"new-key": {"make a new random master key (64 hex digits) for seal.key_file or seal.key_env; with --out, write it\n" +
				"to FILE (created, mode 0600) instead of standard output", "seal new-key [--out FILE]", cmdSealNewKey},
			"rotate-key": {"re-wrap the store's data keys under a new master key, in one store transaction (a crash leaves the\n" +
				"old key in force). Reads the current key as the configuration says. Afterwards, point seal.key_file\n" +
				"or seal.key_env at the new key and restart every replica: one started with the old key refuses to start.",
				"seal rotate-key --config FILE (--new-key-file FILE | --new-key-env NAME) [-o table|json]", cmdSealRotateKey},
		},
		"completion": {
			"bash": {"bash completion: eval \"$(mayfly completion bash)\" in ~/.bashrc, or save it in /etc/bash_completion.d/mayfly", "completion bash", cmdCompletionBash},
			"zsh":  {"zsh completion: eval \"$(mayfly completion zsh)\" in ~/.zshrc", "completion zsh", cmdCompletionZsh},
			"fish": {"fish completion: mayfly completion fish > ~/.config/fish/completions/mayfly.fish", "completion fish", cmdCompletionFish},
		},
		"store": {
			"migrate": {"copy a SQLite store into a new, empty PostgreSQL store (stop the server first)", "store migrate --from sqlite:PATH --to postgres:DSN [-o table|json]", cmdStoreMigrate},
		},
	}
}

// lookupCommand finds the command at path ("policy explain").
func lookupCommand(path string) (command, bool) {
	parts := strings.Fields(path)
	if len(parts) == 0 {
		return command{}, false
	}
	c, ok := commands[parts[0]]
	for i := 1; ok && i < len(parts); i++ {
		c, ok = subcommands[strings.Join(parts[:i], " ")][parts[i]]
	}
	return c, ok
}

// commandPaths lists every command and subcommand path, sorted, parents
// before their subcommands.
func commandPaths() []string {
	var out []string
	var walk func(path string)
	walk = func(path string) {
		out = append(out, path)
		for _, n := range sortedKeys(subcommands[path]) {
			walk(path + " " + n)
		}
	}
	for _, n := range sortedKeys(commands) {
		walk(n)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isHelpArg(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

// dispatch runs the command at path with args: a subcommand when args[0]
// names one, else the command's own run; a group without one prints its
// help.
func dispatch(e *env, path string, c command, args []string) error {
	subs := subcommands[path]
	if len(args) > 0 {
		if sc, ok := subs[args[0]]; ok {
			return dispatch(e, path+" "+args[0], sc, args[1:])
		}
	}
	if c.run != nil {
		return c.run(e, args)
	}
	if len(args) > 0 && isHelpArg(args[0]) {
		e.commandHelp(path, nil)
		return errHelp
	}
	want := strings.Join(sortedKeys(subs), ", ")
	if len(args) == 0 {
		e.commandHelp(path, nil)
		return usageErr("%s: want a subcommand: %s", path, want)
	}
	return usageErr("%s: unknown subcommand %q (want %s; run `mayfly %s --help`)", path, args[0], want, path)
}

// commandHelp prints the usage, summary, subcommands and flags of the
// command at path.
func (e *env) commandHelp(path string, fs *flag.FlagSet) {
	c, _ := lookupCommand(path)
	w := e.stdout
	fmt.Fprintf(w, "Usage: mayfly %s\n\n%s\n", c.usage, c.summary)
	if subs := subcommands[path]; len(subs) > 0 {
		fmt.Fprintf(w, "\nSubcommands:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, n := range sortedKeys(subs) {
			s := subs[n].summary
			if i := strings.IndexByte(s, '\n'); i >= 0 {
				s = s[:i]
			}
			fmt.Fprintf(tw, "  %s %s\t%s\n", path, n, s)
		}
		tw.Flush()
		fmt.Fprintf(w, "\nRun \"mayfly %s SUBCOMMAND --help\" for its flags.\n", path)
	}
	if fs != nil {
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(w, "\nFlags:\n")
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
}

// cmdHelp runs `mayfly help [COMMAND...]`.
func cmdHelp(e *env, args []string) error {
	if len(args) == 0 {
		e.usage()
		return nil
	}
	if len(args) == 1 && isHelpArg(args[0]) {
		e.commandHelp("help", nil)
		return errHelp
	}
	path := strings.Join(args, " ")
	if _, ok := lookupCommand(path); !ok {
		return usageErr("help: unknown command %q; run `mayfly help`", path)
	}
	// The command's own --help, so its flags are listed.
	return runPath(e, append(args, "--help"))
}

// runPath dispatches args (a command line without "mayfly").
func runPath(e *env, args []string) error {
	c, ok := commands[args[0]]
	if !ok {
		return usageErr("unknown command %q; run `mayfly help`", args[0])
	}
	return dispatch(e, args[0], c, args[1:])
}

func (e *env) usage() {
	w := e.stdout
	fmt.Fprint(w, `mayfly — just-in-time access with zero standing privileges

Usage: mayfly COMMAND [ARGS]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, n := range sortedKeys(commands) {
		fmt.Fprintf(tw, "  %s\t%s\n", n, commands[n].summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Client environment:
  MAYFLY_ADDR   server URL (default http://127.0.0.1:8765)
  MAYFLY_TOKEN  your bearer token (default: the session of mayfly login)
  MAYFLY_CA_CERT  PEM file of the CA that signed the server's certificate
                  (trusted besides the system's roots)
  MAYFLY_CLIENT_CERT, MAYFLY_CLIENT_KEY  PEM client certificate and key,
                  for servers that require one (mutual TLS)

Run "mayfly COMMAND --help" for a command's flags.
`)
}

// usageErr is an EINVALID error for bad command-line use.
func usageErr(format string, args ...any) error {
	return mayfly.Errorf(mayfly.EINVALID, format, args...)
}

// flags is a flag set that accepts flags before, between and after
// positional arguments. name is the command's path ("policy explain"),
// which names its usage in the command table.
type flags struct {
	*flag.FlagSet
	name   string
	output *string
	extra  []string // output formats besides table and json
	pos    []string
}

func newFlags(e *env, name string, withOutput bool) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &flags{FlagSet: fs, name: name}
	if withOutput {
		f.output = fs.String("o", "table", "output format: table or json")
	}
	fs.Usage = func() {}
	return f
}

// outputs adds output formats besides table and json, before parsing, so
// --help lists what -o accepts.
func (f *flags) outputs(extra ...string) *flags {
	f.extra = append(f.extra, extra...)
	if fl := f.Lookup("o"); fl != nil {
		all := append([]string{"table", "json"}, f.extra...)
		fl.Usage = "output format: " + strings.Join(all[:len(all)-1], ", ") + " or " + all[len(all)-1]
	}
	return f
}

// durationValue is a flag.Value for durations that also takes days (1d).
type durationValue time.Duration

func (d *durationValue) Set(s string) error {
	v, err := mayfly.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want %s", mayfly.DurationSyntax)
	}
	*d = durationValue(v)
	return nil
}

func (d *durationValue) String() string { return time.Duration(*d).String() }

// Duration defines a duration flag that also takes days (1d, 2d12h).
func (f *flags) Duration(name string, value time.Duration, usage string) *time.Duration {
	p := new(time.Duration)
	*p = value
	f.Var((*durationValue)(p), name, usage)
	return p
}

func (f *flags) usageLine() string {
	if c, ok := lookupCommand(f.name); ok {
		return c.usage
	}
	return f.name
}

// errDryRun ends a command whose arguments parsed, in a dry run (the
// documentation test): nothing runs.
var errDryRun = &helpErr{"dry run: arguments parsed"}

func (f *flags) parse(e *env, args []string) error {
	// Everything after "--" is positional (a command to run).
	var tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	defer func() { f.pos = append(f.pos, tail...) }()
	for {
		if err := f.FlagSet.Parse(args); err != nil {
			if err == flag.ErrHelp {
				e.commandHelp(f.name, f.FlagSet)
				return errHelp
			}
			return usageErr("%s: %v (usage: mayfly %s)", f.name, err, f.usageLine())
		}
		rest := f.FlagSet.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			f.pos = append(f.pos, rest[1:]...)
			break
		}
		f.pos = append(f.pos, rest[0])
		args = rest[1:]
	}
	if e.dryRun {
		if e.flagNames != nil {
			f.VisitAll(func(fl *flag.Flag) { *e.flagNames = append(*e.flagNames, fl.Name) })
			return errDryRun
		}
		if err := f.checkOutput(); err != nil {
			return err
		}
		if min, max := positionalBounds(f.name, f.usageLine()); len(f.pos) < min || len(f.pos) > max {
			return usageErr("%s: want %s argument(s), got %d (usage: mayfly %s)", f.name, boundsText(min, max), len(f.pos), f.usageLine())
		}
		return errDryRun
	}
	return nil
}

// positionalBounds reads from a usage line how many positional arguments
// the command takes: TARGET/GRANT and ID are required, [TARGET] is
// optional, [-- COMMAND ARGS] is any number; flags and their values are
// not positional.
func positionalBounds(path, usage string) (min, max int) {
	words := strings.Fields(strings.TrimPrefix(usage, path))
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case strings.HasPrefix(w, "<"):
			return min, max // standard input
		case strings.HasPrefix(w, "[") || strings.HasPrefix(w, "("):
			// An optional group: flags, or an optional positional.
			inner := strings.TrimLeft(w, "[(")
			if !strings.HasPrefix(inner, "-") {
				max = 1 << 20
				if isPlaceholder(strings.TrimRight(inner, "])")) && !strings.ContainsAny(inner, "]") {
					max = 1 << 20
				}
			} else if inner == "--" {
				max = 1 << 20
			}
			for depth := strings.Count(w, "[") + strings.Count(w, "(") - strings.Count(w, "]") - strings.Count(w, ")"); depth > 0 && i+1 < len(words); {
				i++
				depth += strings.Count(words[i], "[") + strings.Count(words[i], "(") - strings.Count(words[i], "]") - strings.Count(words[i], ")")
			}
			if !strings.HasPrefix(inner, "-") && strings.HasSuffix(w, "]") && isPlaceholder(strings.Trim(w, "[]")) {
				max = min + 1 + (max - min - 1) // one optional positional
				if max >= 1<<20 {
					max = 1 << 20
				}
			}
		case strings.HasPrefix(w, "-"):
			if i+1 < len(words) && isPlaceholder(words[i+1]) {
				i++ // the flag's value
			}
		case isPlaceholder(w):
			min++
			if max < min {
				max = min
			}
		}
	}
	return min, max
}

func isPlaceholder(w string) bool {
	return w != "" && strings.ToUpper(w) == w && strings.IndexFunc(w, func(r rune) bool { return r >= 'A' && r <= 'Z' }) >= 0
}

func boundsText(min, max int) string {
	switch {
	case max >= 1<<20:
		return fmt.Sprintf("at least %d", min)
	case min == max:
		return fmt.Sprint(min)
	}
	return fmt.Sprintf("%d to %d", min, max)
}

// errHelp ends a command after printing its help.
var errHelp = &helpErr{"help requested"}

type helpErr struct{ msg string }

func (h *helpErr) Error() string { return h.msg }

// exactArgs checks the number of positional arguments.
func (f *flags) exactArgs(n int) error {
	if len(f.pos) != n {
		return usageErr("%s: want %d argument(s), got %d (usage: mayfly %s)", f.name, n, len(f.pos), f.usageLine())
	}
	return nil
}

// start parses args, checks the number of positional arguments (nargs)
// and the output format (table, json and any extra), and returns an API
// client: the opening of every client command.
func (f *flags) start(e *env, args []string, nargs int, extraOutputs ...string) (*httpapi.Client, error) {
	f.outputs(extraOutputs...)
	if err := f.parse(e, args); err != nil {
		return nil, err
	}
	if err := f.exactArgs(nargs); err != nil {
		return nil, err
	}
	if err := f.checkOutput(); err != nil {
		return nil, err
	}
	return e.client()
}

func (f *flags) json() bool { return f.output != nil && *f.output == "json" }

func (f *flags) checkOutput(allowed ...string) error {
	if f.output == nil {
		return nil
	}
	allowed = append(slices.Clone(f.extra), allowed...)
	for _, a := range append([]string{"table", "json"}, allowed...) {
		if *f.output == a {
			return nil
		}
	}
	return usageErr("-o %q: want one of table, json%s", *f.output, prefixJoin(", ", allowed))
}

func prefixJoin(sep string, s []string) string {
	if len(s) == 0 {
		return ""
	}
	return sep + strings.Join(s, sep)
}

func (e *env) client() (*httpapi.Client, error) {
	addr := e.serverAddr()
	tok := e.getenv("MAYFLY_TOKEN")
	if tok == "" {
		if s, ok := e.loadSession(addr); ok {
			tok = s.Token // from mayfly login
		}
	}
	if tok == "" {
		return nil, mayfly.Errorf(mayfly.EUNAUTHORIZED, "MAYFLY_TOKEN is not set and you are not logged in to %s (run mayfly login)", addr)
	}
	if err := httpapi.CheckClearText(addr); err != nil {
		return nil, err
	}
	c := httpapi.NewClient(addr, tok)
	if err := c.UseTLS(httpapi.TLSOptions{CAFile: e.getenv("MAYFLY_CA_CERT"),
		CertFile: e.getenv("MAYFLY_CLIENT_CERT"), KeyFile: e.getenv("MAYFLY_CLIENT_KEY")}); err != nil {
		return nil, err
	}
	return c, nil
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under header, aligned. Every cell is passed through
// safeText, so what others typed cannot move the cursor, ring the bell or
// forge a row.
func (e *env) table(header string, rows [][]string) {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = safeText(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

// safeText returns s with every control character (ESC, CR, LF, TAB, BEL,
// DEL, the C1 controls) and every invalid byte written as a visible Go
// escape such as \x1b, so it prints on one line and does nothing to the
// terminal.
func safeText(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\r", " ")
	return safeText(strings.ReplaceAll(s, "\n", "; "))
}

func readFileArg(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageErr("read %s: %v", path, err)
	}
	return string(b), nil
}
