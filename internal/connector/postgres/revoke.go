package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayflyhq/mayfly"
)

// revokeAttempts bounds how often Revoke starts over when the role changed
// under it (a concurrent ALTER or DROP, a new dependency).
const revokeAttempts = 3

// Statements prepared once per admin connection, so that Revoke's queries
// are not parsed and planned on every call.
var preparedSQL = map[string]string{
	// Ends the role's sessions; returns its oid and how many sessions
	// were signalled.
	"mayfly_role_terminate": `SELECT r.oid::text, (SELECT count(pg_catalog.pg_terminate_backend(a.pid))
		FROM pg_catalog.pg_stat_activity a WHERE a.usesysid = r.oid AND a.pid <> pg_catalog.pg_backend_pid())
		FROM pg_catalog.pg_roles r WHERE r.rolname = $1`,
	// Ends the sessions of a role by oid, which works after the role is
	// dropped (pg_stat_activity.usename is then NULL).
	"mayfly_oid_terminate": `SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity
		WHERE usesysid = $1::pg_catalog.oid AND pid <> pg_catalog.pg_backend_pid()`,
	"mayfly_role_count": `SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = $1`,
	// Databases where the role owns objects or holds privileges; "" for
	// shared objects (dbid 0).
	"mayfly_role_databases": `SELECT DISTINCT coalesce(d.datname::text, '')
		FROM pg_catalog.pg_shdepend s
		JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid AND s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
		LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid
		WHERE r.rolname = $1`,
	// A transaction that commits without waiting for its WAL to reach disk.
	"mayfly_async_commit": `SELECT pg_catalog.set_config('synchronous_commit', 'off', true)`,
}

// prepare makes sure the statements of preparedSQL are prepared on conn;
// after the first call on a connection it does not talk to the server.
func prepare(ctx context.Context, conn *pgx.Conn) error {
	for name, sql := range preparedSQL {
		if _, err := conn.Prepare(ctx, name, sql); err != nil {
			return fmt.Errorf("prepare %s: %w", name, err)
		}
	}
	return nil
}

// Revoke removes the role of a lease: it blocks new logins (NOLOGIN), ends
// the role's sessions, reassigns what it owns to the admin role and drops
// its remaining privileges in every database where it has any, drops the
// role, ends any session that slipped in, and verifies the role is gone. A
// role that does not exist is already revoked.
//
// A role without objects or privileges of its own and without live
// sessions, the usual case, takes one round trip on one admin connection.
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
	if err := prepare(ctx, conn.Conn()); err != nil {
		return fmt.Errorf("revoke %s: %w", name, err)
	}
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
	// One round trip, three transactions:
	//  1. NOLOGIN, committed on its own so that the role stays locked out
	//     if a later step fails. It does not wait for its WAL to be flushed:
	//     the DROP ROLE's commit flushes it, and until that commit succeeds
	//     Revoke has not reported success.
	//  2. End the role's sessions, learn its oid, and drop it. DROP ROLE
	//     fails (2BP01) when the role still owns objects or holds
	//     privileges; dropWithObjects then takes over.
	//  3. Verify the role is gone.
	res, err := pipeline(ctx, pg,
		segment{{name: "mayfly_async_commit"}, {sql: "ALTER ROLE " + role + " NOLOGIN"}},
		segment{{name: "mayfly_role_terminate", args: args}, {sql: "DROP ROLE IF EXISTS " + role}},
		segment{{name: "mayfly_role_count", args: args}},
	)
	if err != nil {
		return err
	}
	if len(res[1].rows) == 0 {
		return res[1].err // the SELECT failed
	}
	found := res[1].rows[0]
	if err := res[0].err; err != nil {
		if pgCode(err) == sqlUndefinedObject && len(found) == 0 {
			return nil // already gone
		}
		return err
	}
	if len(found) == 0 {
		return c.verify(ctx, pg, name, "") // dropped concurrently
	}
	oid, sessions := string(found[0][0]), string(found[0][1])
	if err := res[1].err; err != nil {
		if pgCode(err) != sqlDependentObjects {
			return err
		}
		if err := c.dropWithObjects(ctx, pg, name); err != nil {
			return err
		}
		return c.verify(ctx, pg, name, oid)
	}
	if sessions != "0" {
		// The role was in use: look once more, now that it is dropped, for
		// a session that logged in while NOLOGIN was being committed.
		return c.verify(ctx, pg, name, oid)
	}
	if err := res[2].err; err != nil {
		return err
	}
	if n := string(res[2].rows[0][0][0]); n != "0" {
		return fmt.Errorf("role %s is still present after DROP ROLE", name)
	}
	return nil
}

// verify ends the sessions of the dropped role with the given oid, when
// known, and checks that the role is gone, in one round trip.
func (c *Connector) verify(ctx context.Context, pg *pgconn.PgConn, name, oid string) error {
	seg := segment{}
	if oid != "" {
		seg = append(seg, query{name: "mayfly_oid_terminate", args: []string{oid}})
	}
	seg = append(seg, query{name: "mayfly_role_count", args: []string{name}})
	res, err := pipeline(ctx, pg, seg)
	if err != nil {
		return err
	}
	if err := res[0].err; err != nil {
		return err
	}
	rs := res[0].rows[len(seg)-1]
	if n := string(rs[0][0]); n != "0" {
		return fmt.Errorf("role %s is still present after DROP ROLE", name)
	}
	return nil
}

// dropWithObjects drops a role that owns objects or holds privileges: in
// every database where it does, its objects are reassigned to the admin
// role and its privileges dropped (REASSIGN OWNED and DROP OWNED only see
// the database they run in), then the role is dropped.
func (c *Connector) dropWithObjects(ctx context.Context, pg *pgconn.PgConn, name string) error {
	role := ident(name)
	res, err := pipeline(ctx, pg, segment{{name: "mayfly_role_databases", args: []string{name}}})
	if err != nil {
		return err
	}
	if err := res[0].err; err != nil {
		return err
	}
	// Shared objects (databases, tablespaces) are handled from the
	// admin's database, with the objects there.
	local := false
	for _, row := range res[0].rows[0] {
		db := string(row[0])
		if db == "" || db == c.database {
			local = true
			continue
		}
		if err := c.dropOwnedIn(ctx, db, role); err != nil {
			return err
		}
	}
	drop := segment{}
	if local {
		drop = append(drop,
			query{sql: "REASSIGN OWNED BY " + role + " TO CURRENT_USER"},
			query{sql: "DROP OWNED BY " + role})
	}
	drop = append(drop, query{sql: "DROP ROLE IF EXISTS " + role})
	res, err = pipeline(ctx, pg, drop)
	if err != nil {
		return err
	}
	return res[0].err
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
