package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// The database file and its -wal and -shm files are readable by their
// owner only, whatever the umask and the directory's mode.
func TestFilesAreOwnerOnly(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mayfly.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error { return tx.PutSetting("k", "v") }); err != nil {
		t.Fatal(err)
	}
	if err := db.View(context.Background(), func(tx mayfly.Tx) error { _, err := tx.GetSetting("k"); return err }); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(name), err)
			continue
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s has mode %#o; want 0600", filepath.Base(name), got)
		}
	}
}

// walBound is the size the -wal file must stay under while the store is
// written and read as hard as it can be.
const walBound = 6 * walLimit

// Under a steady load of writers and overlapping readers the -wal file
// stays bounded: the log is checkpointed and restarted even though some
// reader is always in a transaction.
func TestWALBoundedUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("writes about 70 MB")
	}
	ctx := context.Background()
	db := openTemp(t)
	const writers, readers, writes = 4, 4, 6000
	reason := strings.Repeat("r", 4096)
	var maxWAL atomic.Int64
	sample := func() {
		if fi, err := os.Stat(db.path + "-wal"); err == nil {
			if n := fi.Size(); n > maxWAL.Load() {
				maxWAL.Store(n)
			}
		}
	}
	var next atomic.Int64
	stop := make(chan struct{})
	var rw sync.WaitGroup
	for range readers {
		rw.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				db.View(ctx, func(tx mayfly.Tx) error {
					_, err := tx.ListAudit(mayfly.AuditFilter{Newest: true, Limit: 50})
					return err
				})
				sample()
			}
		})
	}
	var ww sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		ww.Go(func() {
			for {
				i := next.Add(1)
				if i > writes {
					return
				}
				if err := db.Update(ctx, func(tx mayfly.Tx) error {
					return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Actor: "u", Action: "load", Subject: fmt.Sprint(i), Reason: reason})
				}); err != nil {
					errs <- err
					return
				}
				sample()
			}
		})
	}
	ww.Wait()
	close(stop)
	rw.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("largest -wal file seen: %d bytes over %d writes of %d bytes", maxWAL.Load(), writes, len(reason))
	if n := maxWAL.Load(); n >= walBound {
		t.Errorf("-wal file reached %d bytes; want under %d", n, walBound)
	}
}

// A reader that stays in its transaction keeps the log from being
// truncated; the checkpointer's attempts must not hold commits off for
// long meanwhile.
func TestLongReaderDoesNotStallCommits(t *testing.T) {
	if testing.Short() {
		t.Skip("writes about 40 MB")
	}
	ctx := context.Background()
	db := openTemp(t)
	reading, release := make(chan struct{}), make(chan struct{})
	viewDone := make(chan error, 1)
	go func() {
		viewDone <- db.View(ctx, func(tx mayfly.Tx) error {
			if _, err := tx.ListAudit(mayfly.AuditFilter{Limit: 1}); err != nil {
				return err
			}
			close(reading)
			<-release
			return nil
		})
	}()
	<-reading
	reason := strings.Repeat("r", 4096)
	var slowest time.Duration
	for i := range 3000 {
		t0 := time.Now()
		if err := db.Update(ctx, func(tx mayfly.Tx) error {
			return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Actor: "u", Action: "load", Subject: fmt.Sprint(i), Reason: reason})
		}); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	close(release)
	if err := <-viewDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("slowest commit: %v", slowest)
	if slowest > 2*time.Second {
		t.Errorf("a commit took %v while a reader held the log", slowest)
	}
}
