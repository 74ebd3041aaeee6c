package sqlite

import (
	"database/sql"
	"fmt"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Chat messages about requests and the nonces of signed requests
// (migration 9).

// PutChatMessage records where the chat message about m.RequestID is.
func (t *tx) PutChatMessage(m *mayfly.ChatMessage) error {
	if m.RequestID == "" || m.Channel == "" || m.TS == "" {
		return mayfly.Errorf(mayfly.EINVALID, "chat message: request id, channel and ts are required")
	}
	at, err := timeArg("updated_at", m.UpdatedAt)
	if err != nil {
		return err
	}
	if _, err := t.exec(`INSERT INTO chat_messages (request_id, channel, ts, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (request_id) DO UPDATE SET channel = excluded.channel, ts = excluded.ts, updated_at = excluded.updated_at`,
		m.RequestID, m.Channel, m.TS, at); err != nil {
		return fmt.Errorf("put chat message of request %s: %w", m.RequestID, err)
	}
	return nil
}

// GetChatMessage returns the chat message about a request.
func (t *tx) GetChatMessage(requestID string) (*mayfly.ChatMessage, error) {
	m := &mayfly.ChatMessage{RequestID: requestID}
	var at sql.NullInt64
	ok, err := t.queryRow(`SELECT channel, ts, updated_at FROM chat_messages WHERE request_id = ?`, []any{requestID}, &m.Channel, &m.TS, &at)
	if err != nil {
		return nil, fmt.Errorf("get chat message of request %s: %w", requestID, err)
	}
	if !ok {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "no chat message about request %q", requestID)
	}
	m.UpdatedAt = timeOf(at)
	return m, nil
}

// UseNonce records key until until; ECONFLICT when it is recorded and
// live. The store has a single writer, so the check and the insert are
// atomic.
func (t *tx) UseNonce(key string, now, until time.Time) error {
	if key == "" {
		return mayfly.Errorf(mayfly.EINVALID, "nonce: key is required")
	}
	nowArg, err := timeArg("now", now)
	if err != nil {
		return err
	}
	untilArg, err := timeArg("nonce end", until)
	if err != nil {
		return err
	}
	if nowArg == nil || untilArg == nil || !until.After(now) {
		return mayfly.Errorf(mayfly.EINVALID, "nonce: now and a later until are required")
	}
	if _, err := t.exec(`DELETE FROM nonces WHERE until < ?`, nowArg); err != nil {
		return fmt.Errorf("remove old nonces: %w", err)
	}
	res, err := t.exec(`INSERT INTO nonces (key, until) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET until = excluded.until WHERE nonces.until < ?`, key, untilArg, nowArg)
	if err != nil {
		return fmt.Errorf("record nonce: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("record nonce: %w", err)
	} else if n == 0 {
		return mayfly.Errorf(mayfly.ECONFLICT, "this signed request was seen already (a replay)")
	}
	return nil
}
