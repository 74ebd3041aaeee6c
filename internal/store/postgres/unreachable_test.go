package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestUnreachable: while the store's connections are cut (dropped, new
// ones refused), Ping, View and Update fail with code unavailable and a
// message naming the store but not its address or user; once it answers
// again, they succeed on fresh connections.
func TestUnreachable(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	p, u := testenv.ProxyTo(t, dsn)
	u.Host = p.Addr()
	db := open(t, u.String())
	ctx := context.Background()
	calls := map[string]func() error{
		"Ping": func() error { return db.Ping(ctx) },
		"View": func() error { return db.View(ctx, func(tx mayfly.Tx) error { _, err := tx.CountLeases(); return err }) },
		"Update": func() error {
			return db.Update(ctx, func(tx mayfly.Tx) error { _, err := tx.GetLease("lse_none"); return err })
		},
	}
	for name, call := range calls {
		if err := call(); err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Fatalf("%s before the cut: %v", name, err)
		}
	}
	p.Cut()
	for name, call := range calls {
		err := call()
		msg := mayfly.ErrorMessage(err)
		if mayfly.ErrorCode(err) != mayfly.EUNAVAILABLE || !strings.Contains(msg, "store unavailable") ||
			strings.Contains(msg, p.Addr()) || strings.Contains(msg, u.User.Username()) {
			t.Errorf("%s while cut off: code %q, message %q (%v); want unavailable naming the store, not its address", name, mayfly.ErrorCode(err), msg, err)
		}
	}
	p.Thaw()
	for name, call := range calls {
		if err := call(); err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Errorf("%s once the store is back: %v", name, err)
		}
	}
}

// TestServerEndedConnections: the server ends every connection of the
// store's pool (as its restart, or pg_terminate_backend, does), and the
// very next calls, well within a second of the pool's last use, succeed
// on new connections instead of failing on the dead ones.
func TestServerEndedConnections(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db := open(t, dsn)
	ctx := context.Background()
	view := func() error { return db.View(ctx, func(tx mayfly.Tx) error { _, err := tx.CountLeases(); return err }) }
	update := func() error {
		return db.Update(ctx, func(tx mayfly.Tx) error { return tx.CreateLease(testLease("lse_"+t.Name(), mayfly.LeaseActive)) })
	}
	if err := view(); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var ended int
	if err := admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&ended); err != nil || ended == 0 {
		t.Fatalf("terminate the store's connections: %d ended, %v", ended, err)
	}
	time.Sleep(50 * time.Millisecond) // the servers' FATALs on the wire
	if err := view(); err != nil {
		t.Errorf("View after the server ended the store's connections: %v", err)
	}
	if err := update(); err != nil {
		t.Errorf("Update after the server ended the store's connections: %v", err)
	}
}
