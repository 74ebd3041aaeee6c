package mayfly

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	body := struct {
		Seq       int64             `json:"seq"`
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
	}{e.Seq, e.Time.UTC().Format(time.RFC3339Nano), e.Actor, e.Action, e.Subject, e.Target,
		e.RequestID, e.LeaseID, e.Reason, e.Source, e.Data}
	b, _ := json.Marshal(body) // cannot fail: strings and a string map
	h := sha256.New()
	h.Write([]byte(e.PrevHash))
	h.Write([]byte{'\n'})
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}
