package mayfly

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// Session kinds: the gateway a session went through.
const (
	SessionPostgres = "postgres"
	SessionSSH      = "ssh"
)

// Session is one connection a user made through a gateway, under a lease.
// What happened in it is a chain of SessionEvents; the session keeps the
// head of that chain (Events, LastHash), so an event removed from the end
// is detected too.
type Session struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	LeaseID   string `json:"lease_id"`
	RequestID string `json:"request_id,omitempty"`
	User      string `json:"user"`
	Target    string `json:"target"`
	Grant     string `json:"grant,omitempty"`
	// Account is the account on the target the gateway connected as.
	Account string `json:"account,omitempty"`
	// ClientAddr is the address the client connected from.
	ClientAddr string    `json:"client_addr,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	EndedAt    time.Time `json:"ended_at,omitzero"`
	EndReason  string    `json:"end_reason,omitempty"`
	// Data holds kind-specific details (database, application name, SSH
	// command); never a secret.
	Data map[string]string `json:"data,omitempty"`
	// Events is the sequence number of the last event appended, LastHash
	// its hash.
	Events   int64  `json:"events"`
	LastHash string `json:"last_hash,omitempty"`
}

// Session event kinds common to every session kind; a gateway adds its
// own (the PostgreSQL gateway: "statement").
const (
	SessionEventStart     = "start"
	SessionEventStatement = "statement"
	SessionEventEnd       = "end"
)

// SessionEvent is one entry of a session's log, chained to the one before
// it by hash. Body is a JSON object whose fields depend on Kind (for a
// statement, a Statement).
type SessionEvent struct {
	SessionID string          `json:"session_id"`
	Seq       int64           `json:"seq"`
	Time      time.Time       `json:"time"`
	Kind      string          `json:"kind"`
	Body      json.RawMessage `json:"body,omitempty"`
	PrevHash  string          `json:"prev_hash"`
	Hash      string          `json:"hash"`
	// Compact says Body is already compact JSON (encoding/json's output),
	// so appending it need not check and compact it again. Never stored.
	Compact bool `json:"-"`
}

// ComputeHash returns the hash of e chained to e.PrevHash: SHA-256 over
// the previous hash and a canonical JSON encoding of every other field
// (Body as it is stored: compact JSON).
func (e *SessionEvent) ComputeHash() string {
	body := e.Body
	if len(body) == 0 {
		body = json.RawMessage("null")
	}
	v := struct {
		SessionID string          `json:"session_id"`
		Seq       int64           `json:"seq"`
		Time      string          `json:"time"`
		Kind      string          `json:"kind"`
		Body      json.RawMessage `json:"body"`
	}{e.SessionID, e.Seq, e.Time.UTC().Format(time.RFC3339Nano), e.Kind, body}
	b, err := json.Marshal(v)
	if err != nil {
		// Body is not valid JSON: hash its bytes as a string instead, so
		// the hash still covers them (and never matches a valid body's).
		b, _ = json.Marshal(struct {
			V   any    `json:"v"`
			Raw string `json:"raw"`
		}{[]any{e.SessionID, e.Seq, v.Time, e.Kind}, string(e.Body)})
	}
	h := sha256.New()
	h.Write([]byte(e.PrevHash))
	h.Write([]byte{'\n'})
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// hashCompact is ComputeHash for an event whose Body is compact JSON (or
// empty), as CompactBody returns it: the same hash, without encoding/json
// checking and copying a body it has just compacted (a terminal's output
// makes bodies of megabytes). encoding/json would copy the body with <, >,
// &, U+2028 and U+2029 escaped, which is what json.HTMLEscape writes.
func (e *SessionEvent) hashCompact() string {
	str := func(s string) []byte {
		for i := range len(s) {
			if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				b, _ := json.Marshal(s) // a string always encodes
				return b
			}
		}
		return []byte(`"` + s + `"`) // nothing to escape
	}
	h := sha256.New()
	h.Write([]byte(e.PrevHash))
	h.Write([]byte("\n{\"session_id\":"))
	h.Write(str(e.SessionID))
	h.Write([]byte(",\"seq\":" + strconv.FormatInt(e.Seq, 10) + ",\"time\":"))
	h.Write(str(e.Time.UTC().Format(time.RFC3339Nano)))
	h.Write([]byte(",\"kind\":"))
	h.Write(str(e.Kind))
	h.Write([]byte(",\"body\":"))
	switch {
	case len(e.Body) == 0:
		h.Write([]byte("null"))
	case !bytes.ContainsAny(e.Body, "<>&") && bytes.IndexByte(e.Body, 0xe2) < 0:
		h.Write(e.Body) // nothing to escape (0xe2 begins U+2028 and U+2029)
	default:
		var b bytes.Buffer
		b.Grow(len(e.Body))
		json.HTMLEscape(&b, e.Body)
		h.Write(b.Bytes())
	}
	h.Write([]byte("}"))
	return hex.EncodeToString(h.Sum(nil))
}

// CompactBody returns body as compact JSON, the form events are stored and
// hashed in; EINVALID when it is not JSON.
func CompactBody(body []byte) (json.RawMessage, error) {
	if len(body) == 0 {
		return nil, nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, body); err != nil {
		return nil, Errorf(EINVALID, "session event body is not JSON: %v", err)
	}
	return b.Bytes(), nil
}

// Statement is the body of a "statement" session event: one statement a
// client ran through the PostgreSQL gateway.
type Statement struct {
	Text string `json:"text"`
	// Protocol is "simple" or "extended".
	Protocol string    `json:"protocol"`
	Start    time.Time `json:"start"`
	// DurationUS is how long the statement took, in microseconds.
	DurationUS int64 `json:"duration_us"`
	// Tag is the command tag ("SELECT 3", "INSERT 0 1", "COPY 10").
	Tag  string `json:"tag,omitempty"`
	Rows int64  `json:"rows"`
	// Error is the server's error, "SQLSTATE: message".
	Error string `json:"error,omitempty"`
	// Params are the bind parameters: in clear when the grant records
	// them so, otherwise ParamsHMAC (hex HMAC-SHA-256 of each, keyed with
	// the installation key) and never the values.
	Params     []*string `json:"params,omitempty"`
	ParamsHMAC []string  `json:"params_hmac,omitempty"`
}

// SessionFilter selects sessions; zero fields match everything.
type SessionFilter struct {
	IDs     []string
	LeaseID string
	User    string
	Kind    string
	// Open selects the sessions not ended.
	Open  bool
	Limit int
	// After, when not zero, starts the list after this position in the
	// (StartedAt, ID) order.
	After PageCursor
}

// SessionTx is the part of a store transaction that keeps the session log.
// Getters return an *Error with ENOTFOUND when nothing matches.
type SessionTx interface {
	// CreateSession stores s with no events (s.Events and s.LastHash are
	// ignored); ECONFLICT when its id exists.
	CreateSession(s *Session) error
	// GetSession returns the session with id.
	GetSession(id string) (*Session, error)
	// ListSessions returns the sessions matching f in (StartedAt, ID)
	// order.
	ListSessions(f SessionFilter) ([]*Session, error)
	// AppendSessionEvents appends evs, in order, to the chain of session
	// id: each gets SessionID, Seq (the last one's plus one), PrevHash
	// (the last one's hash, "" for the first) and Hash, and its Body is
	// compacted; the session's head moves to the last. ENOTFOUND when
	// there is no such session, ECONFLICT when it has ended.
	AppendSessionEvents(id string, evs []*SessionEvent) error
	// AppendSessionsEvents does what AppendSessionEvents does for each of
	// as, in order, in statements whose number does not grow with the
	// number of sessions (the session log's writer appends to every busy
	// session at once). It fails as the first of them would, and then
	// appends nothing.
	AppendSessionsEvents(as []SessionAppend) error
	// ListSessionEvents returns up to limit (all when 0) events of session
	// id with Seq > afterSeq, in Seq order.
	ListSessionEvents(id string, afterSeq int64, limit int) ([]*SessionEvent, error)
	// EndSession records that session id ended at at, for reason;
	// ENOTFOUND when there is none, ECONFLICT when it has already ended.
	EndSession(id string, at time.Time, reason string) error
}

// SessionAppend is what AppendSessionsEvents appends to one session.
type SessionAppend struct {
	ID     string
	Events []*SessionEvent
}

// SessionHead is the head of a session's chain as a store read it for
// ChainSessionAppends, which moves it.
type SessionHead struct {
	Seq   int64
	Hash  string
	Ended bool
	Moved bool // by ChainSessionAppends
}

// SessionAppendIDs returns the sessions of as, sorted, each once: the
// heads a store reads (and locks, in that order) for ChainSessionAppends.
func SessionAppendIDs(as []SessionAppend) []string {
	ids := make([]string, 0, len(as))
	for _, a := range as {
		ids = append(ids, a.ID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// ChainSessionAppends checks that every session of as is in heads (read
// by the store; ENOTFOUND otherwise) and has not ended (ECONFLICT), then
// chains the events of each append after its session's head
// (ChainSessionEvents), in order, moving the head. Both stores use it
// before they write anything.
func ChainSessionAppends(as []SessionAppend, heads map[string]*SessionHead) error {
	for _, a := range as {
		switch h := heads[a.ID]; {
		case h == nil:
			return Errorf(ENOTFOUND, "session %q not found", a.ID)
		case h.Ended:
			return Errorf(ECONFLICT, "session %q has ended", a.ID)
		}
	}
	for _, a := range as {
		if len(a.Events) == 0 {
			continue
		}
		h := heads[a.ID]
		if err := ChainSessionEvents(a.ID, h.Seq, h.Hash, a.Events); err != nil {
			return err
		}
		last := a.Events[len(a.Events)-1]
		h.Seq, h.Hash, h.Moved = last.Seq, last.Hash, true
	}
	return nil
}

// ChainSessionEvents prepares evs for appending to session id's chain
// whose last event is seq with hash: it sets each event's SessionID, Seq,
// PrevHash and Hash, in order, after compacting its Body. Both stores use
// it, so their chains are the same.
func ChainSessionEvents(id string, seq int64, hash string, evs []*SessionEvent) error {
	for _, e := range evs {
		if e.Kind == "" {
			return Errorf(EINVALID, "session %s: an event needs a kind", id)
		}
		if e.Time.IsZero() {
			return Errorf(EINVALID, "session %s: an event needs a time", id)
		}
		body := e.Body
		if !e.Compact {
			var err error
			if body, err = CompactBody(e.Body); err != nil {
				return err
			}
		}
		seq++
		e.SessionID, e.Seq, e.PrevHash, e.Body = id, seq, hash, body
		e.Hash = e.hashCompact()
		hash = e.Hash
	}
	return nil
}
