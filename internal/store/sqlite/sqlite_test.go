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
