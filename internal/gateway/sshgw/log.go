package sshgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Session event kinds the SSH gateway records, besides "start" and "end".
const (
	EventChannel  = "channel"  // a session channel opened: pty, shell, exec or subsystem
	EventCast     = "cast"     // a chunk of asciicast v2 lines (CastBody)
	EventExit     = "exit"     // a channel's exit status or signal (Exit)
	EventTransfer = "transfer" // a file read or written (Transfer)
	EventRefused  = "refused"  // something the grant does not permit (Refusal)
	EventForward  = "forward"  // a permitted port or agent forwarding (Refusal shape)
)

// Session is one connection through the gateway, as the session log keeps
// it.
type Session struct {
	ID         string
	LeaseID    string
	RequestID  string
	User       string
	Target     string
	Grant      string
	Account    string
	ClientAddr string
	StartedAt  time.Time
	Data       map[string]string
}

// Event is one entry of a session's log; Body is a JSON object.
type Event struct {
	Time time.Time
	Kind string
	Body json.RawMessage
}

// Log is the chained session log the gateway records into. AppendEvents
// returns once the events are durable; the gateway blocks the session
// meanwhile (never dropping), and ends it when the log fails.
type Log interface {
	StartSession(ctx context.Context, s Session) error
	AppendEvents(ctx context.Context, id string, evs []Event) error
	EndSession(ctx context.Context, id string, at time.Time, reason string) error
}

// ChannelInfo is the body of a "channel" event.
type ChannelInfo struct {
	Channel int `json:"channel"`
	// Type is "shell", "exec" or "subsystem".
	Type      string `json:"type"`
	Command   string `json:"command,omitempty"`
	Subsystem string `json:"subsystem,omitempty"`
	Term      string `json:"term,omitempty"`
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	// Env lists the names (never the values) of variables the client sent.
	Env []string `json:"env,omitempty"`
}

// Exit is the body of an "exit" event.
type Exit struct {
	Channel int    `json:"channel"`
	Status  *int   `json:"status,omitempty"`
	Signal  string `json:"signal,omitempty"`
	// BytesIn and BytesOut count what the client sent and received on
	// the channel.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
}

// Refusal is the body of a "refused" or "forward" event.
type Refusal struct {
	Channel *int   `json:"channel,omitempty"`
	What    string `json:"what"`
	Detail  string `json:"detail,omitempty"`
}

// recordQueue is how many events wait for the log before senders block.
const recordQueue = 256

// recorder appends a connection's events to the log in order, in batches,
// from one goroutine. add blocks when the queue is full: a slow log slows
// the session, it never loses events. When the log fails, fail is called
// once and add reports the error.
type recorder struct {
	log  Log
	id   string
	q    chan Event
	done chan struct{}
	fail func(error)

	mu     sync.Mutex
	err    error
	failed chan struct{}
	// qmu is held to send on q (read) and to close it (write).
	qmu    sync.RWMutex
	closed bool
}

func newRecorder(log Log, id string, fail func(error)) *recorder {
	r := &recorder{log: log, id: id, q: make(chan Event, recordQueue), done: make(chan struct{}), fail: fail, failed: make(chan struct{})}
	go r.run()
	return r
}

// add records an event with body v at time at.
func (r *recorder) add(at time.Time, kind string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("record %s: %w", kind, err)
	}
	r.qmu.RLock()
	defer r.qmu.RUnlock()
	if r.closed {
		return errors.New("recording closed")
	}
	select {
	case r.q <- Event{Time: at, Kind: kind, Body: b}:
		return nil
	case <-r.failed:
		return r.error()
	}
}

func (r *recorder) error() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *recorder) run() {
	defer close(r.done)
	for ev := range r.q {
		batch := []Event{ev}
	drain:
		for len(batch) < 64 {
			select {
			case e, ok := <-r.q:
				if !ok {
					break drain
				}
				batch = append(batch, e)
			default:
				break drain
			}
		}
		if err := r.appendRetry(batch); err != nil {
			r.mu.Lock()
			r.err = fmt.Errorf("session log: %w", err)
			r.mu.Unlock()
			close(r.failed)
			r.fail(err)
			// Keep receiving so senders never block on a dead log.
			for range r.q {
			}
			return
		}
	}
}

func (r *recorder) appendRetry(batch []Event) error {
	var err error
	for i := range 4 {
		if i > 0 {
			time.Sleep(time.Duration(50<<i) * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = r.log.AppendEvents(ctx, r.id, batch)
		cancel()
		if err == nil {
			return nil
		}
	}
	return err
}

// close waits until every event added is in the log.
func (r *recorder) close() error {
	r.qmu.Lock()
	if !r.closed {
		r.closed = true
		close(r.q)
	}
	r.qmu.Unlock()
	<-r.done
	return r.error()
}
