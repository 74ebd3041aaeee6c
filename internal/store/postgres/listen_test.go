package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
)

// TestListenAudit: a listener on one handle hears, with the sequence
// number of its newest event, each transaction that appended audit events
// through another handle (as another replica would) when it commits, and
// only then: not a rolled-back one, not one without audit events. When
// its connection is killed it reconnects, says so with 0, and hears the
// next commit.
func TestListenAudit(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan int64, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.ListenAudit(ctx, func(seq int64) { got <- seq }, nil)
	}()
	next := func() int64 {
		t.Helper()
		select {
		case s := <-got:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no notification within 10s")
			return -1
		}
	}
	if s := next(); s != 0 {
		t.Fatalf("first call %d, want 0 (listening)", s)
	}
	appendN := func(n int, fail bool) []*mayfly.AuditEvent {
		t.Helper()
		var es []*mayfly.AuditEvent
		err := b.Update(ctx, func(tx mayfly.Tx) error {
			for range n {
				e := &mayfly.AuditEvent{Time: time.Now(), Action: "test.event"}
				es = append(es, e)
				if err := tx.AppendAudit(e); err != nil {
					return err
				}
			}
			if fail {
				return errors.New("roll back")
			}
			return nil
		})
		if err != nil && !fail {
			t.Fatal(err)
		}
		return es
	}
	appendN(1, true) // rolled back: no notification
	if err := b.Update(ctx, func(tx mayfly.Tx) error { return tx.CreateLease(&mayfly.Lease{ID: "l1", State: mayfly.LeaseActive}) }); err != nil {
		t.Fatal(err)
	}
	es := appendN(3, false)
	if s := next(); s != es[2].Seq || s != 3 {
		t.Fatalf("notified %d, want %d (the newest of the 3 events committed)", s, es[2].Seq)
	}
	// Events written before the commit (read back in the transaction).
	var e4 *mayfly.AuditEvent
	if err := b.Update(ctx, func(tx mayfly.Tx) error {
		e4 = &mayfly.AuditEvent{Time: time.Now(), Action: "test.event"}
		if err := tx.AppendAudit(e4); err != nil {
			return err
		}
		_, err := tx.ListAudit(mayfly.AuditFilter{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if s := next(); s != e4.Seq {
		t.Fatalf("notified %d, want %d", s, e4.Seq)
	}

	// Kill the listener's connection: it comes back.
	var killed bool
	err := b.pool.QueryRow(ctx, `SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN `+AuditChannel+`' AND pid <> pg_backend_pid()`).Scan(&killed)
	if err != nil || !killed {
		t.Fatalf("terminating the listener's connection: %v (killed %v)", err, killed)
	}
	if s := next(); s != 0 {
		t.Fatalf("after the connection was killed: %d, want 0 (listening again)", s)
	}
	es = appendN(1, false)
	if s := next(); s != es[0].Seq {
		t.Fatalf("after reconnecting: notified %d, want %d", s, es[0].Seq)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ListenAudit did not return when its context ended")
	}
	select {
	case s := <-got:
		t.Fatalf("unexpected notification %d", s)
	default:
	}
}
