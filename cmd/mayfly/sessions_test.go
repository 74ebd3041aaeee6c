package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

type sessionShowOut struct {
	ID         string `json:"id"`
	User       string `json:"user"`
	LeaseID    string `json:"lease_id"`
	EndReason  string `json:"end_reason"`
	EventCount int64  `json:"event_count"`
	Statements []struct {
		Seq        int64    `json:"seq"`
		Text       string   `json:"text"`
		Tag        string   `json:"tag"`
		Rows       int64    `json:"rows"`
		Error      string   `json:"error"`
		ParamsHMAC []string `json:"params_hmac"`
	} `json:"statements"`
}

// recordSessions writes sessions into the stopped world's store, as the
// gateways do.
func recordSessions(t *testing.T, w *world, specs ...*mayfly.Session) []string {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(w.dir, "mayfly.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ids []string
	for _, s := range specs {
		r, err := sessionlog.New(db, nil, nil).Start(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range []mayfly.Statement{
			{Text: "SELECT 1", Protocol: "simple", Tag: "SELECT 1", Rows: 1},
			{Text: "SELECT $1::int", Protocol: "extended", Tag: "SELECT 1", Rows: 1, ParamsHMAC: []string{"ab12"}},
			{Text: "SELEC oops", Protocol: "simple", Error: "42601: syntax error at or near \"SELEC\""},
		} {
			if err := r.Record(context.Background(), time.Now(), mayfly.SessionEventStatement, st); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.End(context.Background(), "client"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID())
	}
	return ids
}

// TestSessionsCLI lists, shows and verifies recorded sessions through the
// API, with who may see what, and detects a tampered statement.
func TestSessionsCLI(t *testing.T) {
	w := startWorld(t, worldOpts{})
	w.stop()
	ids := recordSessions(t, w,
		&mayfly.Session{Kind: mayfly.SessionPostgres, LeaseID: "lease_a", User: "alice", Target: "local-pg", Grant: "readonly", ClientAddr: "127.0.0.1:5000"},
		&mayfly.Session{Kind: mayfly.SessionPostgres, LeaseID: "lease_b", User: "bob", Target: "local-pg", Grant: "readonly", ClientAddr: "127.0.0.1:5001"},
		&mayfly.Session{Kind: mayfly.SessionSSH, LeaseID: "lease_a", User: "alice", Target: "web", ClientAddr: "127.0.0.1:5002"})
	w.startInProcess()

	var all []mayfly.Session
	w.ok("carol", &all, "sessions", "-o", "json")
	if len(all) != 3 {
		t.Fatalf("admin sees %d sessions; want 3", len(all))
	}
	var byLease []mayfly.Session
	w.ok("carol", &byLease, "sessions", "--lease", "lease_a", "-o", "json")
	if len(byLease) != 2 || byLease[0].ID != ids[0] || byLease[1].ID != ids[2] {
		t.Fatalf("sessions --lease lease_a = %+v; want %s and %s", byLease, ids[0], ids[2])
	}
	var mine []mayfly.Session
	w.ok("bob", &mine, "sessions", "-o", "json")
	if len(mine) != 1 || mine[0].ID != ids[1] {
		t.Fatalf("bob sees %+v; want only his session %s", mine, ids[1])
	}
	if msg := w.fails("bob", "sessions", "--user", "alice"); !strings.Contains(msg, "only admins") {
		t.Errorf("bob listing alice's sessions: %s; want refused", msg)
	}
	if msg := w.fails("bob", "sessions", "show", ids[0]); !strings.Contains(msg, "not found") {
		t.Errorf("bob showing alice's session: %s; want not found", msg)
	}

	var show sessionShowOut
	w.ok("alice", &show, "sessions", "show", ids[0], "-o", "json")
	if show.ID != ids[0] || show.User != "alice" || show.EndReason != "client" || len(show.Statements) != 3 || show.EventCount != 5 {
		t.Fatalf("sessions show = %+v; want alice's ended session with 3 statements", show)
	}
	if s := show.Statements; s[0].Text != "SELECT 1" || s[0].Tag != "SELECT 1" || s[1].ParamsHMAC[0] != "ab12" || !strings.HasPrefix(s[2].Error, "42601") {
		t.Errorf("statements = %+v", s)
	}
	text := w.ok("alice", nil, "sessions", "show", ids[0], "-o", "text")
	for _, want := range []string{"session " + ids[0], "  events   5\n", "SELECT $1::int [1 parameters, keyed hashes]", "ERROR 42601"} {
		if !strings.Contains(text, want) {
			t.Errorf("sessions show -o text lacks %q:\n%s", want, text)
		}
	}
	if out := w.ok("carol", nil, "sessions"); !strings.Contains(out, ids[1]) {
		t.Errorf("sessions (table) lacks %s:\n%s", ids[1], out)
	}
	if out := w.ok("alice", nil, "sessions", "verify", ids[0]); !strings.Contains(out, "session log intact: 5 events verified") {
		t.Errorf("sessions verify = %q", out)
	}
	// The audit trail links each session's start and end.
	var evs []eventOut
	w.ok("carol", &evs, "audit", "--lease", "lease_a", "-o", "json")
	var starts, ends int
	for _, e := range evs {
		switch {
		case e.Action == "session.start" && e.Subject == "session:"+ids[0]:
			starts++
		case e.Action == "session.end" && e.Subject == "session:"+ids[0]:
			ends++
		}
	}
	if starts != 1 || ends != 1 {
		t.Errorf("audit trail has %d session.start and %d session.end for %s; want 1 each", starts, ends, ids[0])
	}

	tamper(t, filepath.Join(w.dir, "mayfly.db"), `UPDATE session_event_chunks SET events = replace(events, 'SELECT 1', 'SELECT 2') WHERE first_seq <= 2`)
	msg := w.fails("alice", "sessions", "verify", ids[0])
	if !strings.Contains(msg, "broken at event 2") {
		t.Errorf("verify after tampering: %s; want broken at event 2", msg)
	}
	if out, err := w.try("alice", "sessions", "--help"); err != nil || !strings.Contains(out, "Usage: mayfly sessions") {
		t.Errorf("sessions --help = %q, %v", out, err)
	}
}
