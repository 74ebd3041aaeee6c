package postgres

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayflyhq/mayfly"
)

// For the PostgreSQL gateway (internal/gateway/pggw), which connects to the
// target as a lease's account with the password only the broker holds.

// SessionConfig returns the connection settings of the target (its address,
// TLS and fallbacks as in the target's DSN, not its public host) for
// cred's account, password and database.
func (c *Connector) SessionConfig(cred mayfly.Credential) *pgconn.Config {
	cfg := c.poolCfg.ConnConfig.Config.Copy()
	cfg.User, cfg.Password = cred.Username, cred.Password
	if cred.Database != "" {
		cfg.Database = cred.Database
	}
	cfg.RuntimeParams = map[string]string{}
	cfg.AfterConnect, cfg.ValidateConnect = nil, nil
	return cfg
}

// ResetPassword gives the role of lease leaseID a new random password and
// returns its credential: what the gateway does when it no longer holds the
// password (after a restart of the broker, which keeps it in memory only).
// Only a role carrying the lease's comment is changed.
func (c *Connector) ResetPassword(ctx context.Context, leaseID, username, database string) (_ mayfly.Credential, err error) {
	defer func() { err = c.scrub(err) }()
	if err := c.checkName(username); err != nil {
		return mayfly.Credential{}, err
	}
	password := GeneratePassword()
	salt := make([]byte, saltLen)
	rand.Read(salt)
	verifier, err := quoteLiteral(SCRAMVerifier(password, salt, c.iterations))
	if err != nil {
		return mayfly.Credential{}, err
	}
	pool, err := c.poolFor(c.database)
	if err != nil {
		return mayfly.Credential{}, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return mayfly.Credential{}, fmt.Errorf("reset password of %s: %w", username, err)
	}
	defer conn.Release()
	res, err := pipeline(ctx, conn.Conn().PgConn(), segment{{
		sql:  "SELECT shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles WHERE rolname = $1",
		args: []string{username},
	}})
	if err != nil {
		return mayfly.Credential{}, fmt.Errorf("reset password of %s: %w", username, err)
	}
	if err := res[0].err; err != nil {
		return mayfly.Credential{}, fmt.Errorf("reset password of %s: %w", username, err)
	}
	if rs := res[0].rows[0]; len(rs) == 0 || !sameLease(string(rs[0][0]), leaseID) {
		return mayfly.Credential{}, mayfly.Errorf(mayfly.ENOTFOUND, "role %s of lease %s not found", username, leaseID)
	}
	res, err = pipeline(ctx, conn.Conn().PgConn(), segment{{sql: "ALTER ROLE " + ident(username) + " PASSWORD " + verifier}})
	if err != nil {
		return mayfly.Credential{}, fmt.Errorf("reset password of %s: %w", username, err)
	}
	if err := res[0].err; err != nil {
		return mayfly.Credential{}, fmt.Errorf("reset password of %s: %w", username, err)
	}
	if database == "" {
		database = c.database
	}
	return mayfly.Credential{Username: username, Password: password, Host: c.host, Port: c.port, Database: database}, nil
}
