package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/httpapi"
)

type env struct {
	ctx    context.Context
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

type command struct {
	summary string
	usage   string
	run     func(e *env, args []string) error
}

var commands map[string]command

func init() {
	// Assigned in init to break the reference cycle help → commands.
	commands = map[string]command{
		"server":    {"run the broker", "server --config FILE", cmdServer},
		"dev":       {"run a throw-away broker against the local PostgreSQL, with demo users", "dev [--listen ADDR] [--pg-dsn DSN] [--env-file FILE] [--dir DIR] [--tls]", cmdDev},
		"request":   {"ask for access to TARGET/GRANT", "request TARGET/GRANT --for DURATION --reason TEXT [--creds] [--break-glass] [-o json]", cmdRequest},
		"requests":  {"list requests you may see (--pending: waiting for a decision)", "requests [--pending] [-o json]", cmdRequests},
		"approve":   {"approve a pending request", "approve REQUEST_ID [--reason TEXT] [-o json]", cmdApprove},
		"deny":      {"deny a pending request", "deny REQUEST_ID --reason TEXT [-o json]", cmdDeny},
		"cancel":    {"withdraw your own request", "cancel REQUEST_ID [--reason TEXT]", cmdCancel},
		"creds":     {"create the account now and print its credential (once)", "creds REQUEST_ID [--public-key FILE] [-o json|env]", cmdCreds},
		"connect":   {"request access, wait for approval, run the client with the credential, revoke when it exits", "connect TARGET/GRANT [--for D] [--reason R] [--heartbeat 60s] [-- COMMAND ARGS]", cmdConnect},
		"done":      {"end the lease of a request (or a lease id) now", "done ID [--reason TEXT] [-o json]", cmdDone},
		"revoke":    {"revoke a lease (admins: anyone's)", "revoke LEASE_ID [--reason TEXT] [-o json]", cmdRevoke},
		"leases":    {"list leases (admins: all; others: their own)", "leases [--active] [--target T] [--user U] [-o json]", cmdLeases},
		"audit":     {"show the audit trail, or `audit verify` the hash chain", "audit [verify [--from SEQ] [--to SEQ]] [--actor U] [--action A] [--target T] [--lease ID] [--request ID] [--since T] [--until T] [--after SEQ] [--limit N] [-o json|jsonl|csv]", cmdAudit},
		"policy":    {"`policy explain` a decision; `policy check FILE`, `policy test FILE` offline; `policy reload` (admins)", "policy explain [--user U] --target T --grant G [--for D] [--reason R] [--break-glass] [-o json] | policy check FILE | policy test FILE [--config FILE] | policy reload", cmdPolicy},
		"extend":    {"extend an active lease, through policy", "extend LEASE_ID --for DURATION --reason TEXT [-o json]", cmdExtend},
		"review":    {"record the review of a break-glass lease (admins)", "review LEASE_ID --note TEXT", cmdReview},
		"report":    {"access review: every lease in a period, with totals", "report access --from DATE --to DATE [--target T] [--user U] [-o table|csv|json|html] [--out FILE]", cmdReport},
		"ssh":       {"SSH CA: `ssh ca` prints its public keys, `ssh ca rotate` (admins), `ssh revoked-keys --target T`", "ssh ca [rotate] | ssh revoked-keys --target T [--out FILE]", cmdSSH},
		"users":     {"list users, or `users suspend|resume|remove NAME` (admins): suspending revokes every lease at once", "users [suspend|resume|remove NAME] [--reason TEXT] [-o json]", cmdUsers},
		"reconcile": {"compare targets' managed accounts with leases now: remove orphans, end missing leases (admins)", "reconcile [TARGET] [-o json]", cmdReconcile},
		"inventory": {"list every account on a target, marking those Mayfly manages (admins)", "inventory TARGET [--unmanaged] [-o json]", cmdInventory},
		"whoami":    {"show who you are: user, groups, how you authenticated and until when", "whoami [-o json]", cmdWhoami},
		"login":     {"log in with single sign-on (OIDC) and keep the session for this server", "login [--device | --server-callback] [--no-browser] [-o json]", cmdLogin},
		"logout":    {"end the session of mayfly login on the server and forget it", "logout", cmdLogout},
		"token":     {"generate a bearer token and the token_sha256 line for the config", "token", cmdToken},
		"tokens":    {"create, list and revoke expiring API tokens", "tokens create|list|revoke [--help]", cmdTokens},
		"cluster":   {"list the replicas sharing the store, their last heartbeat and the work each leads (admins)", "cluster [-o json]", cmdCluster},
		"sessions":  {"gateway sessions: list them, `sessions show ID` with every statement, `sessions verify ID` the chain", "sessions [--lease ID] [--user U] [--kind K] [--open] [-o json|text] | sessions show ID [--events] [-o json|text] | sessions verify ID [-o json]", cmdSessions},
		"targets":   {"admin credentials of targets, kept sealed: `targets set-credential TARGET`, `targets rotate-credential TARGET` (admins)", "targets set-credential|rotate-credential TARGET [--help]", cmdTargets},
		"seal":      {"the master key that seals stored credentials: `seal new-key`, `seal rotate-key` (server's machine)", "seal new-key|rotate-key [--help]", cmdSeal},
		"store":     {"`store migrate` copies a SQLite store into a new PostgreSQL store (server stopped)", "store migrate --from sqlite:PATH --to postgres:DSN [-o json]", cmdStore},
	}
}

func (e *env) usage() {
	w := e.stdout
	fmt.Fprint(w, `mayfly — just-in-time access with zero standing privileges

Usage: mayfly COMMAND [ARGS]

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, n := range names {
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
// positional arguments.
type flags struct {
	*flag.FlagSet
	name   string
	output *string
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
				fmt.Fprintf(e.stdout, "Usage: mayfly %s\n\n%s\n\nFlags:\n", commands[f.name].usage, commands[f.name].summary)
				f.FlagSet.SetOutput(e.stdout)
				f.FlagSet.PrintDefaults()
				return errHelp
			}
			return usageErr("%s: %v (usage: mayfly %s)", f.name, err, commands[f.name].usage)
		}
		rest := f.FlagSet.Args()
		if len(rest) == 0 {
			return nil
		}
		if rest[0] == "--" {
			f.pos = append(f.pos, rest[1:]...)
			return nil
		}
		f.pos = append(f.pos, rest[0])
		args = rest[1:]
	}
}

// errHelp ends a command after printing its help.
var errHelp = &helpErr{}

type helpErr struct{}

func (*helpErr) Error() string { return "help requested" }

// exactArgs checks the number of positional arguments.
func (f *flags) exactArgs(n int) error {
	if len(f.pos) != n {
		return usageErr("%s: want %d argument(s), got %d (usage: mayfly %s)", f.name, n, len(f.pos), commands[f.name].usage)
	}
	return nil
}

// start parses args, checks the number of positional arguments (nargs)
// and the output format (table, json and any extra), and returns an API
// client: the opening of every client command.
func (f *flags) start(e *env, args []string, nargs int, extraOutputs ...string) (*httpapi.Client, error) {
	if err := f.parse(e, args); err != nil {
		return nil, err
	}
	if err := f.exactArgs(nargs); err != nil {
		return nil, err
	}
	if err := f.checkOutput(extraOutputs...); err != nil {
		return nil, err
	}
	return e.client()
}

func (f *flags) json() bool { return f.output != nil && *f.output == "json" }

func (f *flags) checkOutput(allowed ...string) error {
	if f.output == nil {
		return nil
	}
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
	addr := e.getenv("MAYFLY_ADDR")
	if addr == "" {
		addr = "http://127.0.0.1:8765"
	}
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

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
