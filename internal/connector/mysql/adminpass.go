package mysql

import (
	"context"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/mayflyhq/mayfly"
)

// ChangeAdminPassword sets the password of the account the connector logs
// in as to password: ALTER USER 'user'@'host' IDENTIFIED BY 'password',
// every part quoted as a string literal, for the account CURRENT_USER()
// names (MariaDB 10.11 accepts ALTER USER CURRENT_USER() and changes
// nothing). Sessions already open stay open.
func (c *Connector) ChangeAdminPassword(ctx context.Context, password string) error {
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "mysql target: change the admin password: %s", safeDriverMessage(err))
	}
	defer conn.Close()
	var cur string
	if err := conn.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&cur); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "mysql target: change the admin password: %s", safeDriverMessage(err))
	}
	i := strings.LastIndexByte(cur, '@')
	if i < 0 {
		return mayfly.Errorf(mayfly.EINTERNAL, "mysql target: CURRENT_USER() is not user@host")
	}
	stmt := "ALTER USER " + quoteString(cur[:i]) + "@" + quoteString(cur[i+1:]) + " IDENTIFIED BY " + quoteString(password)
	if _, err := conn.ExecContext(ctx, stmt); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "mysql target: change the admin password: %s", safeDriverMessage(err))
	}
	return nil
}

// WithPassword returns dsn with its password replaced by password. The
// error never quotes dsn. A DSN the driver does not write back as it read
// it (an address such as "]", which it reads again as another) is refused:
// the new credential must reach the same account as the old.
func WithPassword(dsn, password string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", mayfly.Errorf(mayfly.EINVALID, "the credential is not a valid MySQL DSN (user:password@tcp(host:port)/)")
	}
	if cfg.User == "" {
		return "", mayfly.Errorf(mayfly.EINVALID, "the credential names no user")
	}
	cfg.Passwd = password
	out := cfg.FormatDSN()
	again, err := mysql.ParseDSN(out)
	if err != nil || again.User != cfg.User || again.Passwd != password || again.Net != cfg.Net || again.Addr != cfg.Addr || again.DBName != cfg.DBName {
		return "", mayfly.Errorf(mayfly.EINVALID, "the credential is not a valid MySQL DSN (user:password@tcp(host:port)/): its address or database does not read back the same")
	}
	return out, nil
}
