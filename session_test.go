package mayfly

import (
	"encoding/json"
	"testing"
	"time"
)

// TestHashCompactMatchesComputeHash checks that the hash appends compute
// (hashCompact) is the one verification recomputes (ComputeHash), for
// bodies with and without characters encoding/json escapes.
func TestHashCompactMatchesComputeHash(t *testing.T) {
	for _, body := range []string{
		``, `null`, `{}`, `{"a":1}`, `{"cast":"[0.5,\"o\",\"\\u0000\\u001b[1m\"]"}`,
		`{"text":"SELECT 1 WHERE a < b && c > d"}`, "{\"t\":\"line\u2028sep\u2029para é ☃\"}",
		`{"x":[1,2.5e3,true,false,null,"<script>"]}`, `"just a string"`, `42`,
	} {
		e := &SessionEvent{SessionID: "ses_<1>", Seq: 7, Time: time.Date(2026, 12, 2, 4, 5, 6, 789, time.UTC), Kind: "o&i", Body: json.RawMessage(body), PrevHash: "abc"}
		if got, want := e.hashCompact(), e.ComputeHash(); got != want {
			t.Errorf("body %q: hashCompact %s; ComputeHash %s", body, got, want)
		}
	}
}

// FuzzHashCompact: for any body CompactBody accepts, the two hashes agree.
func FuzzHashCompact(f *testing.F) {
	for _, s := range []string{`{"a":"<b>"}`, "{\"a\":\"\u2028\"}", ` [ 1 , "x" ] `, `{"a":"\u00e2"}`, `"\u00e2\u0080\u00a8"`} {
		f.Add(s, "sess", "k", int64(1))
	}
	f.Add(`{}`, "a\"b<\u2028", "k\x00\x7f", int64(-1))
	f.Fuzz(func(t *testing.T, body, id, kind string, seq int64) {
		b, err := CompactBody([]byte(body))
		if err != nil {
			return
		}
		e := &SessionEvent{SessionID: id, Seq: seq, Time: time.Unix(1_700_000_000, 5).UTC(), Kind: kind, Body: b, PrevHash: "p"}
		if got, want := e.hashCompact(), e.ComputeHash(); got != want {
			t.Fatalf("body %q (compact %q): hashCompact %s; ComputeHash %s", body, b, got, want)
		}
	})
}

// BenchmarkSessionEventHash: the hash of a terminal's output event (1 MiB
// of NULs as asciicast: 6 MiB of JSON), as appends compute it and as
// encoding/json would.
//
//	go test -run '^$' -bench SessionEventHash .
func BenchmarkSessionEventHash(b *testing.B) {
	cast, _ := json.Marshal(string(make([]byte, 1<<20)))
	body, _ := json.Marshal(map[string]string{"cast": string(cast)})
	e := &SessionEvent{SessionID: "ses_x", Seq: 1, Time: time.Now(), Kind: "cast", Body: body}
	b.Run("hashCompact", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			e.hashCompact()
		}
	})
	b.Run("ComputeHash", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			e.ComputeHash()
		}
	})
}
