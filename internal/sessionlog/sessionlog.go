// Package sessionlog records what users do through Mayfly's gateways
// (PostgreSQL statements, SSH sessions) in the store's session log: one
// chain of events per session, hash-linked like the audit trail, anchored
// in the audit trail by a session.start and a session.end event. Nothing
// recorded is ever dropped: when the store falls behind, Record waits
// (back-pressure) instead.
package sessionlog

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Audit actions anchoring sessions in the audit trail.
const (
	ActionStart = "session.start"
	ActionEnd   = "session.end"
)

// DefaultMaxPending is how many events a session may have recorded and not
// yet written before Record waits.
const DefaultMaxPending = 4096

// Log writes sessions to a store.
type Log struct {
	store  mayfly.Store
	clock  mayfly.Clock
	logger *slog.Logger
	// MaxPending bounds the events of one session not yet written
	// (DefaultMaxPending when 0).
	MaxPending int

	mu       sync.Mutex
	cond     *sync.Cond // signalled when anything queued or written changes
	dirty    []*Recorder
	writerOn bool
}

// New returns a Log on store.
func New(store mayfly.Store, clock mayfly.Clock, logger *slog.Logger) *Log {
	if clock == nil {
		clock = mayfly.SystemClock{}
	}
	if logger == nil {
		logger = slog.Default()
	}
	l := &Log{store: store, clock: clock, logger: logger}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// NewID returns a new session id.
func NewID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return "ses_" + fmt.Sprintf("%x", b)
}

// startBody is the body of a session's first event: what identifies the
// session, so that the chain covers it.
type startBody struct {
	ID         string            `json:"id"`
	Kind       string            `json:"kind"`
	LeaseID    string            `json:"lease_id"`
	RequestID  string            `json:"request_id,omitempty"`
	User       string            `json:"user"`
	Target     string            `json:"target"`
	Grant      string            `json:"grant,omitempty"`
	Account    string            `json:"account,omitempty"`
	ClientAddr string            `json:"client_addr,omitempty"`
	Data       map[string]string `json:"data,omitempty"`
}

func startOf(s *mayfly.Session) startBody {
	data := s.Data
	if len(data) == 0 {
		data = nil
	}
	return startBody{s.ID, s.Kind, s.LeaseID, s.RequestID, s.User, s.Target, s.Grant, s.Account, s.ClientAddr, data}
}

// endBody is the body of a session's last event.
type endBody struct {
	Reason string `json:"reason"`
}

func sourceOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// Start records the start of s (its ID is set when empty, StartedAt when
// zero): the session, its first event and the audit event session.start,
// in one transaction. The Recorder it returns records the rest.
func (l *Log) Start(ctx context.Context, s *mayfly.Session) (*Recorder, error) {
	if s.ID == "" {
		s.ID = NewID()
	}
	if s.StartedAt.IsZero() {
		s.StartedAt = l.clock.Now().UTC()
	}
	body, err := json.Marshal(startOf(s))
	if err != nil {
		return nil, err
	}
	ev := &mayfly.SessionEvent{Time: s.StartedAt, Kind: mayfly.SessionEventStart, Body: body}
	err = l.store.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.CreateSession(s); err != nil {
			return err
		}
		if err := tx.AppendSessionEvents(s.ID, []*mayfly.SessionEvent{ev}); err != nil {
			return err
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: s.StartedAt, Actor: s.User, Action: ActionStart,
			Subject: "session:" + s.ID, Target: s.Target, RequestID: s.RequestID, LeaseID: s.LeaseID,
			Source: sourceOf(s.ClientAddr),
			Data:   map[string]string{"session_id": s.ID, "kind": s.Kind, "client_addr": s.ClientAddr, "account": s.Account}})
	})
	if err != nil {
		return nil, fmt.Errorf("start session: %w", err)
	}
	s.Events, s.LastHash = ev.Seq, ev.Hash
	max := l.MaxPending
	if max <= 0 {
		max = DefaultMaxPending
	}
	return &Recorder{log: l, s: s, max: max}, nil
}

// Recorder records the events of one session. Its methods are safe for
// concurrent use.
type Recorder struct {
	log *Log
	s   *mayfly.Session
	max int

	// Under log.mu:
	pending []*mayfly.SessionEvent
	writing int // events taken by the writer, not yet written
	written int64
	closing bool
	ended   bool
}

// Session returns the session being recorded (read only).
func (r *Recorder) Session() *mayfly.Session { return r.s }

// ID returns the session's id.
func (r *Recorder) ID() string { return r.s.ID }

// wait waits on the log's condition until ok holds or ctx ends; log.mu
// is held.
func (l *Log) wait(ctx context.Context, ok func() bool) error {
	if ok() {
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	for !ok() {
		if err := ctx.Err(); err != nil {
			return err
		}
		l.cond.Wait()
	}
	return nil
}

// Record queues an event of kind with body (encoded as JSON) at t. It
// waits while the session has MaxPending events not yet written, or until
// ctx ends (then the event is not recorded and ctx's error is returned).
func (r *Recorder) Record(ctx context.Context, t time.Time, kind string, body any) error {
	var (
		b   []byte
		err error
	)
	if s, ok := body.(*mayfly.Statement); ok {
		b, err = s.AppendJSON(nil) // the same bytes, without reflection
	} else {
		b, err = json.Marshal(body)
	}
	if err != nil {
		return fmt.Errorf("record %s: %w", kind, err)
	}
	ev := &mayfly.SessionEvent{Time: t.UTC(), Kind: kind, Body: b, Compact: true}
	l := r.log
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.wait(ctx, func() bool { return r.closing || len(r.pending)+r.writing < r.max }); err != nil {
		return err
	}
	if r.closing {
		return mayfly.Errorf(mayfly.ECONFLICT, "session %s has ended", r.s.ID)
	}
	if len(r.pending) == 0 {
		l.dirty = append(l.dirty, r)
	}
	r.pending = append(r.pending, ev)
	l.startWriter()
	l.cond.Broadcast()
	return nil
}

// Flush waits until every event recorded before it is written, or ctx
// ends.
func (r *Recorder) Flush(ctx context.Context) error {
	l := r.log
	l.mu.Lock()
	defer l.mu.Unlock()
	target := r.written + int64(len(r.pending)+r.writing)
	return l.wait(ctx, func() bool { return r.written >= target })
}

// startWriter starts the log's writer when it is not running; log.mu is
// held.
func (l *Log) startWriter() {
	if l.writerOn {
		return
	}
	l.writerOn = true
	go l.write()
}

// linger is how long the writer waits for more events before a write, so
// that busy sessions share transactions: on a busy gateway, one commit
// every few milliseconds instead of one per statement or per millisecond.
// It is also the most a crash of the process can lose of what it
// recorded and had not yet written.
const linger = 10 * time.Millisecond

// write writes the events queued by every session, all that are queued in
// one transaction, until none is queued. A failed write is retried, with
// backoff, with the same events: none is dropped.
func (l *Log) write() {
	backoff := 10 * time.Millisecond
	for {
		l.mu.Lock()
		if len(l.dirty) == 0 {
			l.writerOn = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		time.Sleep(linger)
		l.mu.Lock()
		type batch struct {
			r   *Recorder
			evs []*mayfly.SessionEvent
		}
		var bs []batch
		for _, r := range l.dirty {
			bs = append(bs, batch{r, r.pending})
			r.writing, r.pending = len(r.pending), nil
		}
		l.dirty = nil
		l.mu.Unlock()

		for {
			as := make([]mayfly.SessionAppend, len(bs))
			for i, b := range bs {
				as[i] = mayfly.SessionAppend{ID: b.r.s.ID, Events: b.evs}
			}
			err := l.store.Update(context.Background(), func(tx mayfly.Tx) error {
				return tx.AppendSessionsEvents(as)
			})
			if err == nil {
				break
			}
			l.logger.Error("session log: write failed; retrying", "sessions", len(bs), "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, 5*time.Second)
		}
		backoff = 10 * time.Millisecond
		l.mu.Lock()
		for _, b := range bs {
			last := b.evs[len(b.evs)-1]
			b.r.s.Events, b.r.s.LastHash = last.Seq, last.Hash
			b.r.written += int64(len(b.evs))
			b.r.writing = 0
		}
		l.cond.Broadcast()
		l.mu.Unlock()
	}
}

// End writes what is pending, then the session's last event, its end and
// the audit event session.end (naming the head of its chain) in one
// transaction. Calling it again does nothing.
func (r *Recorder) End(ctx context.Context, reason string) error {
	l := r.log
	l.mu.Lock()
	if r.ended {
		l.mu.Unlock()
		return nil
	}
	r.ended, r.closing = true, true
	l.cond.Broadcast()
	err := l.wait(ctx, func() bool { return len(r.pending) == 0 && r.writing == 0 })
	l.mu.Unlock()
	if err != nil {
		return err
	}
	at := r.log.clock.Now().UTC()
	body, _ := json.Marshal(endBody{Reason: reason})
	ev := &mayfly.SessionEvent{Time: at, Kind: mayfly.SessionEventEnd, Body: body}
	s := r.s
	backoff := 10 * time.Millisecond
	for {
		err := r.log.store.Update(ctx, func(tx mayfly.Tx) error {
			if err := tx.AppendSessionEvents(s.ID, []*mayfly.SessionEvent{ev}); err != nil {
				return err
			}
			if err := tx.EndSession(s.ID, at, reason); err != nil {
				return err
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: at, Actor: s.User, Action: ActionEnd,
				Subject: "session:" + s.ID, Target: s.Target, RequestID: s.RequestID, LeaseID: s.LeaseID,
				Source: sourceOf(s.ClientAddr), Reason: reason,
				Data: map[string]string{"session_id": s.ID, "events": strconv.FormatInt(ev.Seq, 10), "last_hash": ev.Hash}})
		})
		if err == nil {
			break
		}
		if code := mayfly.ErrorCode(err); ctx.Err() != nil || code == mayfly.ENOTFOUND || code == mayfly.ECONFLICT || code == mayfly.EINVALID {
			return fmt.Errorf("end session %s: %w", s.ID, err)
		}
		r.log.logger.Error("session log: end failed; retrying", "session", s.ID, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("end session %s: %w", s.ID, ctx.Err())
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	l.mu.Lock()
	s.Events, s.LastHash, s.EndedAt, s.EndReason = ev.Seq, ev.Hash, at, reason
	l.mu.Unlock()
	return nil
}
