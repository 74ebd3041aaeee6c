package sessionlog

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"

	"github.com/mayflyhq/mayfly"
)

// Result is the outcome of verifying a session's log.
type Result struct {
	OK        bool   `json:"ok"`
	SessionID string `json:"session_id"`
	Checked   int64  `json:"checked"`
	// Anchored is set when the session's end was found in the audit
	// trail naming the head of its chain.
	Anchored bool   `json:"anchored"`
	Broken   int64  `json:"broken_seq,omitempty"`
	Problem  string `json:"problem,omitempty"`
}

const pageSize = 5000

// Verify checks the log of session id: its events are numbered from 1
// without a gap, each one's prev_hash is the hash of the one before and
// its hash matches its content; the first records the session as it is
// stored; the session's head is its last event; and an ended session ends
// with its end event, which the audit event session.end names (so events
// removed from the end, or a rewritten chain, are detected against the
// audit trail, which is chained itself).
func Verify(ctx context.Context, store mayfly.Store, id string) (Result, error) {
	res := Result{SessionID: id}
	var s *mayfly.Session
	if err := store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		s, err = tx.GetSession(id)
		return err
	}); err != nil {
		return res, err
	}
	fail := func(seq int64, format string, args ...any) (Result, error) {
		res.Broken, res.Problem = seq, fmt.Sprintf(format, args...)
		return res, nil
	}
	var prev, last *mayfly.SessionEvent
	after := int64(0)
	for {
		var page []*mayfly.SessionEvent
		if err := store.View(ctx, func(tx mayfly.Tx) error {
			var err error
			page, err = tx.ListSessionEvents(id, after, pageSize)
			return err
		}); err != nil {
			return res, fmt.Errorf("verify session %s: %w", id, err)
		}
		for _, e := range page {
			after = e.Seq
			want := int64(1)
			if prev != nil {
				want = prev.Seq + 1
			}
			if e.Seq != want {
				return fail(e.Seq, "event %d follows event %d: events %d to %d are missing", e.Seq, want-1, want, e.Seq-1)
			}
			wantPrev := ""
			if prev != nil {
				wantPrev = prev.Hash
			}
			if e.PrevHash != wantPrev {
				return fail(e.Seq, "event %d: prev_hash does not match the hash of event %d (events removed, reordered or altered)", e.Seq, e.Seq-1)
			}
			if e.ComputeHash() != e.Hash {
				return fail(e.Seq, "event %d: content does not match its hash (altered)", e.Seq)
			}
			if e.Seq == 1 {
				if p := checkStart(s, e); p != "" {
					return fail(1, "%s", p)
				}
			}
			res.Checked++
			prev, last = e, e
		}
		if len(page) < pageSize {
			break
		}
	}
	if last == nil {
		return fail(1, "the session has no events (its start event is missing)")
	}
	if last.Seq != s.Events || last.Hash != s.LastHash {
		return fail(last.Seq, "the session's head (event %d) is not its last event %d (events removed or added)", s.Events, last.Seq)
	}
	if s.EndedAt.IsZero() {
		res.OK = true
		return res, nil
	}
	if last.Kind != mayfly.SessionEventEnd {
		return fail(last.Seq, "the session has ended but its last event %d is a %q, not its end", last.Seq, last.Kind)
	}
	// The audit trail names the head of the ended chain.
	var evs []*mayfly.AuditEvent
	if err := store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		evs, err = tx.ListAudit(mayfly.AuditFilter{LeaseID: s.LeaseID, Action: ActionEnd})
		return err
	}); err != nil {
		return res, fmt.Errorf("verify session %s: %w", id, err)
	}
	for _, a := range evs {
		if a.Data["session_id"] != id {
			continue
		}
		if a.Data["last_hash"] != last.Hash || a.Data["events"] != strconv.FormatInt(last.Seq, 10) {
			return fail(last.Seq, "audit event %d records the session ending at event %s with hash %s; the log ends at event %d with hash %s",
				a.Seq, a.Data["events"], a.Data["last_hash"], last.Seq, last.Hash)
		}
		res.Anchored = true
	}
	res.OK = true
	return res, nil
}

// checkStart compares the first event with the session as stored.
func checkStart(s *mayfly.Session, e *mayfly.SessionEvent) string {
	if e.Kind != mayfly.SessionEventStart {
		return fmt.Sprintf("event 1 is a %q, not the session's start", e.Kind)
	}
	var got startBody
	if err := json.Unmarshal(e.Body, &got); err != nil {
		return fmt.Sprintf("event 1: body: %v", err)
	}
	if want := startOf(s); !reflect.DeepEqual(got, want) {
		return "the session as stored (user, lease, target, client address) differs from its start event (altered)"
	}
	if !e.Time.Equal(s.StartedAt) {
		return "the session's start time differs from its start event (altered)"
	}
	return ""
}
