package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestGatewayCancelAcrossReplicas: behind a load balancer a cancel request
// (psql's Ctrl-C: a new connection) may reach another replica's gateway than
// the one serving the query. That replica finds the key in the store and
// forwards the request to the target; a wrong key cancels nothing, and a
// closed connection's key leaves the store.
func TestGatewayCancelAcrossReplicas(t *testing.T) {
	a, b, dsn := twoReplicas(t, gatewayOpts(t, "", "", ""))
	ca, cb := gatewayCreds(t, a), gatewayCreds(t, b)
	if ca.Port == cb.Port {
		t.Fatalf("both replicas' gateways on port %d", ca.Port)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, gwDSN(ca, ca.Password))
	if err != nil {
		t.Fatalf("connect through A's gateway: %v", err)
	}
	defer conn.Close(ctx)
	st, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	keys := func() int {
		t.Helper()
		var n int
		if err := st.QueryRow(ctx, `SELECT count(*) FROM settings WHERE key LIKE 'pggw.cancel.%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := keys(); n != 1 {
		t.Fatalf("cancel keys in the store with one gateway connection open: %d; want 1", n)
	}

	pid, key := conn.PgConn().PID(), conn.PgConn().SecretKey()
	start := time.Now()
	sleepErr := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "SELECT pg_sleep(30)"); sleepErr <- err }()
	time.Sleep(300 * time.Millisecond)

	bAddr := net.JoinHostPort(cb.Host, fmt.Sprint(cb.Port))
	wrong := append([]byte(nil), key...)
	wrong[0] ^= 1
	sendCancel(t, bAddr, pid, wrong)
	select {
	case err := <-sleepErr:
		t.Fatalf("a cancel request with a wrong key through B ended the query: %v", err)
	case <-time.After(time.Second):
	}
	sendCancel(t, bAddr, pid, key)
	select {
	case err = <-sleepErr:
	case <-time.After(5 * time.Second):
		t.Fatalf("pg_sleep(30) through A still runs 5 s after a cancel request through B")
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("pg_sleep(30) after a cancel request through B: %v after %v; want cancelled (57014)", err, time.Since(start))
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT 8").Scan(&n); err != nil || n != 8 {
		t.Fatalf("query after the cancel = %d, %v", n, err)
	}
	conn.Close(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for keys() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the closed connection's cancel key is still in the store")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The key of a replica killed before it removed its own is pruned (at a
	// gateway's start, then every 10 minutes); a live replica's is kept.
	live, err := pgx.Connect(ctx, gwDSN(ca, ca.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close(ctx)
	if _, err := st.Exec(ctx, `INSERT INTO settings (key, value) VALUES ('pggw.cancel.12345', '{"key":"00000000","addr":"127.0.0.1:5432","pid":1,"backend_key":"00000000","replica":"r_gone"}')`); err != nil {
		t.Fatal(err)
	}
	if n := keys(); n != 2 {
		t.Fatalf("cancel keys before the prune: %d; want 2", n)
	}
	b.halt() // not stop, which revokes every active lease
	b.startInProcess()
	deadline = time.Now().Add(5 * time.Second)
	for {
		var stale, n int
		if err := st.QueryRow(ctx, `SELECT count(*) FILTER (WHERE key = 'pggw.cancel.12345'), count(*) FROM settings WHERE key LIKE 'pggw.cancel.%'`).Scan(&stale, &n); err != nil {
			t.Fatal(err)
		}
		if stale == 0 {
			if n != 1 {
				t.Fatalf("after the prune %d cancel keys are left; want the live connection's one", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a gone replica's cancel key is still in the store 5 s after a replica started")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendCancel sends a PostgreSQL cancel request to addr, as a client does on
// a connection of its own, and waits for the server to close it.
func sendCancel(t *testing.T, addr string, pid uint32, key []byte) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s for a cancel request: %v", addr, err)
	}
	defer nc.Close()
	fe := pgproto3.NewFrontend(nc, nc)
	fe.Send(&pgproto3.CancelRequest{ProcessID: pid, SecretKey: key})
	if err := fe.Flush(); err != nil {
		t.Fatalf("send a cancel request to %s: %v", addr, err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	nc.Read(b[:])
}
