package sqlite

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// planOf returns the query plan SQLite picks for q, one step a line.
func planOf(t *testing.T, db *DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.w.c.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatalf("explain %s: %v", q, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}

// TestCountLeasesReadsCounts checks that the query behind /metrics' lease
// gauges reads the counts kept by triggers, not the leases table, whose
// size grows with every lease ever issued.
func TestCountLeasesReadsCounts(t *testing.T) {
	db := openTemp(t)
	got := planOf(t, db, countLeasesQuery)
	if strings.Contains(got, "leases ") || strings.Contains(got, "leases_") || !strings.Contains(got, "lease_counts") {
		t.Errorf("plan of CountLeases = %q; want it to read lease_counts only", got)
	}
}

// TestLeaseCountsFollowChanges checks the counts the triggers keep against
// a count of the rows, through creation, state changes and deletion, and
// that the migration counts the leases that existed before it.
func TestLeaseCountsFollowChanges(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	check := func(what string) {
		t.Helper()
		var want map[mayfly.LeaseState]int
		rows, err := db.w.c.QueryContext(ctx, "SELECT state, COUNT(*) FROM leases GROUP BY state")
		if err != nil {
			t.Fatal(err)
		}
		want = map[mayfly.LeaseState]int{}
		for rows.Next() {
			var s string
			var n int
			if err := rows.Scan(&s, &n); err != nil {
				t.Fatal(err)
			}
			want[mayfly.LeaseState(s)] = n
		}
		rows.Close()
		var got map[mayfly.LeaseState]int
		if err := db.View(ctx, func(tx mayfly.Tx) error {
			var err error
			got, err = tx.CountLeases()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: CountLeases() = %v; want %v", what, got, want)
		}
	}
	err := db.Update(ctx, func(tx mayfly.Tx) error {
		for i := range 30 {
			l := &mayfly.Lease{ID: fmt.Sprintf("l%02d", i), Target: []string{"pg", "redis"}[i%2], Grant: "ro",
				State: mayfly.LeaseActive, CreatedAt: t0, DueAt: t0}
			if err := tx.CreateLease(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check("after creating 30 active leases")
	err = db.Update(ctx, func(tx mayfly.Tx) error {
		for i := range 20 {
			l, err := tx.GetLease(fmt.Sprintf("l%02d", i))
			if err != nil {
				return err
			}
			l.State = mayfly.LeaseRevoking
			if err := tx.UpdateLease(l); err != nil {
				return err
			}
			if i < 12 {
				l.State = mayfly.LeaseRevoked
				if err := tx.UpdateLease(l); err != nil {
					return err
				}
			}
			// Writing a lease without changing its state changes no count.
			if err := tx.UpdateLease(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check("after revoking")
	// A rolled-back change leaves the counts as they were.
	wantErr := fmt.Errorf("roll back")
	err = db.Update(ctx, func(tx mayfly.Tx) error {
		l, err := tx.GetLease("l29")
		if err != nil {
			return err
		}
		l.State = mayfly.LeaseFailed
		if err := tx.UpdateLease(l); err != nil {
			return err
		}
		return wantErr
	})
	if err != wantErr {
		t.Fatalf("Update = %v; want %v", err, wantErr)
	}
	check("after a rollback")
	if _, err := db.w.c.ExecContext(ctx, "DELETE FROM leases WHERE id IN ('l00', 'l29')"); err != nil {
		t.Fatal(err)
	}
	check("after deleting")
	// Counts rebuilt by the migration's initial count match too.
	if _, err := db.w.c.ExecContext(ctx, `DELETE FROM lease_counts;
		INSERT INTO lease_counts (state, target, grant_name, n)
			SELECT state, target, grant_name, COUNT(*) FROM leases GROUP BY state, target, grant_name`); err != nil {
		t.Fatal(err)
	}
	check("after recounting")
}

// TestListQueryPlans checks that the lists the periodic loops and the API
// pages issue read an index range rather than every row ever written.
func TestListQueryPlans(t *testing.T) {
	db := openTemp(t)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	live := []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking}
	for _, tt := range []struct {
		name string
		q    func() (string, []any, error)
		want string
		// sorted allows a sort of what the index range found; a page
		// must come in index order, so that it stops at its limit.
		sorted bool
	}{
		// CheckIdle and /metrics: the active leases.
		{"idle: active leases", func() (string, []any, error) {
			return leasesQuery(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseActive}})
		}, "leases_state_due (state=?)", true},
		// CheckOverdueRevocations: leases being revoked.
		{"overdue: revoking leases", func() (string, []any, error) {
			return leasesQuery(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseRevoking}})
		}, "leases_state_due (state=?)", true},
		{"live leases", func() (string, []any, error) { return leasesQuery(mayfly.LeaseFilter{States: live}) }, "leases_state_due (state=?)", true},
		// CheckIdle: the requests of those leases, by primary key.
		{"idle: requests by id", func() (string, []any, error) {
			return requestsQuery(mayfly.RequestFilter{IDs: []string{"a", "b"}})
		}, "(id=?)", true},
		// LapseRequests: the open requests.
		{"lapse: open requests", func() (string, []any, error) { return requestsQuery(mayfly.RequestFilter{Open: true}) }, "requests_open", false},
		// API pages start at their cursor in the (created_at, id) index.
		{"requests page", func() (string, []any, error) {
			return requestsQuery(mayfly.RequestFilter{After: mayfly.PageCursor{CreatedAt: at, ID: "x"}, Limit: 101})
		}, "requests_created ((created_at,id)>(?,?))", false},
		{"own requests page", func() (string, []any, error) {
			return requestsQuery(mayfly.RequestFilter{Viewer: "alice", After: mayfly.PageCursor{CreatedAt: at, ID: "x"}, Limit: 101})
		}, "requests_created ((created_at,id)>(?,?))", false},
		{"leases page", func() (string, []any, error) {
			return leasesQuery(mayfly.LeaseFilter{After: mayfly.PageCursor{CreatedAt: at, ID: "x"}, Limit: 101})
		}, "leases_created ((created_at,id)>(?,?))", false},
		{"own leases page", func() (string, []any, error) {
			return leasesQuery(mayfly.LeaseFilter{Requester: "alice", After: mayfly.PageCursor{CreatedAt: at, ID: "x"}, Limit: 101})
		}, "leases_requester (requester=? AND (created_at,id)>(?,?))", false},
		{"audit tail", func() (string, []any, error) { return auditQuery(mayfly.AuditFilter{Newest: true, Limit: 1}) }, "SCAN audit_events", false},
		{"audit page", func() (string, []any, error) { return auditQuery(mayfly.AuditFilter{AfterSeq: 5, Limit: 1001}) }, "audit_events USING INTEGER PRIMARY KEY (rowid>?)", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q, args, err := tt.q()
			if err != nil {
				t.Fatal(err)
			}
			got := planOf(t, db, q, args...)
			if !strings.Contains(got, tt.want) {
				t.Errorf("plan of %s = %q; want it to contain %q", q, got, tt.want)
			}
			if !tt.sorted && strings.Contains(got, "TEMP B-TREE") {
				t.Errorf("plan of %s = %q; want no sort", q, got)
			}
		})
	}
}
