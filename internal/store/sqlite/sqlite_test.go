package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/store/storetest"
)

func openTemp(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "mayfly.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) mayfly.Store { return openTemp(t) })
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "odd ?name%20#.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := db.Update(ctx, func(tx mayfly.Tx) error { return tx.PutSetting("k", "v") }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := db.View(ctx, func(mayfly.Tx) error { return nil }); err == nil {
		t.Errorf("View after Close succeeded")
	}
	if err := db.Update(ctx, func(mayfly.Tx) error { return nil }); err == nil {
		t.Errorf("Update after Close succeeded")
	}

	db, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	if err := db.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	var got string
	if err := db.View(ctx, func(tx mayfly.Tx) error {
		var err error
		got, err = tx.GetSetting("k")
		return err
	}); err != nil || got != "v" {
		t.Errorf("GetSetting after reopen = %q, %v; want v", got, err)
	}
	var n int
	if err := db.w.c.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_version").Scan(&n); err != nil || n != schemaVersion() {
		t.Errorf("schema_version rows = %d, %v; want %d", n, err, schemaVersion())
	}
}

func TestNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mayfly.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ExecForTest(ctx, "INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", schemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err := Open(ctx, path); err == nil {
		db.Close()
		t.Fatalf("Open of a database with a newer schema succeeded")
	}
}

// TestOpenExisting: opening a store for a diagnosis run changes nothing: no
// file is created where there is none (ENOTFOUND), no schema of another
// version migrated (EINVALID, saying which way); this build's opens.
func TestOpenExisting(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mayfly.db")
	if _, err := OpenExisting(ctx, path); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Fatalf("OpenExisting of no file = %v; want ENOTFOUND", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenExisting created %s (stat: %v)", path, err)
	}
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	got, err := OpenExisting(ctx, path)
	if err != nil {
		t.Fatalf("OpenExisting of this build's schema: %v", err)
	}
	if err := got.View(ctx, func(tx mayfly.Tx) error { _, err := tx.ListSettings(""); return err }); err != nil {
		t.Errorf("a read through OpenExisting's store: %v", err)
	}
	got.Close()
	if db, err = Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	if err := db.ExecForTest(ctx, "DELETE FROM schema_version WHERE version = ?", schemaVersion()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for range 2 { // the first did not migrate it
		if _, err := OpenExisting(ctx, path); mayfly.ErrorCode(err) != mayfly.EINVALID || !strings.Contains(mayfly.ErrorMessage(err), "older") || !errors.Is(err, ErrOlderSchema) {
			t.Errorf("OpenExisting of an older schema = %v; want EINVALID saying it is older", err)
		}
	}
}

func TestOpenEmptyPath(t *testing.T) {
	_, err := Open(context.Background(), "")
	if got := mayfly.ErrorCode(err); got != mayfly.EINVALID {
		t.Errorf("Open(\"\") error code %q; want %q", got, mayfly.EINVALID)
	}
}

// TestQueryPlans checks that the scheduler's and other frequent queries
// read an index range rather than the whole table.
func TestQueryPlans(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	tests := []struct {
		query string
		want  string
	}{
		{"SELECT id FROM leases WHERE state = 'active' AND due_at <= 5 ORDER BY due_at, id LIMIT 500", "USING INDEX leases_state_due (state=? AND due_at<?)"},
		// The same, read on from a cursor: the range starts at the cursor.
		{"SELECT id FROM leases WHERE state = 'active' AND due_at <= 5 AND due_at >= 3 AND (due_at > 3 OR id > 'x') ORDER BY due_at, id LIMIT 500", "USING INDEX leases_state_due (state=? AND due_at>? AND due_at<?)"},
		{"SELECT due_at FROM leases WHERE state = 'active' AND due_at IS NOT NULL ORDER BY due_at LIMIT 1", "USING COVERING INDEX leases_state_due (state=? AND due_at>?)"},
		{countLeasesQuery, "SCAN lease_counts"},
		{"SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1", "SCAN audit_events"},
		{"SELECT seq FROM audit_events WHERE lease_id = 'x' AND lease_id <> '' ORDER BY seq", "INDEX audit_lease (lease_id=?)"},
		// The lapser, offboarding and the approvers' pending list read the
		// open requests only.
		{"SELECT id FROM requests WHERE (state = 'pending' OR (state = 'approved' AND lease_id = '')) ORDER BY created_at, id", "SCAN requests USING INDEX requests_open"},
		{"SELECT id FROM requests WHERE state IN ('pending') AND (state = 'pending' OR (state = 'approved' AND lease_id = '')) ORDER BY created_at, id", "requests_open"},
		// The reconciler reads a target's live leases through the state index.
		{"SELECT id FROM leases WHERE target = 'pg' AND state IN ('provisioning', 'active', 'revoking') ORDER BY created_at, id", "USING INDEX leases_state_due (state=?)"},
	}
	for _, tt := range tests {
		rows, err := db.w.c.QueryContext(ctx, "EXPLAIN QUERY PLAN "+tt.query)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		got := strings.Join(plan, "; ")
		t.Logf("%s: %s", tt.query, got)
		if !strings.Contains(got, tt.want) {
			t.Errorf("plan of %q = %q; want it to contain %q", tt.query, got, tt.want)
		}
	}
}

func TestTamperDetected(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	for i := range 5 {
		if err := db.Update(ctx, func(tx mayfly.Tx) error {
			return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Actor: "alice", Action: fmt.Sprint("a", i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := audit.Verify(ctx, db, 0, 0)
	if err != nil || !res.OK || res.Checked != 5 {
		t.Fatalf("Verify before tampering = %+v, %v; want ok, 5 checked", res, err)
	}
	if err := db.ExecForTest(ctx, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3"); err != nil {
		t.Fatal(err)
	}
	res, err = audit.Verify(ctx, db, 0, 0)
	if err != nil || res.OK || res.Broken != 3 {
		t.Errorf("Verify after tampering = %+v, %v; want broken at 3", res, err)
	}
}

// TestSessionEventsMigration upgrades a database whose session_events is
// the WITHOUT ROWID table of migration 10 (events in it, one per row, a
// kind and bodies that need escaping among them) through migrations 13
// and 14, and finds every event, its chain unchanged, in the chunks of
// migration 14; new events chain onto them.
func TestSessionEventsMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mayfly.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var evs []*mayfly.SessionEvent
	for i := range 100 {
		evs = append(evs, &mayfly.SessionEvent{Time: start.Add(time.Duration(i) * time.Second), Kind: "statement",
			Body: []byte(fmt.Sprintf(`{"text":"SELECT %d \n 'é' <&>","pad":"%s"}`, i, strings.Repeat("x", 50*i)))})
	}
	evs[3].Kind, evs[4].Body = "odd \"kind\" é\t", nil
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.CreateSession(&mayfly.Session{ID: "ses_m", Kind: mayfly.SessionPostgres, LeaseID: "l1", User: "alice", Target: "pg", StartedAt: start}); err != nil {
			return err
		}
		return tx.AppendSessionEvents("ses_m", evs)
	}); err != nil {
		t.Fatal(err)
	}
	// Back to the table of migration 10, as a database written before
	// migration 13 has it.
	if err := db.ExecForTest(ctx, `CREATE TABLE session_events (
		session_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT,
		prev_hash TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (session_id, seq)) WITHOUT ROWID;
		DROP TABLE session_event_chunks;
		DELETE FROM schema_version WHERE version >= 13`); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		var body any
		if e.Body != nil {
			body = string(e.Body)
		}
		if err := db.ExecForTest(ctx, `INSERT INTO session_events VALUES (?, ?, ?, ?, ?, ?, ?)`,
			e.SessionID, e.Seq, e.Time.UnixNano(), e.Kind, body, e.PrevHash, e.Hash); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	db, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen (migrations 13 and 14): %v", err)
	}
	defer db.Close()
	check := func(after int64, limit int) {
		t.Helper()
		if err := db.View(ctx, func(tx mayfly.Tx) error {
			got, err := tx.ListSessionEvents("ses_m", after, limit)
			if err != nil {
				return err
			}
			want := evs[after:]
			if limit > 0 {
				want = want[:limit]
			}
			if len(got) != len(want) {
				t.Fatalf("after the migration, events after %d (limit %d): %d; want %d", after, limit, len(got), len(want))
			}
			for i, e := range got {
				w := want[i]
				if e.SessionID != w.SessionID || e.Seq != w.Seq || !e.Time.Equal(w.Time) || e.Kind != w.Kind || e.Hash != w.Hash ||
					e.PrevHash != w.PrevHash || string(e.Body) != string(w.Body) || e.ComputeHash() != e.Hash {
					t.Errorf("event %d changed in the migration: %+v; want %+v", e.Seq, e, w)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	check(0, 0)
	check(41, 7)
	// New events chain onto the migrated ones, in a chunk of several.
	more := []*mayfly.SessionEvent{{Time: start.Add(time.Hour), Kind: "statement"}, {Time: start.Add(time.Hour), Kind: "x", Body: []byte(`{}`)}}
	if err := db.Update(ctx, func(tx mayfly.Tx) error { return tx.AppendSessionEvents("ses_m", more) }); err != nil {
		t.Fatal(err)
	}
	evs = append(evs, more...)
	check(0, 0)
	check(99, 0)
}

// TestEventLines: events written in chunks read back as they were, from
// any point, however the chunks fall; a damaged line is an error, not a
// silently different event.
func TestEventLines(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "mayfly.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		return tx.CreateSession(&mayfly.Session{ID: "ses_c", Kind: mayfly.SessionSSH, LeaseID: "l1", User: "alice", Target: "h", StartedAt: start})
	}); err != nil {
		t.Fatal(err)
	}
	var all []*mayfly.SessionEvent
	// Batches of 1, 5 and 40 events, some over chunkBytes in all.
	for _, n := range []int{1, 5, 40, 1, 3} {
		var evs []*mayfly.SessionEvent
		for range n {
			i := len(all) + len(evs)
			evs = append(evs, &mayfly.SessionEvent{Time: start.Add(time.Duration(i) * time.Millisecond), Kind: "cast",
				Body: []byte(fmt.Sprintf(`{"i":%d,"data":"%s"}`, i, strings.Repeat("y", i*300)))})
		}
		if err := db.Update(ctx, func(tx mayfly.Tx) error { return tx.AppendSessionEvents("ses_c", evs) }); err != nil {
			t.Fatal(err)
		}
		all = append(all, evs...)
	}
	var chunks int
	if err := db.w.c.QueryRowContext(ctx, "SELECT count(*) FROM session_event_chunks WHERE session_id = 'ses_c'").Scan(&chunks); err != nil {
		t.Fatal(err)
	}
	if chunks < 6 || chunks >= len(all) {
		t.Errorf("%d chunks for %d events in 5 appends; want more than 5 (the large batch split) and fewer than one per event", chunks, len(all))
	}
	for _, after := range []int64{0, 1, 6, 20, 45, 49, 50} {
		if err := db.View(ctx, func(tx mayfly.Tx) error {
			got, err := tx.ListSessionEvents("ses_c", after, 0)
			if err != nil {
				return err
			}
			if len(got) != len(all)-int(after) {
				t.Fatalf("after %d: %d events; want %d", after, len(got), len(all)-int(after))
			}
			for i, e := range got {
				w := all[int(after)+i]
				if e.Seq != w.Seq || e.PrevHash != w.PrevHash || e.Hash != w.Hash || !e.Time.Equal(w.Time) || string(e.Body) != string(w.Body) || e.ComputeHash() != e.Hash {
					t.Fatalf("after %d: event %d differs", after, e.Seq)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Unterminated, no body space, bad number, bare kind, no space
	// before the body, too few fields.
	for _, bad := range []string{"1 2 h \"k\" {}", "x 2 h \"k\"\n", "1 2 h k\n", "1 2 h \"k\"{}\n", "1 2\n", "1 2 h \"k\" \n"} {
		if evs, err := parseEventLines("s", "", bad); err == nil {
			t.Errorf("%q parsed: %+v", bad, evs[0])
		}
	}
}

// FuzzEventLine: any event's line reads back as the same event.
func FuzzEventLine(f *testing.F) {
	f.Add(int64(1), int64(5), "statement", `{"a":"b\n"}`)
	f.Add(int64(-1), int64(0), "k \" \\ \u2028", ``)
	f.Fuzz(func(t *testing.T, seq, at int64, kind, body string) {
		b, err := mayfly.CompactBody([]byte(body))
		if err != nil {
			return
		}
		e := &mayfly.SessionEvent{Seq: seq, Time: time.Unix(0, at).UTC(), Kind: strings.ToValidUTF8(kind, "?"), Body: b, Hash: "abc"}
		got, err := parseEventLines("s", "p", string(appendEventLine(nil, e)))
		if err != nil {
			t.Fatalf("%+v: %v", e, err)
		}
		g := got[0]
		if len(got) != 1 || g.Seq != e.Seq || !g.Time.Equal(e.Time) || g.Kind != e.Kind || string(g.Body) != string(e.Body) || g.Hash != e.Hash || g.PrevHash != "p" {
			t.Fatalf("%+v read back as %+v", e, g)
		}
	})
}
