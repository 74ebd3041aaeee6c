package broker_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/clocktest"
	"github.com/mayflyhq/mayfly/internal/connector/mysql"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	redisconn "github.com/mayflyhq/mayfly/internal/connector/redis"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// hungListener accepts TCP connections on loopback and never answers: a
// target that hangs. first is closed at the first connection.
type hungListener struct {
	ln       net.Listener
	accepted atomic.Int64
	first    chan struct{}
}

func newHungListener(t *testing.T) *hungListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hungListener{ln: ln, first: make(chan struct{})}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if h.accepted.Add(1) == 1 {
				close(h.first)
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return h
}

func (h *hungListener) addr() string { return h.ln.Addr().String() }

// isolationWorld is a broker over a fresh store with targets on the real
// PostgreSQL, MariaDB and Redis, and a PostgreSQL-kind and a Redis-kind
// target on a listener that never answers.
type isolationWorld struct {
	b     *broker.Broker
	st    mayfly.Store
	hung  *hungListener
	conns map[string]mayfly.Connector

	mu      sync.Mutex
	revoked map[string]time.Duration // lease id → lag of its successful revocation
	failed  map[string]string        // lease id → last error of a failed attempt
	notify  chan struct{}            // receives after each hook call
}

func newIsolationWorld(t *testing.T) *isolationWorld {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w := &isolationWorld{st: st, hung: newHungListener(t), conns: map[string]mayfly.Connector{},
		revoked: map[string]time.Duration{}, failed: map[string]string{}, notify: make(chan struct{}, 1)}
	targets := map[string]mayfly.Target{
		"pg": {Name: "pg", Kind: mayfly.KindPostgres, Prefix: "mfi_", DSN: testenv.PostgresDSN(),
			Grants: map[string]mayfly.Grant{"ro": {Name: "ro", Roles: []string{"pg_read_all_data"}}}},
		"maria": {Name: "maria", Kind: mayfly.KindMySQL, Prefix: "mfi_", DSN: testenv.MySQLDSN(),
			Grants: map[string]mayfly.Grant{"ro": {Name: "ro", Statements: []string{"GRANT SELECT ON test.* TO {{name}}"}}}},
		"redis": {Name: "redis", Kind: mayfly.KindRedis, Prefix: "mfi_", Address: testenv.RedisAddr(),
			Grants: map[string]mayfly.Grant{"ro": {Name: "ro", ACL: "~app:* +@read"}}},
		"hung-pg": {Name: "hung-pg", Kind: mayfly.KindPostgres, Prefix: "mfh_",
			DSN:    "postgres://postgres@" + w.hung.addr() + "/postgres?sslmode=disable",
			Grants: map[string]mayfly.Grant{"ro": {Name: "ro", Roles: []string{"pg_read_all_data"}}}},
		"hung-redis": {Name: "hung-redis", Kind: mayfly.KindRedis, Prefix: "mfh_", Address: w.hung.addr(),
			Grants: map[string]mayfly.Grant{"ro": {Name: "ro", ACL: "~app:* +@read"}}},
	}
	var infos []policy.TargetInfo
	var names []string
	for name, tgt := range targets {
		var c mayfly.Connector
		var err error
		switch tgt.Kind {
		case mayfly.KindPostgres:
			c, err = postgres.New(tgt, func(string) string { return "" })
		case mayfly.KindMySQL:
			c, err = mysql.New(tgt, func(string) string { return "" })
		case mayfly.KindRedis:
			c, err = redisconn.New(tgt, func(string) string { return "" })
		}
		if err != nil {
			t.Fatalf("connector %s: %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		if !strings.HasPrefix(name, "hung-") {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Check(cctx)
			cancel()
			if err != nil {
				testenv.Unavailable(t, name, err)
			}
		}
		w.conns[name] = c
		infos = append(infos, policy.TargetInfo{Name: name, Kind: tgt.Kind, Grants: []string{"ro"}})
		names = append(names, name)
	}
	set, err := policy.Compile([]policy.Policy{{Name: "p", Groups: []string{"eng"}, Targets: names, Grants: []string{"ro"}, MaxDuration: time.Hour}}, infos)
	if err != nil {
		t.Fatal(err)
	}
	w.b = broker.New(&broker.Config{Targets: targets, Policies: set}, broker.Options{
		Store: st, Connectors: w.conns, HMACKey: []byte("k"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Hooks: broker.Hooks{Revoked: func(l *mayfly.Lease, lag time.Duration, err error) {
			w.mu.Lock()
			if err == nil {
				w.revoked[l.ID] = lag
			} else {
				w.failed[l.ID] = err.Error()
			}
			w.mu.Unlock()
			select {
			case w.notify <- struct{}{}:
			default:
			}
		}},
	})
	return w
}

// waitUntil waits for cond, checked after each revocation outcome, for at
// most d.
func (w *isolationWorld) waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok := cond()
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-w.notify:
		case <-deadline.C:
			t.Fatalf("waited %s for %s", d, what)
		}
	}
}

// addHungLeases stores n active leases on target (one of the hung ones)
// expiring at exp, as if their accounts were created before the target
// stopped answering.
func (w *isolationWorld) addHungLeases(t *testing.T, target string, n int, exp time.Time) []string {
	t.Helper()
	var ids []string
	err := w.st.Update(context.Background(), func(tx mayfly.Tx) error {
		for i := 0; i < n; i++ {
			l := &mayfly.Lease{ID: broker.NewID("lse_"), RequestID: broker.NewID("req_"), Requester: "alice", Target: target, Grant: "ro",
				Username: fmt.Sprintf("mfh_hung_%d", i), State: mayfly.LeaseActive, CreatedAt: exp.Add(-time.Hour), ExpiresAt: exp, DueAt: exp}
			if err := tx.CreateLease(l); err != nil {
				return err
			}
			ids = append(ids, l.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func (w *isolationWorld) run(t *testing.T, o broker.SchedulerOptions) (stop func() time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.b.RunScheduler(ctx, o) }()
	stopped := false
	stop = func() time.Duration {
		if stopped {
			return 0
		}
		stopped = true
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunScheduler = %v", err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("RunScheduler did not return within 2m of its stop")
		}
		return time.Since(start)
	}
	t.Cleanup(func() { stop() })
	return stop
}

// login tries the issued credential on its target.
func login(ctx context.Context, target string, c mayfly.Credential) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch target {
	case "pg":
		db := c.Database
		if db == "" {
			db = "postgres"
		}
		conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", c.Username, c.Password, c.Host, c.Port, db))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	case "maria":
		db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s:%d)/", c.Username, c.Password, c.Host, c.Port))
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(ctx)
	case "redis":
		rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("%s:%d", c.Host, c.Port), Username: c.Username, Password: c.Password, MaxRetries: -1, DisableIdentity: true})
		defer rc.Close()
		// The grant allows reads of app:* only (not PING).
		if err := rc.Get(ctx, "app:x").Err(); err != nil && err != redis.Nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("no login for %s", target)
}

// TestIsolationHungTargetDoesNotDelayOthers gives 200 due leases each to a
// PostgreSQL-kind and a Redis-kind target that accept connections and
// never answer, due just before leases on the real PostgreSQL, MariaDB and
// Redis: the healthy leases must still be removed within 1s of their
// expiry (their credentials work before and are refused after), and the
// hung targets' leases must be backed off without attempting each one.
func TestIsolationHungTargetDoesNotDelayOthers(t *testing.T) {
	w := newIsolationWorld(t)
	ctx := context.Background()
	alice := broker.Caller{User: "alice", Groups: []string{"eng"}}
	type issued struct {
		target string
		lease  *mayfly.Lease
		cred   mayfly.Credential
	}
	var healthy []issued
	for i := 0; i < 3; i++ {
		for _, target := range []string{"pg", "maria", "redis"} {
			_, _, a, err := w.b.CreateAndActivate(ctx, alice, broker.RequestInput{Target: target, Grant: "ro", Duration: 4 * time.Second, Reason: "isolation test"}, broker.ActivateOptions{})
			if err != nil {
				t.Fatalf("activate on %s: %v", target, err)
			}
			healthy = append(healthy, issued{target, a.Lease, a.Credential})
		}
	}
	first := healthy[0].lease.ExpiresAt
	for _, h := range healthy {
		if err := login(ctx, h.target, h.cred); err != nil {
			t.Fatalf("login on %s with the issued credential before expiry: %v", h.target, err)
		}
	}
	if time.Until(first) < 500*time.Millisecond {
		t.Fatalf("issuing and logging in took too long: the first lease expires in %s", time.Until(first))
	}
	// The hung targets' leases fall due just before the healthy ones.
	hungIDs := append(w.addHungLeases(t, "hung-pg", 200, first.Add(-300*time.Millisecond)),
		w.addHungLeases(t, "hung-redis", 200, first.Add(-300*time.Millisecond))...)

	const perTarget = 4
	stop := w.run(t, broker.SchedulerOptions{Concurrency: 16, PerTarget: perTarget, AttemptTimeout: 2 * time.Second})
	w.waitUntil(t, "every healthy lease to be revoked", 30*time.Second, func() bool {
		for _, h := range healthy {
			if _, ok := w.revoked[h.lease.ID]; !ok {
				return false
			}
		}
		return true
	})
	var lags []time.Duration
	w.mu.Lock()
	for _, h := range healthy {
		lag := w.revoked[h.lease.ID]
		lags = append(lags, lag)
		if lag > time.Second {
			t.Errorf("lease on %s removed %s after its expiry; want within 1s", h.target, lag)
		}
	}
	w.mu.Unlock()
	slices.Sort(lags)
	t.Logf("healthy removal lag: min %s, max %s", lags[0], lags[len(lags)-1])
	for _, h := range healthy {
		if err := login(ctx, h.target, h.cred); err == nil {
			t.Errorf("login on %s with the credential of revoked lease %s succeeded", h.target, h.lease.ID)
		}
	}

	// Every hung lease gets a failed attempt recorded (it backs off), most
	// without touching the target: the hung targets hold only their share.
	w.waitUntil(t, "a failed attempt on every hung lease", time.Minute, func() bool {
		for _, id := range hungIDs {
			if _, ok := w.failed[id]; !ok {
				return false
			}
		}
		return true
	})
	accepted := w.hung.accepted.Load()
	notAttempted := 0
	w.mu.Lock()
	for _, id := range hungIDs {
		if strings.HasPrefix(w.failed[id], "not attempted") {
			notAttempted++
		}
	}
	w.mu.Unlock()
	t.Logf("hung targets: %d connections accepted, %d of %d leases backed off without an attempt", accepted, notAttempted, len(hungIDs))
	if accepted > 60 {
		t.Errorf("the hung targets accepted %d connections for %d leases; want them backed off, not each attempted", accepted, len(hungIDs))
	}
	if notAttempted < 100 {
		t.Errorf("%d hung leases backed off without an attempt; want at least 100 (the Redis-kind ones after the first of each batch)", notAttempted)
	}
	stop()
}

// TestIsolationStopIsBounded stops the scheduler while attempts on hung
// targets are in flight with a 30s attempt timeout: it must return within
// a few seconds, leaving the leases it did not finish due and unrecorded.
// Their count as overdue, and the overdue alert, are checked on them.
func TestIsolationStopIsBounded(t *testing.T) {
	w := newIsolationWorld(t)
	ctx := context.Background()
	expired := time.Now().Add(-time.Minute).UTC()
	hungIDs := append(w.addHungLeases(t, "hung-pg", 50, expired), w.addHungLeases(t, "hung-redis", 50, expired.Add(time.Second))...)
	stop := w.run(t, broker.SchedulerOptions{AttemptTimeout: 30 * time.Second, ShutdownGrace: 500 * time.Millisecond})
	select {
	case <-w.hung.first:
	case <-time.After(30 * time.Second):
		t.Fatal("no attempt reached the hung targets")
	}
	if took := stop(); took > 3*time.Second {
		t.Errorf("RunScheduler took %s to return after its stop; want at most 3s", took)
	} else {
		t.Logf("stop with attempts in flight on hung targets: %s", took)
	}
	var ls []*mayfly.Lease
	err := w.st.View(ctx, func(tx mayfly.Tx) error {
		var err error
		ls, err = tx.ListLeases(mayfly.LeaseFilter{IDs: hungIDs})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.State != mayfly.LeaseActive || l.RevokeAttempts != 0 {
			t.Errorf("lease %s after a stop = %s with %d attempts; want active with none recorded", l.ID, l.State, l.RevokeAttempts)
			break
		}
	}

	// A lease ended long ago and one not yet expired are not overdue.
	err = w.st.Update(ctx, func(tx mayfly.Tx) error {
		for _, l := range []*mayfly.Lease{
			{ID: broker.NewID("lse_"), RequestID: "req_x", Requester: "alice", Target: "pg", Grant: "ro", Username: "mfi_gone", State: mayfly.LeaseRevoked,
				CreatedAt: expired.Add(-time.Hour), ExpiresAt: expired.Add(-time.Minute), EndedAt: expired, EndReason: mayfly.EndExpired},
			{ID: broker.NewID("lse_"), RequestID: "req_y", Requester: "alice", Target: "pg", Grant: "ro", Username: "mfi_live", State: mayfly.LeaseActive,
				CreatedAt: expired, ExpiresAt: time.Now().Add(time.Hour).UTC(), DueAt: time.Now().Add(time.Hour).UTC()},
		} {
			if err := tx.CreateLease(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	o, err := w.b.CountOverdue(ctx, broker.OverdueGrace)
	if err != nil {
		t.Fatal(err)
	}
	if o.Count != len(hungIDs) || !o.Oldest.Equal(expired) {
		t.Errorf("CountOverdue = %d, oldest %s; want %d, oldest %s", o.Count, o.Oldest, len(hungIDs), expired)
	}
	if got := w.b.LastOverdue(); got != o {
		t.Errorf("LastOverdue = %+v; want %+v", got, o)
	}
	if err := w.b.CheckOverdueRevocations(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := w.b.CheckOverdueRevocations(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	var alerts []*mayfly.AuditEvent
	err = w.st.View(ctx, func(tx mayfly.Tx) error {
		var err error
		alerts, err = tx.ListAudit(mayfly.AuditFilter{Action: "alert.revocation_overdue"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != len(hungIDs) {
		t.Errorf("%d revocation_overdue alerts after two checks; want one per lease active past its expiry, %d", len(alerts), len(hungIDs))
	}
}

// TestIsolationWatchOverdueOnFakeClock counts a lease as overdue only once
// the clock passes its expiry by the grace, recounting on each tick of the
// broker's clock, without sleeping.
func TestIsolationWatchOverdueOnFakeClock(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := clocktest.New(start)
	b := broker.New(&broker.Config{}, broker.Options{Store: st, Clock: clock, HMACKey: []byte("k"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	exp := start.Add(time.Second)
	err = st.Update(ctx, func(tx mayfly.Tx) error {
		return tx.CreateLease(&mayfly.Lease{ID: "lse_a", RequestID: "req_a", Requester: "alice", Target: "pg", Grant: "ro", Username: "mf_a",
			State: mayfly.LeaseActive, CreatedAt: start, ExpiresAt: exp, DueAt: exp})
	})
	if err != nil {
		t.Fatal(err)
	}
	reports := make(chan broker.Overdue)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.WatchOverdue(ctx, time.Second, broker.OverdueGrace, func(o broker.Overdue) { reports <- o })
	}()
	tests := []struct {
		advance time.Duration
		want    int
	}{
		{0, 0},                   // not expired
		{time.Second, 0},         // expired, within the grace
		{broker.OverdueGrace, 1}, // past the grace
		{time.Hour - broker.OverdueGrace, 1},
	}
	for _, tt := range tests {
		if tt.advance > 0 {
			waitTicker(t, clock)
			clock.Advance(tt.advance)
		}
		var o broker.Overdue
		select {
		case o = <-reports:
		case <-time.After(10 * time.Second):
			t.Fatalf("no count within 10s of advancing the clock to %s", clock.Now().Sub(start))
		}
		if o.Count != tt.want {
			t.Errorf("at %s: overdue = %d; want %d", clock.Now().Sub(start), o.Count, tt.want)
		}
		if tt.want > 0 && !o.Oldest.Equal(exp) {
			t.Errorf("at %s: oldest = %s; want %s", clock.Now().Sub(start), o.Oldest, exp)
		}
	}
	cancel()
	<-done
}

// waitTicker waits for the code under test to make a ticker on clock.
func waitTicker(t *testing.T, clock *clocktest.Fake) {
	t.Helper()
	made := make(chan struct{})
	go func() {
		clock.WaitTickers(1)
		close(made)
	}()
	select {
	case <-made:
	case <-time.After(10 * time.Second):
		t.Fatal("no ticker made on the broker's clock within 10s")
	}
}
