package mysql

import (
	"context"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Diagnose checks what Mayfly needs of the server and its admin account:
// CREATE USER, seeing and ending other users' connections (PROCESS and
// CONNECTION ADMIN or SUPER: without them, live sessions of a dropped user
// survive), granting with GRANT OPTION, the event scheduler (expiry on the
// server's own clock), and the clock.
func (c *Connector) Diagnose(ctx context.Context, t mayfly.Target) []mayfly.Finding {
	fs := &mayfly.Findings{Target: t.Name}
	var me string
	var unix float64
	asked := time.Now()
	if err := c.db.QueryRowContext(ctx, "SELECT CURRENT_USER(), UNIX_TIMESTAMP(NOW(6))").Scan(&me, &unix); err != nil {
		fs.Add("connect", mayfly.FindingFail, "cannot query the server as the admin: "+err.Error(),
			"check the target's dsn (or its sealed credential) and that the server is up")
		return fs.List
	}
	skew := time.Unix(0, int64(unix*1e9)).Sub(asked.Add(time.Since(asked) / 2))
	fs.Add("connect", mayfly.FindingOK, "connected as "+me, "")
	rows, err := c.db.QueryContext(ctx, "SHOW GRANTS")
	if err != nil {
		fs.Add("privileges", mayfly.FindingFail, "SHOW GRANTS: "+err.Error(), "")
		return fs.List
	}
	var global []string // privileges ON *.*
	grantOption := false
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			break
		}
		u := strings.ToUpper(g)
		if strings.Contains(u, "WITH GRANT OPTION") {
			grantOption = true
		}
		if i := strings.Index(u, " ON *.* "); i > 0 && strings.HasPrefix(u, "GRANT ") {
			for p := range strings.SplitSeq(u[len("GRANT "):i], ",") {
				global = append(global, strings.TrimSpace(p))
			}
		}
	}
	rows.Close()
	has := func(privs ...string) bool {
		for _, g := range global {
			if g == "ALL PRIVILEGES" || g == "ALL" {
				return true
			}
			for _, p := range privs {
				if g == p {
					return true
				}
			}
		}
		return false
	}
	quoted := strings.Replace(me, "@", "`@`", 1)
	if has("CREATE USER") {
		fs.Add("create users", mayfly.FindingOK, me+" has CREATE USER", "")
	} else {
		fs.Add("create users", mayfly.FindingFail, me+" lacks CREATE USER: no lease can be issued",
			"GRANT CREATE USER ON *.* TO `"+quoted+"`;")
	}
	if has("PROCESS") && has("SUPER", "CONNECTION ADMIN") {
		fs.Add("end sessions", mayfly.FindingOK, me+" may list and kill other users' connections", "")
	} else {
		fs.Add("end sessions", mayfly.FindingFail, me+" cannot see or kill other users' connections (PROCESS and CONNECTION ADMIN or SUPER): live sessions of a dropped user survive revocation",
			"GRANT PROCESS, CONNECTION ADMIN ON *.* TO `"+quoted+"`;  (MySQL before 8.0 or MariaDB before 10.5: SUPER)")
	}
	if grantOption {
		fs.Add("grant privileges", mayfly.FindingOK, me+" may grant what it holds", "")
	} else {
		fs.Add("grant privileges", mayfly.FindingFail, me+" has no privilege WITH GRANT OPTION: it cannot give leases their grants' privileges",
			"grant the admin the grants' privileges WITH GRANT OPTION")
	}
	var sched string
	if err := c.db.QueryRowContext(ctx, "SELECT @@GLOBAL.event_scheduler").Scan(&sched); err == nil {
		if strings.EqualFold(sched, "ON") || sched == "1" {
			fs.Add("event scheduler", mayfly.FindingOK, "on: each account also expires on the server's own clock", "")
		} else {
			fs.Add("event scheduler", mayfly.FindingWarn, "event_scheduler is "+sched+": accounts are dropped by Mayfly alone, with no expiry on the server as a backstop",
				"SET GLOBAL event_scheduler = ON;  and event_scheduler=ON under [mysqld] in the server's configuration")
		}
	}
	fs.List = append(fs.List, mayfly.ClockFinding(t.Name, skew, mayfly.MaxClockSkew))
	return fs.List
}
