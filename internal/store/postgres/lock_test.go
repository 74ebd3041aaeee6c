package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
)

// TestLockAcrossHandles takes a named lock through two handles on one
// database, as two replicas would: the second waits for the first's
// unlock, gives up with its context, and takes the lock over once the
// first holder's connection is gone.
func TestLockAcrossHandles(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	ctx := context.Background()

	unlock, err := a.Lock(ctx, "scim")
	if err != nil {
		t.Fatal(err)
	}
	// Another name is another lock.
	other, err := b.Lock(ctx, "other")
	if err != nil {
		t.Fatalf("lock another name: %v", err)
	}
	other()

	got := make(chan func(), 1)
	go func() {
		u, err := b.Lock(ctx, "scim")
		if err != nil {
			t.Errorf("second Lock: %v", err)
			u = func() {}
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("B took the lock A holds")
	case <-time.After(300 * time.Millisecond):
	}
	unlock()
	select {
	case u := <-got:
		u()
	case <-time.After(5 * time.Second):
		t.Fatal("B did not get the lock within 5 s of A's unlock")
	}

	// A wait cut short by its context returns its error.
	unlock, err = a.Lock(ctx, "scim")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := b.Lock(cctx, "scim"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock past its context's deadline = %v, want the deadline's error", err)
	}

	// A holder whose connection is gone releases the lock.
	var n int
	if err := b.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND classid = $1 AND granted AND pid <> pg_backend_pid()
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, int64(namedLockSpace)).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the holder's connection: %d, %v", n, err)
	}
	cctx2, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	u, err := b.Lock(cctx2, "scim")
	if err != nil {
		t.Fatalf("Lock after the holder's connection ended: %v", err)
	}
	u()
	unlock() // its connection is gone: closed, not reused
}
