package postgres

import (
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayflyhq/mayfly"
)

// The session log.

const sessionCols = `id, kind, lease_id, request_id, user_name, target, grant_name, account, client_addr,
	started_at, ended_at, end_reason, data_json, events, last_hash`

func (t *tx) listSessions(q string, args ...any) ([]*mayfly.Session, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*mayfly.Session
	for rows.Next() {
		var (
			s              mayfly.Session
			started, ended sql.NullInt64
			data           sql.NullString
		)
		if err := rows.Scan(&s.ID, &s.Kind, &s.LeaseID, &s.RequestID, &s.User, &s.Target, &s.Grant, &s.Account,
			&s.ClientAddr, &started, &ended, &s.EndReason, &data, &s.Events, &s.LastHash); err != nil {
			return nil, err
		}
		s.StartedAt, s.EndedAt = timeOf(started), timeOf(ended)
		if err := jsonOf(data, &s.Data); err != nil {
			return nil, fmt.Errorf("session %s: data: %w", s.ID, err)
		}
		out = append(out, &s)
	}
	return out, rows.Err()
}

// CreateSession stores s with no events; ECONFLICT when its id exists.
func (t *tx) CreateSession(s *mayfly.Session) error {
	if s.ID == "" || s.Kind == "" || s.LeaseID == "" || s.User == "" {
		return mayfly.Errorf(mayfly.EINVALID, "a session needs an id, a kind, a lease and a user")
	}
	if s.StartedAt.IsZero() {
		return mayfly.Errorf(mayfly.EINVALID, "session %q has no start time", s.ID)
	}
	started, err := timeArg("session start", s.StartedAt)
	if err != nil {
		return err
	}
	ended, err := timeArg("session end", s.EndedAt)
	if err != nil {
		return err
	}
	data, err := jsonArg(s.Data, s.Data == nil)
	if err != nil {
		return err
	}
	tag, err := t.exec(`INSERT INTO sessions (`+sessionCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, '')
		ON CONFLICT DO NOTHING`,
		s.ID, s.Kind, s.LeaseID, s.RequestID, s.User, s.Target, s.Grant, s.Account, s.ClientAddr, started, ended,
		s.EndReason, data)
	if err != nil {
		return fmt.Errorf("create session %s: %w", s.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return mayfly.Errorf(mayfly.ECONFLICT, "session %q already exists", s.ID)
	}
	s.Events, s.LastHash = 0, ""
	return nil
}

// GetSession returns the session with id; ENOTFOUND when there is none.
func (t *tx) GetSession(id string) (*mayfly.Session, error) {
	ss, err := t.listSessions("SELECT "+sessionCols+" FROM sessions WHERE id = $1", id)
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	if len(ss) == 0 {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "session %q not found", id)
	}
	return ss[0], nil
}

// ListSessions returns the sessions matching f in (StartedAt, ID) order.
func (t *tx) ListSessions(f mayfly.SessionFilter) ([]*mayfly.Session, error) {
	var w where
	addIn(&w, "id", f.IDs)
	if f.LeaseID != "" {
		w.add("lease_id = " + w.arg(f.LeaseID))
	}
	if f.User != "" {
		w.add("user_name = " + w.arg(f.User))
	}
	if f.Kind != "" {
		w.add("kind = " + w.arg(f.Kind))
	}
	if f.Open {
		w.add("ended_at IS NULL")
	}
	if !f.After.IsZero() {
		at, err := timeArg("session cursor", f.After.CreatedAt)
		if err != nil {
			return nil, err
		}
		if at == nil {
			at = int64(-1 << 63)
		}
		w.add("(started_at, id) > (" + w.arg(at) + ", " + w.arg(f.After.ID) + ")")
	}
	q := "SELECT " + sessionCols + " FROM sessions" + w.String() + " ORDER BY started_at, id"
	q += w.limit(f.Limit)
	ss, err := t.listSessions(q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return ss, nil
}

// AppendSessionEvents chains evs after the head of session id, which it
// locks, and appends them in one statement.
func (t *tx) AppendSessionEvents(id string, evs []*mayfly.SessionEvent) error {
	if !t.write {
		return errReadOnly
	}
	var (
		seq   int64
		hash  string
		ended sql.NullInt64
	)
	ok, err := t.queryRow("SELECT events, last_hash, ended_at FROM sessions WHERE id = $1 FOR UPDATE", []any{id}, &seq, &hash, &ended)
	var de *deferredError
	if errors.As(err, &de) {
		return de.err // the append to another session sent with it failed
	}
	if err != nil {
		return fmt.Errorf("append to session %s: %w", id, err)
	}
	if !ok {
		return mayfly.Errorf(mayfly.ENOTFOUND, "session %q not found", id)
	}
	if ended.Valid {
		return mayfly.Errorf(mayfly.ECONFLICT, "session %q has ended", id)
	}
	if len(evs) == 0 {
		return nil
	}
	if err := mayfly.ChainSessionEvents(id, seq, hash, evs); err != nil {
		return err
	}
	var (
		seqs            = make([]int64, len(evs))
		ats             = make([]int64, len(evs))
		kinds, prev, hs = make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs))
		bodies          = make([]*string, len(evs))
	)
	for i, e := range evs {
		at, err := timeArg("session event time", e.Time)
		if err != nil {
			return err
		}
		seqs[i], ats[i], kinds[i], prev[i], hs[i] = e.Seq, at.(int64), e.Kind, e.PrevHash, e.Hash
		if e.Body != nil {
			b := string(e.Body)
			bodies[i] = &b
		}
	}
	// The events and the new head go with the transaction's next
	// statement (the next session's head, when the session log writes
	// many sessions at once) or before its commit: a write of n sessions
	// is n round trips and the commit's, not 3n. Neither can find its
	// row missing (the head is locked above), so either fails only with
	// an error of PostgreSQL's, which the later call returns.
	failed := func(_ pgconn.CommandTag, err error) error {
		if err != nil {
			return fmt.Errorf("append to session %s: %w", id, err)
		}
		return nil
	}
	last := evs[len(evs)-1]
	t.deferred = append(t.deferred,
		deferredWrite{q: `INSERT INTO session_events (session_id, seq, at, kind, body, prev_hash, hash)
		SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])`,
			args: []any{id, seqs, ats, kinds, bodies, prev, hs}, check: failed},
		deferredWrite{q: "UPDATE sessions SET events = $1, last_hash = $2 WHERE id = $3",
			args: []any{last.Seq, last.Hash, id}, check: failed})
	return nil
}

// ListSessionEvents returns up to limit events of session id after
// afterSeq, in Seq order.
func (t *tx) ListSessionEvents(id string, afterSeq int64, limit int) ([]*mayfly.SessionEvent, error) {
	var w where
	w.add("session_id = " + w.arg(id))
	w.add("seq > " + w.arg(afterSeq))
	q := "SELECT session_id, seq, at, kind, body, prev_hash, hash FROM session_events" + w.String() + " ORDER BY seq"
	q += w.limit(limit)
	rows, err := t.query(q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list events of session %s: %w", id, err)
	}
	defer rows.Close()
	var out []*mayfly.SessionEvent
	for rows.Next() {
		var (
			e    mayfly.SessionEvent
			at   sql.NullInt64
			body sql.NullString
		)
		if err := rows.Scan(&e.SessionID, &e.Seq, &at, &e.Kind, &body, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("list events of session %s: %w", id, err)
		}
		e.Time = timeOf(at)
		if body.Valid {
			e.Body = []byte(body.String)
		}
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events of session %s: %w", id, err)
	}
	return out, nil
}

// EndSession records the end of session id.
func (t *tx) EndSession(id string, at time.Time, reason string) error {
	if at.IsZero() {
		return mayfly.Errorf(mayfly.EINVALID, "ending session %q needs a time", id)
	}
	v, err := timeArg("session end", at)
	if err != nil {
		return err
	}
	tag, err := t.exec("UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL", v, reason, id)
	if err != nil {
		return fmt.Errorf("end session %s: %w", id, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if _, err := t.GetSession(id); err != nil {
		return err
	}
	return mayfly.Errorf(mayfly.ECONFLICT, "session %q has already ended", id)
}
