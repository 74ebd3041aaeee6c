package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/mayflyhq/mayfly"
)

// maxSkew is how far a target's clock may be from Mayfly's before doctor
// warns: expiry set on the target (VALID UNTIL) follows the target's clock.
const maxSkew = 2 * time.Second

// Diagnose checks what Mayfly needs of the server and its admin role:
// creating roles, granting each grant's roles, ending the sessions of a
// revoked role, autovacuum (roles churn), and the clock.
func (c *Connector) Diagnose(ctx context.Context, t mayfly.Target) []mayfly.Finding {
	f := func(check, status, detail, fix string) mayfly.Finding {
		return mayfly.Finding{Target: t.Name, Check: check, Status: status, Detail: detail, Fix: fix}
	}
	var me string
	var super, createRole, signal bool
	var autovacuum string
	var now time.Time
	asked := time.Now()
	err := c.pool.QueryRow(ctx, `SELECT current_user, r.rolsuper, r.rolcreaterole,
		pg_has_role(current_user, 'pg_signal_backend', 'MEMBER'), current_setting('autovacuum'), clock_timestamp()
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&me, &super, &createRole, &signal, &autovacuum, &now)
	if err != nil {
		return []mayfly.Finding{f("connect", mayfly.FindingFail, "cannot query the server as the admin: "+c.scrubText(err.Error()),
			"check the target's dsn (or its sealed credential) and that PostgreSQL is up")}
	}
	skew := now.Sub(asked.Add(time.Since(asked) / 2))
	out := []mayfly.Finding{f("connect", mayfly.FindingOK, "connected as "+me, "")}
	switch {
	case super:
		out = append(out, f("create roles", mayfly.FindingOK, me+" is a superuser", ""))
	case createRole:
		out = append(out, f("create roles", mayfly.FindingOK, me+" has CREATEROLE", ""))
	default:
		out = append(out, f("create roles", mayfly.FindingFail, me+" cannot create roles: no lease can be issued",
			fmt.Sprintf("ALTER ROLE %s CREATEROLE;", ident(me))))
	}
	if super || signal {
		out = append(out, f("end sessions", mayfly.FindingOK, me+" may terminate other roles' backends", ""))
	} else {
		out = append(out, f("end sessions", mayfly.FindingFail, me+" cannot terminate backends: sessions of a revoked role keep running until they disconnect",
			fmt.Sprintf("GRANT pg_signal_backend TO %s;", ident(me))))
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
				out = append(out, f("grant "+r, mayfly.FindingFail, "role "+r+": "+c.scrubText(err.Error()), "create the role, or remove it from the grants"))
				continue
			}
			if !can {
				out = append(out, f("grant "+r, mayfly.FindingFail, me+" cannot grant role "+r+": leases of the grants that name it fail",
					fmt.Sprintf("GRANT %s TO %s WITH ADMIN OPTION;", ident(r), ident(me))))
			}
		}
	}
	if autovacuum != "on" {
		out = append(out, f("autovacuum", mayfly.FindingWarn, "autovacuum is "+autovacuum+": every lease creates and drops a role, and pg_authid bloats without it",
			"ALTER SYSTEM SET autovacuum = on; SELECT pg_reload_conf();"))
	} else {
		out = append(out, f("autovacuum", mayfly.FindingOK, "on", ""))
	}
	out = append(out, skewFinding(t.Name, skew))
	return out
}

// skewFinding reports the difference between the target's clock and ours.
func skewFinding(target string, skew time.Duration) mayfly.Finding {
	if skew < 0 {
		skew = -skew
	}
	fd := mayfly.Finding{Target: target, Check: "clock", Status: mayfly.FindingOK, Detail: fmt.Sprintf("within %s of Mayfly's", skew.Round(time.Millisecond))}
	if skew > maxSkew {
		fd.Status, fd.Detail = mayfly.FindingWarn, fmt.Sprintf("%s away from Mayfly's: expiry the target enforces itself is off by as much", skew.Round(time.Millisecond))
		fd.Fix = "run NTP (chrony, systemd-timesyncd) on both machines"
	}
	return fd
}
