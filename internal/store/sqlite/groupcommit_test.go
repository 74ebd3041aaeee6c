package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// Concurrent updates are committed together; one that fails (or panics)
// must roll back only its own writes, and the audit chain stays linear.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "g.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 60
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					errs[i] = fmt.Errorf("panicked: %v", r)
				}
			}()
			errs[i] = db.Update(ctx, func(tx mayfly.Tx) error {
				id := fmt.Sprintf("req_%03d", i)
				if err := tx.CreateRequest(&mayfly.Request{ID: id, Requester: "u", Target: "t", Grant: "g", State: mayfly.RequestPending, CreatedAt: time.Now()}); err != nil {
					return err
				}
				if err := tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Actor: "u", Action: "x", Subject: "request:" + id, RequestID: id}); err != nil {
					return err
				}
				switch i % 5 {
				case 1:
					return errors.New("refused")
				case 2:
					if i%10 == 2 {
						panic("boom")
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	want := 0
	for i, err := range errs {
		fail := i%5 == 1 || i%10 == 2
		if fail != (err != nil) {
			t.Errorf("update %d: err = %v; want failure %v", i, err, fail)
		}
		if !fail {
			want++
		}
	}
	var reqs []*mayfly.Request
	var evs []*mayfly.AuditEvent
	db.View(ctx, func(tx mayfly.Tx) error {
		reqs, _ = tx.ListRequests(mayfly.RequestFilter{})
		evs, _ = tx.ListAudit(mayfly.AuditFilter{})
		return nil
	})
	if len(reqs) != want || len(evs) != want {
		t.Errorf("committed %d requests and %d events; want %d of each", len(reqs), len(evs), want)
	}
	if res, err := audit.Verify(ctx, db, 0, 0); err != nil || !res.OK {
		t.Errorf("audit chain after group commits: %+v, %v", res, err)
	}
}

// The store remembers the last audit event committed, so that an append
// need not read it; what it remembers must follow every way the tail can
// change: a failed update, a batch with a failed member, events deleted
// or rewritten behind its back.
func TestAuditTailRemembered(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "tail.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n atomic.Int64
	appendOne := func(fail bool) (*mayfly.AuditEvent, error) {
		e := &mayfly.AuditEvent{Time: time.Now(), Actor: "u", Action: "x", Subject: fmt.Sprintf("n:%d", n.Add(1))}
		err := db.Update(ctx, func(tx mayfly.Tx) error {
			if err := tx.AppendAudit(e); err != nil {
				return err
			}
			if fail {
				return errors.New("refused")
			}
			return nil
		})
		return e, err
	}
	last := func() *mayfly.AuditEvent {
		var evs []*mayfly.AuditEvent
		db.View(ctx, func(tx mayfly.Tx) error {
			evs, err = tx.ListAudit(mayfly.AuditFilter{})
			return err
		})
		if len(evs) == 0 {
			return nil
		}
		return evs[len(evs)-1]
	}
	check := func(step string, e *mayfly.AuditEvent, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if l := last(); l == nil || l.Seq != e.Seq || l.Hash != e.Hash {
			t.Fatalf("%s: last event %+v; want the one appended, %+v", step, l, e)
		}
		if res, err := audit.Verify(ctx, db, 0, 0); err != nil || !res.OK {
			t.Fatalf("%s: chain %+v, %v", step, res, err)
		}
	}
	e, err := appendOne(false)
	check("first", e, err)
	prev := e
	if _, err := appendOne(true); err == nil {
		t.Fatal("failed update committed")
	}
	e, err = appendOne(false)
	check("after a failed update", e, err)
	if e.Seq != prev.Seq+1 || e.PrevHash != prev.Hash {
		t.Errorf("after a failed update: seq %d prev %q; want %d, %q", e.Seq, e.PrevHash, prev.Seq+1, prev.Hash)
	}

	// A batch whose middle member fails.
	var wg sync.WaitGroup
	for i := range 9 {
		wg.Go(func() { appendOne(i == 4) })
	}
	wg.Wait()
	e, err = appendOne(false)
	check("after a batch with a failure", e, err)

	// The newest event deleted, then one rewritten, behind the store's back:
	// the next append chains to what is really there.
	if err := db.ExecForTest(ctx, "DELETE FROM audit_events WHERE seq = ?", e.Seq); err != nil {
		t.Fatal(err)
	}
	e2, err := appendOne(false)
	check("after the newest was deleted", e2, err)
	if e2.Seq != e.Seq {
		t.Errorf("after the newest was deleted: seq %d; want %d again", e2.Seq, e.Seq)
	}
	// Retention deletes old events; the tail stays.
	if err := db.Update(ctx, func(tx mayfly.Tx) error { _, err := tx.DeleteAuditBefore(e2.Seq); return err }); err != nil {
		t.Fatal(err)
	}
	e3, err := appendOne(false)
	if err != nil || e3.Seq != e2.Seq+1 || e3.PrevHash != e2.Hash {
		t.Errorf("after retention: %+v, %v; want seq %d after %q", e3, err, e2.Seq+1, e2.Hash)
	}
}
