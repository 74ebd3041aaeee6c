package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
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
