package broker

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func TestPruneAuditKeepsLiveLeasesAndChain(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := New(&Config{}, Options{Store: st, Clock: clk})
	add := func(e *mayfly.AuditEvent) {
		t.Helper()
		e.Time = clk.Now()
		if err := st.Update(ctx, func(tx mayfly.Tx) error { return tx.AppendAudit(e) }); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ { // old events of an ended lease: seq 1..10
		add(&mayfly.AuditEvent{Actor: "a", Action: "x", Subject: "lease:lse_old", LeaseID: "lse_old"})
	}
	clk.t = clk.t.Add(24 * time.Hour)
	live := &mayfly.Lease{ID: "lse_live", RequestID: "req_live", State: mayfly.LeaseActive, CreatedAt: clk.Now(), ExpiresAt: clk.Now().Add(100 * 24 * time.Hour), DueAt: clk.Now()}
	if err := st.Update(ctx, func(tx mayfly.Tx) error { return tx.CreateLease(live) }); err != nil {
		t.Fatal(err)
	}
	add(&mayfly.AuditEvent{Actor: "a", Action: "request.create", Subject: "request:req_live", RequestID: "req_live"}) // seq 11
	for i := 0; i < 5; i++ {                                                                                          // 12..16
		add(&mayfly.AuditEvent{Actor: "a", Action: "y", Subject: "lease:lse_x", LeaseID: "lse_x"})
	}
	clk.t = clk.t.Add(60 * 24 * time.Hour)
	add(&mayfly.AuditEvent{Actor: "a", Action: "z", Subject: "lease:lse_live", LeaseID: "lse_live"}) // seq 17

	if _, err := b.PruneAudit(ctx, Caller{User: "bob"}, 30*24*time.Hour, t.TempDir()); mayfly.ErrorCode(err) != mayfly.EFORBIDDEN {
		t.Errorf("non-admin prune = %v; want forbidden", err)
	}
	if _, err := b.PruneAudit(ctx, System, time.Hour, t.TempDir()); mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("1h retention = %v; want invalid", err)
	}
	res, err := b.PruneAudit(ctx, System, 30*24*time.Hour, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Everything before the live lease's request event goes; it stays.
	if res.Removed != 10 || res.FirstKept != 11 || res.Archive == "" {
		t.Errorf("prune = %+v; want 10 removed, first kept 11", res)
	}
	v, err := audit.Verify(ctx, st, 0, 0)
	if err != nil || !v.OK || v.First != 11 {
		t.Errorf("verify after prune = %+v, %v; want intact from 11", v, err)
	}
	// A second pass with the lease still live removes nothing more.
	res, err = b.PruneAudit(ctx, System, 30*24*time.Hour, t.TempDir())
	if err != nil || res.Removed != 0 {
		t.Errorf("second prune = %+v, %v; want nothing removed", res, err)
	}
}
