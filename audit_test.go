package mayfly

import (
	"testing"
	"time"
)

// TestAuditHashUnchanged pins the hash of an audit event: chains written
// by earlier versions must still verify, and the PostgreSQL store, which
// has the database compute ChainHash from HashSuffix, must agree with
// ComputeHash byte for byte.
func TestAuditHashUnchanged(t *testing.T) {
	e := &AuditEvent{Seq: 42, Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600)),
		Actor: "a\"<>", Action: "lease.issued", Subject: "lease:1",
		Data: map[string]string{"z": "1", "a": "é\u0000"}, PrevHash: "abc"}
	// Computed by the encoding before HashSuffix existed.
	if got, want := e.ComputeHash(), "78074e8a1687ce365de0ce431e711c64f829bb4d477c564c8df6418252522add"; got != want {
		t.Errorf("ComputeHash = %s; want %s", got, want)
	}
	if got := ChainHash(e.PrevHash, e.Seq, e.HashSuffix()); got != e.ComputeHash() {
		t.Errorf("ChainHash = %s; ComputeHash %s", got, e.ComputeHash())
	}
	e.Data, e.Seq, e.PrevHash = nil, 1, ""
	if got, want := e.ComputeHash(), "e1659865fc5c30bba9638f01af9c8797c7fe1034ebdc2600544d268aeec60112"; got != want {
		t.Errorf("first event: ComputeHash = %s; want %s", got, want)
	}
	if s := e.HashSuffix(); s[0] != ',' || s[len(s)-1] != '}' {
		t.Errorf("HashSuffix = %q; want ,…}", s)
	}
}
