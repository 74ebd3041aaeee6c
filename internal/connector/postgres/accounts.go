package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/mayflyhq/mayfly"
)

// accountsSQL lists roles whose name starts with $1 ("" for every role),
// with their live sessions, the latest activity of those sessions, the
// roles they are members of, their notable attributes and their comment.
const accountsSQL = `
SELECT r.rolname::text, r.rolcanlogin, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
	coalesce(a.sessions, 0), a.last_activity,
	ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_auth_members m
		JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
		WHERE m.member = r.oid ORDER BY 1),
	coalesce(pg_catalog.shobj_description(r.oid, 'pg_authid'), '')
FROM pg_catalog.pg_roles r
LEFT JOIN (
	SELECT usesysid, count(*) AS sessions,
		max(greatest(backend_start, state_change, query_start)) AS last_activity
	FROM pg_catalog.pg_stat_activity
	WHERE usesysid IS NOT NULL
	GROUP BY usesysid
) a ON a.usesysid = r.oid
WHERE starts_with(r.rolname::text, $1)
ORDER BY r.rolname`

// Accounts lists the roles whose name starts with req.Prefix (every role
// when it is ""). Sessions and LastActivity come from pg_stat_activity, so
// LastActivity is zero for a role with no live session. Privileges lists the
// roles it is a member of and the attributes createrole, createdb,
// replication and bypassrls it has; Superuser is reported on its own.
// Marked is set when the role's comment carries this installation's mark.
func (c *Connector) Accounts(ctx context.Context, req mayfly.AccountsRequest) (_ []mayfly.Account, err error) {
	defer func() { err = c.scrub(err) }()
	rs, err := c.pool.Query(ctx, accountsSQL, req.Prefix)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	defer rs.Close()
	var out []mayfly.Account
	for rs.Next() {
		var (
			a                                         mayfly.Account
			createRole, createDB, replication, bypass bool
			last                                      *time.Time
			member                                    []string
			comment                                   string
		)
		if err := rs.Scan(&a.Name, &a.CanLogin, &a.Superuser, &createRole, &createDB, &replication, &bypass,
			&a.Sessions, &last, &member, &comment); err != nil {
			return nil, fmt.Errorf("list roles: %w", err)
		}
		if last != nil {
			a.LastActivity = last.UTC()
		}
		a.Privileges = member
		a.Marked = c.key.Valid(a.Name, commentMark(comment))
		for _, attr := range []struct {
			name string
			set  bool
		}{{"createrole", createRole}, {"createdb", createDB}, {"replication", replication}, {"bypassrls", bypass}} {
			if attr.set {
				a.Privileges = append(a.Privileges, attr.name)
			}
		}
		out = append(out, a)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	return out, nil
}
