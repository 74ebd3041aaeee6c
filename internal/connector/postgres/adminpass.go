package postgres

import (
	"context"
	"crypto/rand"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayflyhq/mayfly"
)

// adminSCRAMIterations is the PBKDF2 iteration count of the verifier of
// the admin's own password: PostgreSQL's default.
const adminSCRAMIterations = 4096

// ChangeAdminPassword sets the password of the role the connector logs in
// as (ALTER ROLE CURRENT_USER) to password, sending only its SCRAM-SHA-256
// verifier, quoted as a literal, so the plaintext never reaches the
// server or its logs. Sessions already open stay open.
func (c *Connector) ChangeAdminPassword(ctx context.Context, password string) error {
	salt := make([]byte, saltLen)
	rand.Read(salt)
	lit, err := quoteLiteral(SCRAMVerifier(password, salt, adminSCRAMIterations))
	if err != nil {
		return err
	}
	if _, err := c.pool.Exec(ctx, "ALTER ROLE CURRENT_USER PASSWORD "+lit); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "postgres target %q: change the admin password: %s", c.name, c.scrubText(serverMessage(err)))
	}
	return nil
}

// WithPassword returns dsn (a postgres:// URL or a key=value string)
// with its password replaced by password. The error never quotes dsn.
func WithPassword(dsn, password string) (string, error) {
	if _, err := pgxpool.ParseConfig(dsn); err != nil {
		return "", mayfly.Errorf(mayfly.EINVALID, "the credential is not a valid PostgreSQL connection string")
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", mayfly.Errorf(mayfly.EINVALID, "the credential is not a valid PostgreSQL URL")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", password)
			// pgx reads "+" as itself, not a space.
			u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
		} else {
			u.User = url.UserPassword(u.User.Username(), password)
		}
		return u.String(), nil
	}
	// key=value: a later key overrides an earlier one. Check the result
	// means what it should, whatever the input's oddities.
	out := dsn + " password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(password) + "'"
	before, _ := pgconn.ParseConfig(dsn)
	after, err := pgconn.ParseConfig(out)
	if err != nil || after.Password != password || after.User != before.User || after.Host != before.Host ||
		after.Port != before.Port || after.Database != before.Database {
		return "", mayfly.Errorf(mayfly.EINVALID, "the credential's key=value form cannot take a new password; give it as a postgres:// URL")
	}
	return out, nil
}
