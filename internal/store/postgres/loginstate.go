package postgres

import (
	"fmt"
	"time"

	"github.com/mayflyhq/mayfly"
)

var _ mayfly.LoginStateTx = (*tx)(nil)

// PutLoginState stores value under key until expires (see
// mayfly.LoginStateTx).
func (t *tx) PutLoginState(key string, value []byte, now, expires time.Time, max int) error {
	if key == "" || !expires.After(now) {
		return mayfly.Errorf(mayfly.EINVALID, "login state: a key and a future expiry are required")
	}
	if _, err := t.exec(`DELETE FROM login_states WHERE expires_at < $1`, now.UnixNano()); err != nil {
		return fmt.Errorf("login state: remove expired: %w", err)
	}
	var n int
	if _, err := t.queryRow(`SELECT COUNT(*) FROM login_states`, nil, &n); err != nil {
		return fmt.Errorf("login state: count: %w", err)
	}
	if max > 0 && n >= max {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "too many logins in progress; try again in a few minutes")
	}
	tag, err := t.exec(`INSERT INTO login_states (key, value, expires_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING`,
		key, value, expires.UnixNano())
	if err != nil {
		return fmt.Errorf("login state: store: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return mayfly.Errorf(mayfly.ECONFLICT, "login state: the key is in use")
	}
	return nil
}

// TakeLoginState removes the entry under key and returns its value.
func (t *tx) TakeLoginState(key string, now time.Time) ([]byte, error) {
	var v []byte
	var exp int64
	ok, err := t.queryRow(`DELETE FROM login_states WHERE key = $1 RETURNING value, expires_at`, []any{key}, &v, &exp)
	if err != nil {
		return nil, fmt.Errorf("login state: take: %w", err)
	}
	if !ok || now.UnixNano() > exp {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "login state not found or expired")
	}
	return v, nil
}

// HasLoginState reports whether an unexpired entry has the key.
func (t *tx) HasLoginState(key string, now time.Time) (bool, error) {
	var one int
	ok, err := t.queryRow(`SELECT 1 FROM login_states WHERE key = $1 AND expires_at >= $2`, []any{key, now.UnixNano()}, &one)
	if err != nil {
		return false, fmt.Errorf("login state: read: %w", err)
	}
	return ok, nil
}
