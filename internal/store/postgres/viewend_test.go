package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestViewReturnsBeforeItsCommit checks that a read costs one round trip:
// a View returns once fn has what it read, and its COMMIT, which cannot
// change that, is sent after. Here the database stops answering as soon
// as fn has read (a proxy frozen in between), so the COMMIT gets no
// answer: the View still returns at once, with what it read. When the
// proxy drops its connections, the connection left ending the read is
// closed, not given to the next caller, and the store goes on.
func TestViewReturnsBeforeItsCommit(t *testing.T) {
	ctx := context.Background()
	px, u := testenv.ProxyTo(t, pgtest.NewDatabase(t))
	u.Host = px.Addr()
	db := open(t, u.String())
	if err := db.Update(ctx, func(tx mayfly.Tx) error { return tx.PutSetting("k", "v") }); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var got string
	go func() {
		done <- db.View(ctx, func(tx mayfly.Tx) error {
			var err error
			got, err = tx.GetSetting("k")
			px.Freeze() // nothing more is answered: the COMMIT hangs
			return err
		})
	}()
	select {
	case err := <-done:
		if err != nil || got != "v" {
			t.Fatalf("View = %q, %v; want v, nil", got, err)
		}
	case <-time.After(5 * time.Second):
		px.Thaw()
		t.Fatal("View waited for its COMMIT's answer: a read took a second round trip")
	}
	px.Thaw() // drops the connection still ending the read
	for i := range 3 {
		var v string
		if err := db.View(ctx, func(tx mayfly.Tx) error {
			var err error
			v, err = tx.GetSetting("k")
			return err
		}); err != nil || v != "v" {
			t.Fatalf("View %d after the proxy came back = %q, %v; want v, nil", i, v, err)
		}
		if err := db.Update(ctx, func(tx mayfly.Tx) error { return tx.PutSetting("k", "v") }); err != nil {
			t.Fatalf("Update %d after the proxy came back: %v", i, err)
		}
	}
	// Close waits for the reads still ending, and none is left holding a
	// connection.
	closed := make(chan struct{})
	go func() { db.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: a connection ending a read was never given back")
	}
}
