package postgres

import (
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
)

// Tokens.

const tokenCols = `id, name, user_name, kind, groups_json, method, created_by, created_at, expires_at,
	last_used_at, revoked_at, hash`

func scanToken(rows pgx.Rows) (*mayfly.Token, error) {
	var (
		tk                                mayfly.Token
		kind                              string
		groups                            sql.NullString
		created, expires, used, revokedAt sql.NullInt64
	)
	if err := rows.Scan(&tk.ID, &tk.Name, &tk.User, &kind, &groups, &tk.Method, &tk.CreatedBy, &created, &expires,
		&used, &revokedAt, &tk.Hash); err != nil {
		return nil, err
	}
	tk.Kind = mayfly.TokenKind(kind)
	if err := jsonOf(groups, &tk.Groups); err != nil {
		return nil, err
	}
	tk.CreatedAt, tk.ExpiresAt, tk.LastUsedAt, tk.RevokedAt = timeOf(created), timeOf(expires), timeOf(used), timeOf(revokedAt)
	return &tk, nil
}

func (t *tx) listTokens(q string, args ...any) ([]*mayfly.Token, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*mayfly.Token
	for rows.Next() {
		tk, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, tk)
	}
	return out, rows.Err()
}

// CreateToken inserts tk; ECONFLICT when its id or hash exists.
func (t *tx) CreateToken(tk *mayfly.Token) error {
	if tk.Hash == "" {
		return mayfly.Errorf(mayfly.EINVALID, "token %q has no hash", tk.ID)
	}
	if tk.ExpiresAt.IsZero() {
		return mayfly.Errorf(mayfly.EINVALID, "token %q has no expiry", tk.ID)
	}
	var ts [4]any
	for i, x := range []struct {
		name string
		t    time.Time
	}{{"created_at", tk.CreatedAt}, {"expires_at", tk.ExpiresAt}, {"last_used_at", tk.LastUsedAt}, {"revoked_at", tk.RevokedAt}} {
		v, err := timeArg(x.name, x.t)
		if err != nil {
			return err
		}
		ts[i] = v
	}
	groups, err := jsonArg(tk.Groups, tk.Groups == nil)
	if err != nil {
		return err
	}
	tag, err := t.exec(`INSERT INTO tokens (`+tokenCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT DO NOTHING`,
		tk.ID, tk.Name, tk.User, string(tk.Kind), groups, tk.Method, tk.CreatedBy, ts[0], ts[1], ts[2], ts[3], tk.Hash)
	if err != nil {
		return fmt.Errorf("create token %s: %w", tk.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return mayfly.Errorf(mayfly.ECONFLICT, "token %q already exists", tk.ID)
	}
	return nil
}

// GetToken returns the token with id; ENOTFOUND when there is none.
func (t *tx) GetToken(id string) (*mayfly.Token, error) {
	ts, err := t.listTokens("SELECT "+tokenCols+" FROM tokens WHERE id = $1", id)
	if err != nil {
		return nil, fmt.Errorf("get token %s: %w", id, err)
	}
	if len(ts) == 0 {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "token %q not found", id)
	}
	return ts[0], nil
}

// GetTokenByHash returns the token with the given hash; ENOTFOUND when
// there is none.
func (t *tx) GetTokenByHash(hash string) (*mayfly.Token, error) {
	ts, err := t.listTokens("SELECT "+tokenCols+" FROM tokens WHERE hash = $1", hash)
	if err != nil {
		return nil, fmt.Errorf("get token by hash: %w", err)
	}
	if len(ts) == 0 {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "no such token")
	}
	return ts[0], nil
}

// ListTokens returns the tokens matching f, oldest first.
func (t *tx) ListTokens(f mayfly.TokenFilter) ([]*mayfly.Token, error) {
	var w where
	if f.User != "" {
		w.add("user_name = " + w.arg(f.User))
	}
	if f.Kind != "" {
		w.add("kind = " + w.arg(string(f.Kind)))
	}
	if f.Live {
		now, err := timeArg("now", f.Now)
		if err != nil {
			return nil, err
		}
		w.add("revoked_at IS NULL")
		if now != nil {
			w.add("expires_at > " + w.arg(now))
		}
	}
	ts, err := t.listTokens("SELECT "+tokenCols+" FROM tokens"+w.String()+" ORDER BY created_at NULLS FIRST, id", w.args...)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// UpdateToken writes tk's LastUsedAt and RevokedAt; ENOTFOUND when there
// is no such token.
func (t *tx) UpdateToken(tk *mayfly.Token) error {
	used, err := timeArg("last_used_at", tk.LastUsedAt)
	if err != nil {
		return err
	}
	revokedAt, err := timeArg("revoked_at", tk.RevokedAt)
	if err != nil {
		return err
	}
	tag, err := t.exec("UPDATE tokens SET last_used_at = $1, revoked_at = $2 WHERE id = $3", used, revokedAt, tk.ID)
	if err != nil {
		return fmt.Errorf("update token %s: %w", tk.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return mayfly.Errorf(mayfly.ENOTFOUND, "token %q not found", tk.ID)
	}
	return nil
}

// RevokeUserTokens revokes, at at, every token of user not yet revoked.
func (t *tx) RevokeUserTokens(user string, at time.Time) (int, error) {
	v, err := timeArg("revoked_at", at)
	if err != nil {
		return 0, err
	}
	if v == nil {
		return 0, mayfly.Errorf(mayfly.EINVALID, "revoking tokens needs a time")
	}
	tag, err := t.exec("UPDATE tokens SET revoked_at = $1 WHERE user_name = $2 AND revoked_at IS NULL", v, user)
	if err != nil {
		return 0, fmt.Errorf("revoke tokens of %s: %w", user, err)
	}
	return int(tag.RowsAffected()), nil
}
