package main

import (
	"fmt"
	"io"
	"strings"
)

// cmdMan prints the manual page, mayfly(1), in roff, from the same command
// table as `mayfly help`, so it cannot drift from the code. The packages
// install it; `mayfly man | man -l -` reads it anywhere.
func cmdMan(e *env, args []string) error {
	f := newFlags(e, "man", false)
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	writeMan(e.stdout, buildInfo().Version)
	return nil
}

// roff escapes text for a roff line: backslashes, and a leading dot or
// quote that would make the line a request.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func writeMan(w io.Writer, version string) {
	if version == "" {
		version = "dev"
	}
	fmt.Fprintf(w, `.TH MAYFLY 1 "" "mayfly %s" "User Commands"
.SH NAME
mayfly \- just-in-time access broker with zero standing privileges
.SH SYNOPSIS
.B mayfly
.I COMMAND
.RI [ ARGS ]
.SH DESCRIPTION
Mayfly grants time-limited access to databases (PostgreSQL, MySQL/MariaDB,
Redis), SSH hosts and scripted targets: a person asks for a grant with a
reason and a duration, policy approves it or routes it to approvers, and
Mayfly creates an account for that lease alone and removes it at expiry,
when the person is done, idle or offboarded. Every step is in a
tamper-evident audit trail.
.PP
The same program is the server
.RB ( "mayfly server" )
and the client of its HTTP API.
Every command answers
.B \-\-help
with its own flags.
.SH COMMANDS
`, roff(version))
	var walk func(prefix string, cmds map[string]command)
	walk = func(prefix string, cmds map[string]command) {
		for _, name := range sortedKeys(cmds) {
			c := cmds[name]
			path := strings.TrimSpace(prefix + " " + name)
			fmt.Fprintf(w, ".TP\n.B mayfly %s\n", roff(c.usage))
			fmt.Fprintf(w, "%s\n", roff(c.summary))
			if subs, ok := subcommands[path]; ok {
				walk(path, subs)
			}
		}
	}
	walk("", commands)
	fmt.Fprint(w, `.SH ENVIRONMENT
.TP
.B MAYFLY_ADDR
Server URL (default http://127.0.0.1:8765).
.TP
.B MAYFLY_TOKEN
Your bearer token (default: the session saved by \fBmayfly login\fR).
.TP
.B MAYFLY_CA_CERT
PEM file of the CA that signed the server's certificate.
.TP
.BR MAYFLY_CLIENT_CERT ", " MAYFLY_CLIENT_KEY
PEM client certificate and key, for a server that requires one.
.SH EXIT STATUS
0 on success; 1 on other failures (and when \fBmayfly doctor\fR finds a problem);
2 invalid input; 3 refused or unauthenticated; 4 not found or conflicting
state; 5 unavailable; 6 \fBdone\fR or \fBrevoke\fR could not yet verify the
account gone.
.SH FILES
.TP
.I /etc/mayfly/mayfly.yaml
The server's configuration (the packages install a commented one).
.TP
.I /etc/mayfly/mayfly.env
Secrets for the service (environment variables the configuration names).
.TP
.I /var/lib/mayfly
The store and the state directory of the packaged service.
.SH SEE ALSO
The README and docs/ of the Mayfly source: the configuration reference,
policies, connectors, gateways, high availability.
`)
}
