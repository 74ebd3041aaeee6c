package sqlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Session events are stored in chunks (session_event_chunks, migration
// 14): each row holds consecutive events of one session, first_seq to
// last_seq, one line each:
//
//	SEQ AT HASH KIND[ BODY]\n
//
// SEQ is the event's number, AT its time in Unix nanoseconds, HASH its
// chain hash, KIND a JSON string and BODY its compact JSON body, absent
// when it has none (compact JSON holds no newline). Each event's previous
// hash is the hash on the line before; the row's prev_hash is the first
// one's. Reading rebuilds every field, so the chain verifies as it did
// with a row per event, and any edit of a line is found by verification.

// chunkBytes is the size past which a chunk is closed and a new one
// started, so that reading from the middle of a long session decodes
// little it does not return.
const chunkBytes = 64 << 10

// appendEventLine appends e's line to b.
func appendEventLine(b []byte, e *mayfly.SessionEvent) []byte {
	b = strconv.AppendInt(b, e.Seq, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Time.UnixNano(), 10)
	b = append(b, ' ')
	b = append(b, e.Hash...)
	b = append(b, ' ')
	b = appendJSONString(b, e.Kind)
	if len(e.Body) > 0 {
		b = append(b, ' ')
		b = append(b, e.Body...)
	}
	return append(b, '\n')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// parseEventLines returns the events of a chunk of session id whose first
// event follows prev.
func parseEventLines(id, prev, lines string) ([]*mayfly.SessionEvent, error) {
	var out []*mayfly.SessionEvent
	for len(lines) > 0 {
		line, rest, ok := strings.Cut(lines, "\n")
		if !ok {
			return nil, errors.New("the last line is not terminated")
		}
		lines = rest
		e, err := parseEventLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", len(out)+1, err)
		}
		e.SessionID, e.PrevHash = id, prev
		prev = e.Hash
		out = append(out, e)
	}
	return out, nil
}

func parseEventLine(line string) (*mayfly.SessionEvent, error) {
	var f [3]string
	for i := range f {
		var ok bool
		if f[i], line, ok = strings.Cut(line, " "); !ok {
			return nil, errors.New("too few fields")
		}
	}
	seq, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("sequence number: %w", err)
	}
	at, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("time: %w", err)
	}
	e := &mayfly.SessionEvent{Seq: seq, Time: time.Unix(0, at).UTC(), Hash: f[2]}
	dec := json.NewDecoder(strings.NewReader(line))
	if err := dec.Decode(&e.Kind); err != nil {
		return nil, fmt.Errorf("kind: %w", err)
	}
	switch body := line[dec.InputOffset():]; {
	case body == "":
	case body[0] == ' ' && len(body) > 1:
		e.Body = json.RawMessage(body[1:])
	default:
		return nil, errors.New("no space before the body")
	}
	return e, nil
}

// RewriteSessionEventsForTest replaces the stored events of session id by
// what edit makes of them, each stored as a chunk of its own with the
// hashes it is given, as someone with write access to the file could. It
// exists for tests of tamper detection; the broker never calls it.
func (db *DB) RewriteSessionEventsForTest(ctx context.Context, id string, edit func([]*mayfly.SessionEvent) []*mayfly.SessionEvent) error {
	var evs []*mayfly.SessionEvent
	if err := db.View(ctx, func(tx mayfly.Tx) error {
		var err error
		evs, err = tx.ListSessionEvents(id, 0, 0)
		return err
	}); err != nil {
		return err
	}
	if err := db.ExecForTest(ctx, "DELETE FROM session_event_chunks WHERE session_id = ?", id); err != nil {
		return err
	}
	for _, e := range edit(evs) {
		if err := db.ExecForTest(ctx, "INSERT INTO session_event_chunks (session_id, first_seq, last_seq, prev_hash, events) VALUES (?, ?, ?, ?, ?)",
			id, e.Seq, e.Seq, e.PrevHash, string(appendEventLine(nil, e))); err != nil {
			return err
		}
	}
	return nil
}
