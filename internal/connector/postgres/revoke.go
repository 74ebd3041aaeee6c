package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayflyhq/mayfly"
)

// revokeAttempts bounds how often Revoke starts over when the role changed
// under it (a new dependency, a concurrent ALTER or DROP).
const revokeAttempts = 3

// Revoke removes the role of a lease: it blocks new logins (NOLOGIN), ends
// the role's sessions, reassigns what it owns to the admin role and drops
// its remaining privileges in every database where it has any, drops the
// role, ends any session that slipped in, and verifies the role is gone. A
// role that does not exist is already revoked.
//
// With no dependencies outside the admin's database this takes two round
// trips on one connection.
func (c *Connector) Revoke(ctx context.Context, req mayfly.RevokeRequest) (err error) {
	defer func() { err = c.scrub(err) }()
	name := req.Username
	if err := c.checkName(name); err != nil {
		return err
	}
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("revoke %s: %w", name, err)
	}
	defer conn.Release()
	pg := conn.Conn().PgConn()
	for attempt := 1; ; attempt++ {
		err := c.revoke(ctx, pg, name)
		if err == nil {
			return nil
		}
		switch pgCode(err) {
		case sqlDependentObjects, sqlSerialization, sqlDeadlock, sqlInternalError:
			if attempt < revokeAttempts && ctx.Err() == nil {
				continue
			}
		}
		return fmt.Errorf("revoke %s: %w", name, err)
	}
}

// revoke makes one attempt at removing role name.
func (c *Connector) revoke(ctx context.Context, pg *pgconn.PgConn, name string) error {
	role := ident(name)
	args := []string{name}
	// Round trip 1: block logins (committed on its own, so the role stays
	// locked out even if the rest fails), then end its sessions and find
	// the databases where it owns objects or holds privileges.
	res, err := pipeline(ctx, pg,
		segment{{sql: "ALTER ROLE " + role + " NOLOGIN"}},
		segment{
			{sql: `SELECT r.oid::text, (SELECT count(pg_catalog.pg_terminate_backend(a.pid))
				FROM pg_catalog.pg_stat_activity a WHERE a.usesysid = r.oid AND a.pid <> pg_catalog.pg_backend_pid())
				FROM pg_catalog.pg_roles r WHERE r.rolname = $1`, args: args},
			{sql: `SELECT DISTINCT coalesce(d.datname, '')
				FROM pg_catalog.pg_shdepend s
				JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid AND s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
				LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid
				WHERE r.rolname = $1`, args: args},
		},
	)
	if err != nil {
		return err
	}
	if err := res[1].err; err != nil {
		return err
	}
	found := res[1].rows[0]
	if err := res[0].err; err != nil {
		if pgCode(err) == sqlUndefinedObject && len(found) == 0 {
			return nil // already gone
		}
		return err
	}
	if len(found) == 0 {
		return nil // dropped concurrently
	}
	oid := string(found[0][0])

	// Objects in other databases: REASSIGN OWNED and DROP OWNED only see
	// the database they run in. Shared objects (databases, tablespaces;
	// dbid 0, listed as "") are handled from the admin's database.
	local := false
	for _, row := range res[1].rows[1] {
		db := string(row[0])
		if db == "" || db == c.database {
			local = true
			continue
		}
		if err := c.dropOwnedIn(ctx, db, role); err != nil {
			return err
		}
	}

	// Round trip 2: drop the role (after its local objects, in one
	// transaction), then end any session that logged in while NOLOGIN was
	// being committed, and verify.
	drop := segment{}
	if local {
		drop = append(drop,
			query{sql: "REASSIGN OWNED BY " + role + " TO CURRENT_USER"},
			query{sql: "DROP OWNED BY " + role})
	}
	drop = append(drop, query{sql: "DROP ROLE IF EXISTS " + role})
	res, err = pipeline(ctx, pg, drop, segment{
		{sql: `SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity
			WHERE usesysid = $1 AND pid <> pg_catalog.pg_backend_pid()`, args: []string{oid}},
		{sql: "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = $1", args: args},
	})
	if err != nil {
		return err
	}
	if err := res[0].err; err != nil {
		return err
	}
	if err := res[1].err; err != nil {
		return err
	}
	if n := string(res[1].rows[1][0][0]); n != "0" {
		return fmt.Errorf("role %s is still present after DROP ROLE", name)
	}
	return nil
}

// dropOwnedIn reassigns the objects role owns in database db to the admin
// role and drops its privileges there, over a short-lived connection.
func (c *Connector) dropOwnedIn(ctx context.Context, db, role string) error {
	conn, err := c.connectTo(ctx, db)
	if err != nil {
		if pgCode(err) == sqlInvalidCatalogDB {
			return nil // the database was dropped meanwhile, and its objects with it
		}
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	res, err := pipeline(ctx, conn.PgConn(), segment{
		{sql: "REASSIGN OWNED BY " + role + " TO CURRENT_USER"},
		{sql: "DROP OWNED BY " + role},
	})
	if err != nil {
		return fmt.Errorf("database %q: %w", db, err)
	}
	if err := res[0].err; err != nil {
		if pgCode(err) == sqlUndefinedObject {
			return nil // the role is gone
		}
		return fmt.Errorf("database %q: %w", db, err)
	}
	return nil
}
