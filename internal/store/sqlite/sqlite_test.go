package sqlite

import (
	"context"
	"fmt"
	"github.com/mayflyhq/mayfly/internal/audit"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
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
// the WITHOUT ROWID table of migration 10 (events in it) and finds every
// event, its chain unchanged, in the ordinary table of migration 13.
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
			Body: []byte(fmt.Sprintf(`{"text":"SELECT %d","pad":"%s"}`, i, strings.Repeat("x", 50*i)))})
	}
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
	if err := db.ExecForTest(ctx, `CREATE TABLE old_events (
		session_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT,
		prev_hash TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (session_id, seq)) WITHOUT ROWID;
		INSERT INTO old_events SELECT session_id, seq, at, kind, body, prev_hash, hash FROM session_events;
		DROP TABLE session_events;
		ALTER TABLE old_events RENAME TO session_events;
		DELETE FROM schema_version WHERE version >= 13`); err != nil {
		t.Fatal(err)
	}
	if ddl := eventsDDL(t, db); !strings.Contains(strings.ToUpper(ddl), "WITHOUT ROWID") {
		t.Fatalf("the test did not restore the old table: %s", ddl)
	}
	db.Close()

	db, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen (migration 13): %v", err)
	}
	defer db.Close()
	if err := db.View(ctx, func(tx mayfly.Tx) error {
		got, err := tx.ListSessionEvents("ses_m", 0, 0)
		if err != nil {
			return err
		}
		if len(got) != len(evs) {
			t.Fatalf("after the migration: %d events; want %d", len(got), len(evs))
		}
		for i, e := range got {
			if e.Seq != evs[i].Seq || e.Hash != evs[i].Hash || e.PrevHash != evs[i].PrevHash || string(e.Body) != string(evs[i].Body) || e.ComputeHash() != e.Hash {
				t.Errorf("event %d changed in the migration: %+v", i, e)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if ddl := eventsDDL(t, db); strings.Contains(strings.ToUpper(ddl), "WITHOUT ROWID") {
		t.Errorf("session_events is still WITHOUT ROWID: %s", ddl)
	}
	// New events still chain onto the migrated ones.
	if err := db.Update(ctx, func(tx mayfly.Tx) error {
		return tx.AppendSessionEvents("ses_m", []*mayfly.SessionEvent{{Time: start.Add(time.Hour), Kind: "statement"}})
	}); err != nil {
		t.Fatal(err)
	}
}

func eventsDDL(t *testing.T, db *DB) string {
	t.Helper()
	var ddl string
	if err := db.w.c.QueryRowContext(context.Background(), "SELECT sql FROM sqlite_master WHERE name = 'session_events'").Scan(&ddl); err != nil {
		t.Fatal(err)
	}
	return ddl
}
