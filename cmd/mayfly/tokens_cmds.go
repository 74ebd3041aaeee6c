package main

import (
	"fmt"
	"time"

	"github.com/mayflyhq/mayfly/internal/httpapi"
)

// tokenSubcommands describes `mayfly tokens` subcommands for their --help.
var tokenSubcommands = map[string]struct{ usage, summary string }{
	"create": {"tokens create --name NAME --ttl DURATION [--user U] [-o json]",
		"create an API token and print it, once. Use it as MAYFLY_TOKEN. Anyone may create tokens for themselves;\n" +
			"admins also for other users (e.g. service users). The TTL is capped by auth.max_token_ttl (default 720h)."},
	"list": {"tokens list [--user U] [-o json]",
		"list API tokens and sessions (admins: everyone's, or one user's with --user; others: their own)"},
	"revoke": {"tokens revoke ID [-o json]",
		"revoke a token or session at once (admins: anyone's; others: their own)"},
}

func cmdTokens(e *env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		fmt.Fprintf(e.stdout, "Usage: mayfly %s\n\n%s\n\nSubcommands:\n", commands["tokens"].usage, commands["tokens"].summary)
		for _, n := range []string{"create", "list", "revoke"} {
			fmt.Fprintf(e.stdout, "  mayfly %s\n", tokenSubcommands[n].usage)
		}
		fmt.Fprintln(e.stdout, "\nRun \"mayfly tokens SUBCOMMAND --help\" for its flags.")
		if len(args) == 0 {
			return usageErr("tokens: want a subcommand: create, list or revoke")
		}
		return errHelp
	}
	sub, args := args[0], args[1:]
	info, ok := tokenSubcommands[sub]
	if !ok {
		return usageErr("tokens: unknown subcommand %q (want create, list or revoke)", sub)
	}
	f := newFlags(e, "tokens", true)
	var name, ttl, user *string
	switch sub {
	case "create":
		name = f.String("name", "", "what the token is for, e.g. ci or laptop (required)")
		ttl = f.String("ttl", "", "how long the token lives, e.g. 1h or 720h (required)")
		user = f.String("user", "", "the user the token authenticates as (admins; default: you)")
	case "list":
		user = f.String("user", "", "only this user's tokens (admins)")
	}
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
	if err := f.parse(e, args); err != nil {
		return err
	}
	nargs := 0
	if sub == "revoke" {
		nargs = 1
	}
	if len(f.pos) != nargs {
		return usageErr("tokens %s: want %d argument(s), got %d (usage: mayfly %s)", sub, nargs, len(f.pos), info.usage)
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	switch sub {
	case "create":
		if *name == "" {
			return usageErr("tokens create: --name is required (usage: mayfly %s)", info.usage)
		}
		if *ttl == "" {
			return usageErr("tokens create: --ttl is required, e.g. --ttl 24h (usage: mayfly %s)", info.usage)
		}
		if d, err := time.ParseDuration(*ttl); err != nil || d <= 0 {
			return usageErr("tokens create: --ttl %q: want a positive duration such as 1h or 720h", *ttl)
		}
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		t, err := c.CreateToken(e.ctx, httpapi.TokenBody{Name: *name, TTL: *ttl, User: *user})
		if err != nil {
			return err
		}
		if f.json() {
			return e.printJSON(t)
		}
		fmt.Fprintf(e.stdout, "token %s (%s) for %s, expires %s\n", t.ID, safeText(t.Name), safeText(t.User), t.ExpiresAt.Local().Format(time.RFC3339))
		fmt.Fprintf(e.stdout, "\n  %s\n\nIt is shown this once: keep it in a secret store. Use it as MAYFLY_TOKEN.\n", t.Token)
		return nil
	case "list":
		ts, err := c.ListTokens(e.ctx, *user)
		if err != nil {
			return err
		}
		if f.json() {
			return e.printJSON(ts)
		}
		now := time.Now()
		var rows [][]string
		for _, t := range ts {
			status := "live"
			switch {
			case !t.RevokedAt.IsZero():
				status = "revoked"
			case !now.Before(t.ExpiresAt):
				status = "expired"
			}
			used := "never"
			if !t.LastUsedAt.IsZero() {
				used = t.LastUsedAt.Local().Format(time.RFC3339)
			}
			rows = append(rows, []string{t.ID, t.Name, t.User, string(t.Kind), status,
				t.ExpiresAt.Local().Format(time.RFC3339), used})
		}
		e.table("ID\tNAME\tUSER\tKIND\tSTATUS\tEXPIRES\tLAST USED", rows)
		return nil
	default: // revoke
		if err := c.RevokeToken(e.ctx, f.pos[0]); err != nil {
			return err
		}
		if f.json() {
			return e.printJSON(map[string]string{"id": f.pos[0], "status": "revoked"})
		}
		fmt.Fprintf(e.stdout, "token %s revoked\n", safeText(f.pos[0]))
		return nil
	}
}
