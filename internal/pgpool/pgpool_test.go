package pgpool_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayflyhq/mayfly/internal/pgpool"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// newPool opens a pool of one connection to the test server, through
// dsn's host when set; checked is whether it uses pgpool's check.
func newPool(t testing.TB, dsn string, checked bool) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	if checked {
		pgpool.Configure(cfg)
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := p.Ping(context.Background()); err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	return p
}

// idleConn returns p's connection, used once and then left idle, as the
// pool would hand it out again. The caller releases it; so does the
// test's end, before the pool's close waits for it, when a failure came
// first.
func idleConn(t *testing.T, p *pgxpool.Pool) *pgxpool.Conn {
	t.Helper()
	c, err := p.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Release)
	if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	return c
}

func shouldPing(c *pgxpool.Conn, idle time.Duration) bool {
	return pgpool.ShouldPing(context.Background(), pgxpool.ShouldPingParams{Conn: c.Conn(), IdleDuration: idle})
}

// waitShouldPing waits for c's socket to show what the server did.
func waitShouldPing(t *testing.T, c *pgxpool.Conn) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !shouldPing(c, 0); {
		if time.Now().After(deadline) {
			t.Fatal("ShouldPing = false for a connection the server ended; want true")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// terminate ends the server's side of c, as a restart of the server or
// pg_terminate_backend does: the server sends a FATAL and closes.
func terminate(t *testing.T, c *pgxpool.Conn) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var ok bool
	if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", int(c.Conn().PgConn().PID())).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend = %v, %v", ok, err)
	}
}

// dsns are the test server's DSN as given and over TLS (sslmode=require),
// by name: the check looks at the socket beneath TLS. A server without TLS
// skips the second.
func dsns(t *testing.T) map[string]string {
	t.Helper()
	u, err := url.Parse(testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("sslmode", "require")
	u.RawQuery = q.Encode()
	return map[string]string{"plain": testenv.PostgresDSN(), "tls": u.String()}
}

// newPoolOver is newPool for one of dsns; a server that does not speak TLS
// skips the TLS one, or fails it under CI=true (scripts/services.sh turns
// TLS on), and the pool's connection is made sure to use it.
func newPoolOver(t *testing.T, name, dsn string, checked bool) *pgxpool.Pool {
	t.Helper()
	if name == "tls" {
		c, err := pgx.Connect(context.Background(), dsn)
		if err != nil && strings.Contains(err.Error(), "server refused TLS") {
			testenv.Unavailable(t, "PostgreSQL with TLS", err)
		}
		if err == nil {
			c.Close(context.Background())
		}
	}
	p := newPool(t, dsn, checked)
	c, err := p.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	if _, isTLS := c.Conn().PgConn().Conn().(*tls.Conn); isTLS != (name == "tls") {
		t.Fatalf("%s: the pool's connection uses TLS = %t", name, isTLS)
	}
	return p
}

func TestQuietConnectionIsNotPinged(t *testing.T) {
	for name, dsn := range dsns(t) {
		t.Run(name, func(t *testing.T) {
			p := newPoolOver(t, name, dsn, true)
			c := idleConn(t, p)
			defer c.Release()
			// However long it sat idle: nothing on its socket.
			for _, idle := range []time.Duration{0, 2 * time.Second, time.Hour} {
				if shouldPing(c, idle) {
					t.Errorf("ShouldPing(idle %v) = true for a live idle connection; want false", idle)
				}
			}
		})
	}
}

func TestConnectionEndedByTheServer(t *testing.T) {
	for name, dsn := range dsns(t) {
		t.Run(name, func(t *testing.T) { testConnectionEndedByTheServer(t, name, dsn) })
	}
}

func testConnectionEndedByTheServer(t *testing.T, name, dsn string) {
	ctx := context.Background()
	for _, checked := range []bool{true, false} {
		p := newPoolOver(t, name, dsn, checked)
		c := idleConn(t, p)
		pid := c.Conn().PgConn().PID()
		terminate(t, c)
		if checked {
			waitShouldPing(t, c)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
		c.Release()
		// Taken again at once, well within the second after which pgxpool
		// alone would have pinged it.
		var got uint32
		err := p.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&got)
		if !checked {
			// Without the check the pool hands the dead connection out:
			// what the check is for.
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "57P01" {
				t.Fatalf("pgxpool's default check: statement on a terminated connection = %v; want the server's FATAL 57P01", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("statement after the server ended the pool's connection: %v; want it run on a new connection", err)
		}
		if got == pid {
			t.Fatalf("statement ran on backend %d, the one terminated", got)
		}
	}
}

func TestConnectionClosedWithoutAWord(t *testing.T) {
	ctx := context.Background()
	px, u := testenv.ProxyTo(t, testenv.PostgresDSN())
	u.Host = px.Addr()
	p := newPool(t, u.String(), true)
	c := idleConn(t, p)
	if shouldPing(c, time.Hour) {
		t.Fatal("ShouldPing = true before the cut; want false")
	}
	px.Cut() // closed, no FATAL: the end of the stream only
	waitShouldPing(t, c)
	c.Release()
	px.Thaw()
	var one int
	if err := p.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("statement after the connection was closed = %d, %v; want 1 on a new connection", one, err)
	}
}

// BenchmarkAcquireAfterIdle times taking a connection from the pool and
// running SELECT 1 on it after the pool sat idle longer than a second, as
// between a person's calls: with pgxpool's default check (a ping first)
// and with pgpool's.
//
//	go test -run '^$' -bench AcquireAfterIdle -benchtime 20x ./internal/pgpool/
func BenchmarkAcquireAfterIdle(b *testing.B) {
	for _, mode := range []string{"pgx-default", "pgpool"} {
		b.Run(mode, func(b *testing.B) {
			p := newPool(b, testenv.PostgresDSN(), mode == "pgpool")
			ctx := context.Background()
			var ds []time.Duration
			for b.Loop() {
				b.StopTimer()
				time.Sleep(1100 * time.Millisecond)
				b.StartTimer()
				t0 := time.Now()
				if _, err := p.Exec(ctx, "SELECT 1"); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
		})
	}
}

// TestCheckDoesNotWaitForARead: while another read is pending on the
// connection's socket (as pgconn's background reader may leave one), the
// check still answers at once.
func TestCheckDoesNotWaitForARead(t *testing.T) {
	p := newPool(t, testenv.PostgresDSN(), true)
	c := idleConn(t, p)
	defer func() {
		// The stray read below may have taken bytes pgconn needed.
		c.Conn().Close(context.Background())
		c.Release()
	}()
	nc := c.Conn().PgConn().Conn()
	nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	reading := make(chan struct{})
	go func() {
		close(reading)
		var b [1]byte
		nc.Read(b[:])
	}()
	<-reading
	time.Sleep(50 * time.Millisecond) // the read is waiting
	answered := make(chan bool, 1)
	go func() { answered <- shouldPing(c, time.Hour) }()
	select {
	case got := <-answered:
		if got {
			t.Errorf("ShouldPing = true for a live idle connection; want false")
		}
	case <-time.After(time.Second):
		t.Fatal("ShouldPing waited for a read in progress on the connection")
	}
}
