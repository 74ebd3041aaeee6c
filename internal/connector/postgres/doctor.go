package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Diagnose checks what Mayfly needs of the server and its admin role:
// creating roles, granting each grant's roles, ending the sessions of a
// revoked role, autovacuum (roles churn), and the clock.
func (c *Connector) Diagnose(ctx context.Context, t mayfly.Target) []mayfly.Finding {
	fs := &mayfly.Findings{Target: t.Name}
	var me string
	var super, createRole, signal bool
	var autovacuum string
	var now time.Time
	asked := time.Now()
	err := c.pool.QueryRow(ctx, `SELECT current_user, r.rolsuper, r.rolcreaterole,
		pg_has_role(current_user, 'pg_signal_backend', 'MEMBER'), current_setting('autovacuum'), clock_timestamp()
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&me, &super, &createRole, &signal, &autovacuum, &now)
	if err != nil {
		fs.Add("connect", mayfly.FindingFail, "cannot query the server as the admin: "+c.scrubText(err.Error()),
			"check the target's dsn (or its sealed credential) and that PostgreSQL is up")
		return fs.List
	}
	skew := now.Sub(asked.Add(time.Since(asked) / 2))
	fs.Add("connect", mayfly.FindingOK, "connected as "+me, "")
	switch {
	case super:
		fs.Add("create roles", mayfly.FindingOK, me+" is a superuser", "")
	case createRole:
		fs.Add("create roles", mayfly.FindingOK, me+" has CREATEROLE", "")
	default:
		fs.Add("create roles", mayfly.FindingFail, me+" cannot create roles: no lease can be issued",
			fmt.Sprintf("ALTER ROLE %s CREATEROLE;", ident(me)))
	}
	if super || signal {
		fs.Add("end sessions", mayfly.FindingOK, me+" may terminate other roles' backends", "")
	} else {
		fs.Add("end sessions", mayfly.FindingFail, me+" cannot terminate backends: sessions of a revoked role keep running until they disconnect",
			fmt.Sprintf("GRANT pg_signal_backend TO %s;", ident(me)))
	}
	if !super {
		var roles []string
		for _, g := range t.Grants {
			roles = append(roles, g.Roles...)
		}
		slices.Sort(roles)
		for _, r := range slices.Compact(roles) {
			var can bool
			if err := c.pool.QueryRow(ctx, `SELECT pg_has_role(current_user, $1, 'MEMBER WITH ADMIN OPTION')`, r).Scan(&can); err != nil {
				fs.Add("grant "+r, mayfly.FindingFail, "role "+r+": "+c.scrubText(err.Error()), "create the role, or remove it from the grants")
				continue
			}
			if !can {
				fs.Add("grant "+r, mayfly.FindingFail, me+" cannot grant role "+r+": leases of the grants that name it fail",
					fmt.Sprintf("GRANT %s TO %s WITH ADMIN OPTION;", ident(r), ident(me)))
			}
		}
	}
	if autovacuum != "on" {
		fs.Add("autovacuum", mayfly.FindingWarn, "autovacuum is "+autovacuum+": every lease creates and drops a role, and pg_authid bloats without it",
			"ALTER SYSTEM SET autovacuum = on; SELECT pg_reload_conf();")
	} else {
		fs.Add("autovacuum", mayfly.FindingOK, "on", "")
	}
	fs.List = append(fs.List, mayfly.ClockFinding(t.Name, skew, mayfly.MaxClockSkew))
	return fs.List
}
