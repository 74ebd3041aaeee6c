package sqlite

import (
	"database/sql"
	"fmt"
	"time"

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
	res, err := t.exec(`INSERT INTO sessions (`+sessionCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')
		ON CONFLICT DO NOTHING`,
		s.ID, s.Kind, s.LeaseID, s.RequestID, s.User, s.Target, s.Grant, s.Account, s.ClientAddr, started, ended,
		s.EndReason, data)
	if err != nil {
		return fmt.Errorf("create session %s: %w", s.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("create session %s: %w", s.ID, err)
	} else if n == 0 {
		return mayfly.Errorf(mayfly.ECONFLICT, "session %q already exists", s.ID)
	}
	s.Events, s.LastHash = 0, ""
	return nil
}

// GetSession returns the session with id; ENOTFOUND when there is none.
func (t *tx) GetSession(id string) (*mayfly.Session, error) {
	ss, err := t.listSessions("SELECT "+sessionCols+" FROM sessions WHERE id = ?", id)
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
		w.add("lease_id = ?", f.LeaseID)
	}
	if f.User != "" {
		w.add("user_name = ?", f.User)
	}
	if f.Kind != "" {
		w.add("kind = ?", f.Kind)
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
		w.add("(started_at, id) > (?, ?)", at, f.After.ID)
	}
	q := "SELECT " + sessionCols + " FROM sessions" + w.String() + " ORDER BY started_at, id"
	q += w.limit(f.Limit)
	ss, err := t.listSessions(q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return ss, nil
}

// AppendSessionEvents chains evs after the head of session id and appends
// them: as rows of session_event_chunks of up to chunkBytes each, so that a
// busy gateway's write costs one row per session, not one per statement
// (see chunks.go for the format).
func (t *tx) AppendSessionEvents(id string, evs []*mayfly.SessionEvent) error {
	return t.AppendSessionsEvents([]mayfly.SessionAppend{{ID: id, Events: evs}})
}

// AppendSessionsEvents appends as AppendSessionEvents does for each of as,
// checking and chaining all of them before it writes anything. Here the
// statements are a few per session: SQLite runs them in process, where a
// prepared statement per session costs less than one for all of them.
func (t *tx) AppendSessionsEvents(as []mayfly.SessionAppend) error {
	if !t.write {
		return errReadOnly
	}
	if len(as) == 0 {
		return nil
	}
	ids := mayfly.SessionAppendIDs(as)
	heads, err := t.sessionHeads(ids)
	if err != nil {
		return err
	}
	// Everything is checked and chained before anything is written.
	if err := mayfly.ChainSessionAppends(as, heads); err != nil {
		return err
	}
	for _, a := range as {
		for _, e := range a.Events {
			if _, err := timeArg("session event time", e.Time); err != nil {
				return err
			}
		}
	}
	for _, a := range as {
		if err := t.insertChunks(a.ID, a.Events); err != nil {
			return err
		}
	}
	return t.moveSessionHeads(ids, heads)
}

// sessionHeads reads the heads of the sessions ids (sorted, distinct); a
// session not found is missing from the map. One statement each: prepared
// once, it costs less here than one statement naming them all (a JSON
// array read with json_each was tried, BenchmarkSessionWrite).
func (t *tx) sessionHeads(ids []string) (map[string]*mayfly.SessionHead, error) {
	heads := make(map[string]*mayfly.SessionHead, len(ids))
	for _, id := range ids {
		h := &mayfly.SessionHead{}
		ok, err := t.queryRow("SELECT events, last_hash, ended_at IS NOT NULL FROM sessions WHERE id = ?", []any{id}, &h.Seq, &h.Hash, &h.Ended)
		if err != nil {
			return nil, fmt.Errorf("append to session %s: %w", id, err)
		}
		if ok {
			heads[id] = h
		}
	}
	return heads, nil
}

// insertChunks writes the chained evs of session id as chunks.
func (t *tx) insertChunks(id string, evs []*mayfly.SessionEvent) error {
	buf := make([]byte, 0, min(chunkBytes, 256*len(evs)))
	first := 0
	for i, e := range evs {
		buf = appendEventLine(buf, e)
		if len(buf) < chunkBytes && i < len(evs)-1 {
			continue
		}
		if _, err := t.exec("INSERT INTO session_event_chunks (session_id, first_seq, last_seq, prev_hash, events) VALUES (?, ?, ?, ?, ?)",
			id, evs[first].Seq, e.Seq, evs[first].PrevHash, string(buf)); err != nil {
			return fmt.Errorf("append to session %s: events %d-%d: %w", id, evs[first].Seq, e.Seq, err)
		}
		buf, first = buf[:0], i+1
	}
	return nil
}

// moveSessionHeads writes the heads of ids that moved.
func (t *tx) moveSessionHeads(ids []string, heads map[string]*mayfly.SessionHead) error {
	for _, id := range ids {
		if h := heads[id]; h.Moved {
			if _, err := t.exec("UPDATE sessions SET events = ?, last_hash = ? WHERE id = ?", h.Seq, h.Hash, id); err != nil {
				return fmt.Errorf("append to session %s: %w", id, err)
			}
		}
	}
	return nil
}

// ListSessionEvents returns up to limit events of session id after
// afterSeq, in Seq order.
func (t *tx) ListSessionEvents(id string, afterSeq int64, limit int) ([]*mayfly.SessionEvent, error) {
	rows, err := t.query("SELECT first_seq, prev_hash, events FROM session_event_chunks WHERE session_id = ? AND last_seq > ? ORDER BY first_seq", id, afterSeq)
	if err != nil {
		return nil, fmt.Errorf("list events of session %s: %w", id, err)
	}
	defer rows.Close()
	var out []*mayfly.SessionEvent
	for rows.Next() && (limit <= 0 || len(out) < limit) {
		var (
			first int64
			prev  string
			lines string
		)
		if err := rows.Scan(&first, &prev, &lines); err != nil {
			return nil, fmt.Errorf("list events of session %s: %w", id, err)
		}
		evs, err := parseEventLines(id, prev, lines)
		if err != nil {
			return nil, fmt.Errorf("list events of session %s: chunk at %d: %w", id, first, err)
		}
		for _, e := range evs {
			if e.Seq > afterSeq && (limit <= 0 || len(out) < limit) {
				out = append(out, e)
			}
		}
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
	res, err := t.exec("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL", v, reason, id)
	if err != nil {
		return fmt.Errorf("end session %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("end session %s: %w", id, err)
	} else if n == 1 {
		return nil
	}
	if _, err := t.GetSession(id); err != nil {
		return err
	}
	return mayfly.Errorf(mayfly.ECONFLICT, "session %q has already ended", id)
}
