package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mayflyhq/mayfly"
)

// CopyCounts is what CopyFrom copied.
type CopyCounts struct {
	Requests    int   `json:"requests"`
	Leases      int   `json:"leases"`
	AuditEvents int   `json:"audit_events"`
	FirstSeq    int64 `json:"first_seq"`
	LastSeq     int64 `json:"last_seq"`
	Users       int   `json:"user_statuses"`
	Settings    int   `json:"settings"`
	Tokens      int   `json:"tokens"`
	// ChatMessages counts the places of the Slack messages of open
	// requests, so that their later decisions update those messages.
	ChatMessages int `json:"chat_messages"`
	// Sessions and SessionEvents count the session log of the gateways.
	Sessions      int `json:"sessions"`
	SessionEvents int `json:"session_events"`
}

// copyPage is how many rows CopyFrom reads from the source at a time.
const copyPage = 1000

// CopyFrom copies every request, lease, audit event, user status, setting
// and token of src, and where the chat messages of open requests are, into db, in one transaction: all of them or nothing.
// Audit events keep their sequence numbers and hashes, so the chain
// verifies as it did, and the head of db's chain becomes src's last
// event. db must be empty (ECONFLICT otherwise). Replica heartbeats,
// leader leases and claims of due leases are not copied: they are
// rebuilt by the servers.
func (db *DB) CopyFrom(ctx context.Context, src mayfly.Store) (CopyCounts, error) {
	var n CopyCounts
	err := db.run(ctx, true, func(mtx mayfly.Tx) error {
		n = CopyCounts{}
		t := mtx.(*tx)
		for _, table := range []string{"requests", "leases", "audit_events", "users", "settings", "tokens"} {
			var some bool
			if _, err := t.queryRow("SELECT EXISTS (SELECT 1 FROM "+table+")", nil, &some); err != nil {
				return fmt.Errorf("check destination: %w", err)
			}
			if some {
				return mayfly.Errorf(mayfly.ECONFLICT, "the destination store is not empty (table %s has rows): copy into a new database", table)
			}
		}
		// Lock the head of the chain: no server may append meanwhile.
		var seq int64
		var hash string
		if _, err := t.queryRow("SELECT seq, hash FROM audit_head FOR UPDATE", nil, &seq, &hash); err != nil {
			return fmt.Errorf("lock the audit chain: %w", err)
		}
		if seq != 0 {
			return mayfly.Errorf(mayfly.ECONFLICT, "the destination store has an audit chain (last event %d): copy into a new database", seq)
		}

		var after mayfly.PageCursor
		for {
			var rs []*mayfly.Request
			var msgs []*mayfly.ChatMessage
			if err := src.View(ctx, func(s mayfly.Tx) (err error) {
				if rs, err = s.ListRequests(mayfly.RequestFilter{After: after, Limit: copyPage}); err != nil {
					return err
				}
				msgs = msgs[:0]
				for _, r := range rs {
					if r.State != mayfly.RequestPending && r.State != mayfly.RequestApproved {
						continue // its message shows its outcome for good
					}
					m, err := s.GetChatMessage(r.ID)
					if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
						continue
					}
					if err != nil {
						return err
					}
					msgs = append(msgs, m)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("read requests: %w", err)
			}
			for _, r := range rs {
				if err := t.CreateRequest(r); err != nil {
					return err
				}
			}
			for _, m := range msgs {
				if err := t.PutChatMessage(m); err != nil {
					return err
				}
			}
			n.ChatMessages += len(msgs)
			n.Requests += len(rs)
			if len(rs) < copyPage {
				break
			}
			last := rs[len(rs)-1]
			after = mayfly.PageCursor{CreatedAt: last.CreatedAt, ID: last.ID}
		}

		after = mayfly.PageCursor{}
		for {
			var ls []*mayfly.Lease
			if err := src.View(ctx, func(s mayfly.Tx) (err error) {
				ls, err = s.ListLeases(mayfly.LeaseFilter{After: after, Limit: copyPage})
				return err
			}); err != nil {
				return fmt.Errorf("read leases: %w", err)
			}
			for _, l := range ls {
				if err := t.CreateLease(l); err != nil {
					return err
				}
			}
			n.Leases += len(ls)
			if len(ls) < copyPage {
				break
			}
			last := ls[len(ls)-1]
			after = mayfly.PageCursor{CreatedAt: last.CreatedAt, ID: last.ID}
		}

		var afterSeq int64
		for {
			var es []*mayfly.AuditEvent
			if err := src.View(ctx, func(s mayfly.Tx) (err error) {
				es, err = s.ListAudit(mayfly.AuditFilter{AfterSeq: afterSeq, Limit: copyPage})
				return err
			}); err != nil {
				return fmt.Errorf("read audit events: %w", err)
			}
			for _, e := range es {
				if err := t.insertAudit(e); err != nil {
					return err
				}
				if n.FirstSeq == 0 {
					n.FirstSeq = e.Seq
				}
				n.LastSeq, hash = e.Seq, e.Hash
			}
			n.AuditEvents += len(es)
			if len(es) < copyPage {
				break
			}
			afterSeq = es[len(es)-1].Seq
		}
		if _, err := t.exec("UPDATE audit_head SET seq = $1, hash = $2", n.LastSeq, hash); err != nil {
			return fmt.Errorf("set the head of the audit chain: %w", err)
		}

		var users, settings map[string]string
		var tokens []*mayfly.Token
		if err := src.View(ctx, func(s mayfly.Tx) (err error) {
			if users, err = s.UserStatuses(); err != nil {
				return err
			}
			if settings, err = s.ListSettings(""); err != nil {
				return err
			}
			tokens, err = s.ListTokens(mayfly.TokenFilter{})
			return err
		}); err != nil {
			return fmt.Errorf("read users, settings and tokens: %w", err)
		}
		for name, st := range users {
			if err := t.SetUserStatus(name, st); err != nil {
				return err
			}
		}
		for k, v := range settings {
			if err := t.PutSetting(k, v); err != nil {
				return err
			}
		}
		for _, tk := range tokens {
			if err := t.CreateToken(tk); err != nil {
				return err
			}
		}
		n.Users, n.Settings, n.Tokens = len(users), len(settings), len(tokens)
		return t.copySessions(ctx, src, &n)
	})
	if err != nil {
		var me *mayfly.Error
		if errors.As(err, &me) {
			return CopyCounts{}, err
		}
		return CopyCounts{}, fmt.Errorf("copy into the postgres store: %w", err)
	}
	return n, nil
}

// insertAudit inserts e as it is, sequence number and hashes included.
func (t *tx) insertAudit(e *mayfly.AuditEvent) error {
	at, err := timeArg("audit time", e.Time)
	if err != nil {
		return err
	}
	data, err := jsonArg(e.Data, e.Data == nil)
	if err != nil {
		return err
	}
	if _, err := t.exec(`INSERT INTO audit_events (`+auditCols+`) VALUES (`+placeholders(1, 13)+`)`,
		e.Seq, at, e.Actor, e.Action, e.Subject, e.Target, e.RequestID, e.LeaseID, e.Reason, e.Source,
		data, e.PrevHash, e.Hash); err != nil {
		return fmt.Errorf("copy audit event %d: %w", e.Seq, err)
	}
	return nil
}

// copySessions copies the session log: each session, then its events
// chained again in order (the chain depends only on their content, so
// every hash comes out as it was), then its end.
func (t *tx) copySessions(ctx context.Context, src mayfly.Store, n *CopyCounts) error {
	var after mayfly.PageCursor
	for {
		var ss []*mayfly.Session
		if err := src.View(ctx, func(s mayfly.Tx) (err error) {
			ss, err = s.ListSessions(mayfly.SessionFilter{After: after, Limit: copyPage})
			return err
		}); err != nil {
			return fmt.Errorf("read sessions: %w", err)
		}
		for _, ses := range ss {
			c := *ses
			c.EndedAt, c.EndReason = time.Time{}, ""
			if err := t.CreateSession(&c); err != nil {
				return err
			}
			for seq := int64(0); ; {
				var evs []*mayfly.SessionEvent
				if err := src.View(ctx, func(s mayfly.Tx) (err error) {
					evs, err = s.ListSessionEvents(ses.ID, seq, copyPage)
					return err
				}); err != nil {
					return fmt.Errorf("read events of session %s: %w", ses.ID, err)
				}
				if len(evs) == 0 {
					break
				}
				want := make([]string, len(evs))
				for i, e := range evs {
					want[i] = e.Hash
				}
				if err := t.AppendSessionEvents(ses.ID, evs); err != nil {
					return err
				}
				for i, e := range evs {
					if e.Hash != want[i] {
						return mayfly.Errorf(mayfly.ECONFLICT, "session %s: event %d does not chain as it did in the source (its log is broken there: run mayfly sessions verify)", ses.ID, e.Seq)
					}
				}
				seq = evs[len(evs)-1].Seq
				n.SessionEvents += len(evs)
			}
			if !ses.EndedAt.IsZero() {
				if err := t.EndSession(ses.ID, ses.EndedAt, ses.EndReason); err != nil {
					return err
				}
			}
			n.Sessions++
		}
		if len(ss) < copyPage {
			return nil
		}
		last := ss[len(ss)-1]
		after = mayfly.PageCursor{CreatedAt: last.StartedAt, ID: last.ID}
	}
}
