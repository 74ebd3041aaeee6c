package mayfly

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
)

// AuditEvent is one step in the tamper-evident trail: who did what to which
// subject, when and why, chained to the previous event by hash.
type AuditEvent struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	// Subject is "request:ID", "lease:ID", "target:NAME" or "user:NAME".
	Subject   string `json:"subject"`
	Target    string `json:"target,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	LeaseID   string `json:"lease_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Source is the remote address of the API call, when there was one.
	Source string `json:"source,omitempty"`
	// Data holds further details; never a secret.
	Data     map[string]string `json:"data,omitempty"`
	PrevHash string            `json:"prev_hash"`
	Hash     string            `json:"hash"`
}

// ComputeHash returns the hash of e chained to e.PrevHash: SHA-256 over the
// previous hash and a canonical JSON encoding of every other field.
func (e *AuditEvent) ComputeHash() string {
	return ChainHash(e.PrevHash, e.Seq, e.HashSuffix())
}

// HashSuffix returns what follows the sequence number in the canonical
// JSON encoding of e that its hash covers: the encoding is
// `{"seq":` + decimal Seq + HashSuffix(). It does not depend on Seq or
// PrevHash, so a store may chain an event to a head it has not read (the
// PostgreSQL store has the database compute ChainHash).
func (e *AuditEvent) HashSuffix() string {
	body := struct {
		Time      string            `json:"time"`
		Actor     string            `json:"actor"`
		Action    string            `json:"action"`
		Subject   string            `json:"subject"`
		Target    string            `json:"target"`
		RequestID string            `json:"request_id"`
		LeaseID   string            `json:"lease_id"`
		Reason    string            `json:"reason"`
		Source    string            `json:"source"`
		Data      map[string]string `json:"data"` // encoding/json sorts map keys
	}{e.Time.UTC().Format(time.RFC3339Nano), e.Actor, e.Action, e.Subject, e.Target,
		e.RequestID, e.LeaseID, e.Reason, e.Source, e.Data}
	b, _ := json.Marshal(body) // cannot fail: strings and a string map
	b[0] = ','                 // {"time":… becomes ,"time":…
	return string(b)
}

// ChainHash is the hash of the event seq whose HashSuffix is suffix,
// chained to prevHash: hex SHA-256 of prevHash, a newline, and
// `{"seq":` + decimal seq + suffix.
func ChainHash(prevHash string, seq int64, suffix string) string {
	h := sha256.New()
	h.Write([]byte(prevHash))
	h.Write([]byte("\n{\"seq\":"))
	h.Write(strconv.AppendInt(nil, seq, 10))
	h.Write([]byte(suffix))
	return hex.EncodeToString(h.Sum(nil))
}
