package postgres

import (
	"context"
	"crypto/rand"
	"net/url"
	"strings"

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
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return "", mayfly.Errorf(mayfly.EINVALID, "the credential is not a valid PostgreSQL connection string")
	}
	before := &pc.ConnConfig.Config
	var out, form string
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
		out, form = u.String(), "the credential is not a valid PostgreSQL URL: it does not read back the same with a new password"
	} else {
		// key=value: a later key overrides an earlier one.
		out = dsn + " password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(password) + "'"
		form = "the credential's key=value form cannot take a new password; give it as a postgres:// URL"
	}
	// Check the result means what it should, whatever the input's
	// oddities: the same account on the same server, the new password.
	ac, err := pgxpool.ParseConfig(out)
	if err != nil {
		return "", mayfly.Errorf(mayfly.EINVALID, "%s", form)
	}
	if after := &ac.ConnConfig.Config; after.Password != password || after.User != before.User || after.Host != before.Host ||
		after.Port != before.Port || after.Database != before.Database {
		return "", mayfly.Errorf(mayfly.EINVALID, "%s", form)
	}
	return out, nil
}
