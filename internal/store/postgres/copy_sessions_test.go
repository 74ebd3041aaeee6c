package postgres

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// TestCopySessions: the session log moves with a copy, every chain intact
// and its end still anchored in the (copied) audit trail.
func TestCopySessions(t *testing.T) {
	ctx := context.Background()
	src, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var ids []string
	for i, open := range []bool{false, true} {
		r, err := sessionlog.New(src, nil, nil).Start(ctx, &mayfly.Session{Kind: mayfly.SessionPostgres, LeaseID: "lease_1",
			User: "alice", Target: "pg", ClientAddr: "127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		for j := range 3 + i {
			if err := r.Record(ctx, time.Now(), mayfly.SessionEventStatement, mayfly.Statement{Text: "SELECT", Rows: int64(j)}); err != nil {
				t.Fatal(err)
			}
		}
		if open {
			if err := r.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		} else if err := r.End(ctx, "client"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID())
	}
	dst := open(t, pgtest.NewDatabase(t))
	n, err := dst.CopyFrom(ctx, src)
	if err != nil {
		t.Fatalf("CopyFrom: %v", err)
	}
	if n.Sessions != 2 || n.SessionEvents != 5+5 {
		t.Errorf("CopyFrom counts = %+v; want 2 sessions and 10 events", n)
	}
	for i, id := range ids {
		res, err := sessionlog.Verify(ctx, dst, id)
		if err != nil || !res.OK || res.Anchored != (i == 0) {
			t.Errorf("Verify(%s) in the copy = %+v, %v; want ok (anchored when ended)", id, res, err)
		}
	}
}
