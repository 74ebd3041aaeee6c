package main

import (
	"fmt"
	"time"

	"github.com/mayflyhq/mayfly"

	"github.com/mayflyhq/mayfly/internal/httpapi"
)

func cmdTokensCreate(e *env, args []string) error { return tokensSub(e, "create", args) }
func cmdTokensList(e *env, args []string) error   { return tokensSub(e, "list", args) }
func cmdTokensRevoke(e *env, args []string) error { return tokensSub(e, "revoke", args) }

func tokensSub(e *env, sub string, args []string) error {
	f := newFlags(e, "tokens "+sub, true)
	usage := f.usageLine()
	var name, ttl, user *string
	switch sub {
	case "create":
		name = f.String("name", "", "what the token is for, e.g. ci or laptop (required)")
		ttl = f.String("ttl", "", "how long the token lives, e.g. 1h, 720h or 30d (required)")
		user = f.String("user", "", "the user the token authenticates as (admins; default: you)")
	case "list":
		user = f.String("user", "", "only this user's tokens (admins)")
	}
	if err := f.parse(e, args); err != nil {
		return err
	}
	nargs := 0
	if sub == "revoke" {
		nargs = 1
	}
	if len(f.pos) != nargs {
		return usageErr("tokens %s: want %d argument(s), got %d (usage: mayfly %s)", sub, nargs, len(f.pos), usage)
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	switch sub {
	case "create":
		if *name == "" {
			return usageErr("tokens create: --name is required (usage: mayfly %s)", usage)
		}
		if *ttl == "" {
			return usageErr("tokens create: --ttl is required, e.g. --ttl 24h (usage: mayfly %s)", usage)
		}
		if d, err := mayfly.ParseDuration(*ttl); err != nil || d <= 0 {
			return usageErr("tokens create: --ttl %q: want a positive duration such as 1h, 720h or 30d", *ttl)
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
