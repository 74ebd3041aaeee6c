package mysql

import (
	"context"

	"github.com/go-sql-driver/mysql"

	"github.com/mayflyhq/mayfly"
)

// ChangeAdminPassword sets the password of the account the connector logs
// in as (ALTER USER CURRENT_USER()) to password, quoted as a string
// literal. Sessions already open stay open.
func (c *Connector) ChangeAdminPassword(ctx context.Context, password string) error {
	if _, err := c.db.ExecContext(ctx, "ALTER USER CURRENT_USER() IDENTIFIED BY "+quoteString(password)); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "mysql target: change the admin password: %s", safeDriverMessage(err))
	}
	return nil
}

// WithPassword returns dsn with its password replaced by password. The
// error never quotes dsn.
func WithPassword(dsn, password string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", mayfly.Errorf(mayfly.EINVALID, "the credential is not a valid MySQL DSN (user:password@tcp(host:port)/)")
	}
	cfg.Passwd = password
	return cfg.FormatDSN(), nil
}
