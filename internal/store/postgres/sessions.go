package postgres

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
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
	return t.AppendSessionsEvents([]mayfly.SessionAppend{{ID: id, Events: evs}})
}

// AppendSessionsEvents locks and reads the heads of the sessions of as in
// one statement (in id order, as any other such write locks them), chains
// the events of each after its head, and appends all of them and moves
// the heads in two more statements, sent with the transaction's next
// statement or before its commit: a write of n sessions is one round trip
// and the commit's, whatever n. Neither deferred statement can find a row
// missing (the heads are locked), so either fails only with an error of
// PostgreSQL's, which the later call returns.
func (t *tx) AppendSessionsEvents(as []mayfly.SessionAppend) error {
	if !t.write {
		return errReadOnly
	}
	if len(as) == 0 {
		return nil
	}
	ids := mayfly.SessionAppendIDs(as)
	heads, err := t.lockSessionHeads(ids)
	if err != nil {
		return err
	}
	if err := mayfly.ChainSessionAppends(as, heads); err != nil {
		return err
	}
	n := 0
	for _, a := range as {
		n += len(a.Events)
	}
	if n == 0 {
		return nil
	}
	var (
		sids, kinds, prev, hs = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		seqs, ats             = make([]int64, 0, n), make([]int64, 0, n)
		bodies                = make([]*string, 0, n)
	)
	for _, a := range as {
		for _, e := range a.Events {
			at, err := timeArg("session event time", e.Time)
			if err != nil {
				return err
			}
			var body *string
			if e.Body != nil {
				b := string(e.Body)
				body = &b
			}
			sids, seqs, ats, kinds, bodies, prev, hs = append(sids, a.ID), append(seqs, e.Seq), append(ats, at.(int64)),
				append(kinds, e.Kind), append(bodies, body), append(prev, e.PrevHash), append(hs, e.Hash)
		}
	}
	var hids, hhashes []string
	var hseqs []int64
	for _, id := range ids {
		if h := heads[id]; h.Moved {
			hids, hseqs, hhashes = append(hids, id), append(hseqs, h.Seq), append(hhashes, h.Hash)
		}
	}
	failed := func(_ pgconn.CommandTag, err error) error {
		if err != nil {
			return fmt.Errorf("append to %s: %w", sessionsNamed(hids), err)
		}
		return nil
	}
	t.deferred = append(t.deferred,
		deferredWrite{q: `INSERT INTO session_events (session_id, seq, at, kind, body, prev_hash, hash)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])`,
			args: []any{sids, seqs, ats, kinds, bodies, prev, hs}, check: failed},
		deferredWrite{q: `UPDATE sessions AS s SET events = h.seq, last_hash = h.hash
		FROM unnest($1::text[], $2::bigint[], $3::text[]) AS h (id, seq, hash) WHERE s.id = h.id`,
			args: []any{hids, hseqs, hhashes}, check: failed})
	return nil
}

// sessionsNamed names the sessions ids in an error.
func sessionsNamed(ids []string) string {
	if len(ids) == 1 {
		return "session " + ids[0]
	}
	return "sessions " + strings.Join(ids, ", ")
}

// lockSessionHeads locks and reads the heads of the sessions ids (sorted,
// distinct); a session not found is missing from the map.
func (t *tx) lockSessionHeads(ids []string) (map[string]*mayfly.SessionHead, error) {
	what := sessionsNamed(ids)
	rows, err := t.query("SELECT id, events, last_hash, ended_at IS NOT NULL FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE", ids)
	var de *deferredError
	if errors.As(err, &de) {
		return nil, de.err // an append sent with it failed
	}
	if err != nil {
		return nil, fmt.Errorf("append to %s: %w", what, err)
	}
	defer rows.Close()
	heads := make(map[string]*mayfly.SessionHead, len(ids))
	for rows.Next() {
		var id string
		h := &mayfly.SessionHead{}
		if err := rows.Scan(&id, &h.Seq, &h.Hash, &h.Ended); err != nil {
			return nil, fmt.Errorf("append to %s: %w", what, err)
		}
		heads[id] = h
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("append to %s: %w", what, err)
	}
	return heads, nil
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
