package sessionlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

func open(t *testing.T) (*sqlite.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mayfly.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func session() *mayfly.Session {
	return &mayfly.Session{Kind: mayfly.SessionPostgres, LeaseID: "lease_1", RequestID: "req_1", User: "alice",
		Target: "pg", Grant: "readonly", Account: "mf_alice_x", ClientAddr: "127.0.0.1:40000",
		Data: map[string]string{"database": "app"}}
}

// record starts a session, records n statements and ends it.
func record(t *testing.T, db mayfly.Store, n int) *mayfly.Session {
	t.Helper()
	ctx := context.Background()
	r, err := sessionlog.New(db, nil, nil).Start(ctx, session())
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := r.Record(ctx, time.Now(), mayfly.SessionEventStatement, mayfly.Statement{Text: fmt.Sprintf("SELECT %d", i), Tag: "SELECT 1", Rows: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.End(ctx, "client"); err != nil {
		t.Fatal(err)
	}
	return r.Session()
}

func TestRecordAndVerify(t *testing.T) {
	db, _ := open(t)
	s := record(t, db, 100)
	if s.Events != 102 {
		t.Errorf("session has %d events; want 102 (start, 100 statements, end)", s.Events)
	}
	res, err := sessionlog.Verify(context.Background(), db, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || !res.Anchored || res.Checked != 102 {
		t.Fatalf("Verify = %+v; want ok, anchored, 102 checked", res)
	}
	var evs []*mayfly.SessionEvent
	var audit []*mayfly.AuditEvent
	db.View(context.Background(), func(tx mayfly.Tx) error {
		evs, _ = tx.ListSessionEvents(s.ID, 0, 0)
		audit, _ = tx.ListAudit(mayfly.AuditFilter{LeaseID: "lease_1"})
		return nil
	})
	for i, e := range evs[1:101] {
		var st mayfly.Statement
		if err := json.Unmarshal(e.Body, &st); err != nil || st.Text != fmt.Sprintf("SELECT %d", i) {
			t.Fatalf("event %d = %s; want statement SELECT %d in order", e.Seq, e.Body, i)
		}
	}
	if len(audit) != 2 || audit[0].Action != sessionlog.ActionStart || audit[1].Action != sessionlog.ActionEnd ||
		audit[1].Data["session_id"] != s.ID || audit[0].Source != "127.0.0.1" {
		t.Fatalf("audit = %+v; want session.start and session.end naming %s", audit, s.ID)
	}
}

// TestTamperDetected alters the log as someone with access to the store
// file would, each way, and expects Verify to name the problem.
func TestTamperDetected(t *testing.T) {
	ctx := context.Background()
	sql := func(q string) func(*sqlite.DB, *mayfly.Session) error {
		return func(db *sqlite.DB, _ *mayfly.Session) error { return db.ExecForTest(ctx, q) }
	}
	edit := func(f func([]*mayfly.SessionEvent) []*mayfly.SessionEvent) func(*sqlite.DB, *mayfly.Session) error {
		return func(db *sqlite.DB, s *mayfly.Session) error { return db.RewriteSessionEventsForTest(ctx, s.ID, f) }
	}
	for _, tc := range []struct {
		name   string
		tamper func(*sqlite.DB, *mayfly.Session) error
		want   string
	}{
		{"statement text", sql(`UPDATE session_event_chunks SET events = replace(events, 'SELECT 3', 'SELECT 4')`), "altered"},
		{"statement removed", edit(func(evs []*mayfly.SessionEvent) []*mayfly.SessionEvent {
			return append(evs[:4:4], evs[5:]...)
		}), "missing"},
		{"last statements removed and head moved", func(db *sqlite.DB, s *mayfly.Session) error {
			var nine string
			if err := db.RewriteSessionEventsForTest(ctx, s.ID, func(evs []*mayfly.SessionEvent) []*mayfly.SessionEvent {
				nine = evs[8].Hash
				return evs[:9]
			}); err != nil {
				return err
			}
			return db.ExecForTest(ctx, `UPDATE sessions SET events = 9, last_hash = ?`, nine)
		}, "ended"},
		{"user changed", sql(`UPDATE sessions SET user_name = 'mallory'`), "differs"},
		{"rehashed chain", edit(func(evs []*mayfly.SessionEvent) []*mayfly.SessionEvent {
			evs[10].Hash = "x"
			return evs
		}), "altered"},
		{"head moved", sql(`UPDATE sessions SET events = 3`), "head"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := open(t)
			s := record(t, db, 10)
			if err := tc.tamper(db, s); err != nil {
				t.Fatal(err)
			}
			res, err := sessionlog.Verify(ctx, db, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if res.OK || !strings.Contains(res.Problem, tc.want) {
				t.Fatalf("Verify after tampering = %+v; want a problem mentioning %q", res, tc.want)
			}
		})
	}
}

// TestTruncationAgainstAudit removes the end of a chain and rebuilds a
// consistent end event: only the audit trail's record of the head shows it.
func TestTruncationAgainstAudit(t *testing.T) {
	db, _ := open(t)
	s := record(t, db, 10)
	// Drop statements 9 and 10 and the end, then end again with a forged
	// end event chained properly.
	var nine string
	if err := db.RewriteSessionEventsForTest(context.Background(), s.ID, func(evs []*mayfly.SessionEvent) []*mayfly.SessionEvent {
		nine = evs[8].Hash
		return evs[:9]
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.ExecForTest(context.Background(), `UPDATE sessions SET events = 9, ended_at = NULL, last_hash = ?`, nine); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		if err := tx.AppendSessionEvents(s.ID, []*mayfly.SessionEvent{{Time: time.Now(), Kind: mayfly.SessionEventEnd, Body: []byte(`{"reason":"client"}`)}}); err != nil {
			return err
		}
		return tx.EndSession(s.ID, time.Now(), "client")
	}); err != nil {
		t.Fatal(err)
	}
	res, err := sessionlog.Verify(context.Background(), db, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || !strings.Contains(res.Problem, "audit event") {
		t.Fatalf("Verify = %+v; want the audit trail's head to disagree", res)
	}
}

// blockingStore holds every Update until released, like a store that has
// fallen behind.
type blockingStore struct {
	mayfly.Store
	mu      sync.Mutex
	release chan struct{}
}

func (b *blockingStore) Update(ctx context.Context, fn func(mayfly.Tx) error) error {
	b.mu.Lock()
	ch := b.release
	b.mu.Unlock()
	if ch != nil {
		<-ch
	}
	return b.Store.Update(ctx, fn)
}

// TestBackPressure: with the store stalled, Record waits once MaxPending
// events are queued, and nothing is lost when the store resumes.
func TestBackPressure(t *testing.T) {
	db, _ := open(t)
	bs := &blockingStore{Store: db}
	l := sessionlog.New(bs, nil, nil)
	l.MaxPending = 8
	ctx := context.Background()
	r, err := l.Start(ctx, session())
	if err != nil {
		t.Fatal(err)
	}
	bs.mu.Lock()
	bs.release = make(chan struct{})
	bs.mu.Unlock()
	const n = 50
	done := make(chan int, 1)
	go func() {
		i := 0
		for ; i < n; i++ {
			if err := r.Record(ctx, time.Now(), mayfly.SessionEventStatement, mayfly.Statement{Text: fmt.Sprint(i)}); err != nil {
				t.Error(err)
				break
			}
		}
		done <- i
	}()
	select {
	case i := <-done:
		t.Fatalf("Record returned for all %d events while the store was stalled; want it to wait after 8", i)
	case <-time.After(300 * time.Millisecond):
	}
	// A caller that gives up waiting gets its context's error.
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := r.Record(tctx, time.Now(), "x", nil); err == nil {
		t.Fatal("Record with the queue full and its context ended returned nil")
	}
	bs.mu.Lock()
	close(bs.release)
	bs.release = nil
	bs.mu.Unlock()
	if i := <-done; i != n {
		t.Fatalf("recorded %d; want %d", i, n)
	}
	if err := r.End(ctx, "client"); err != nil {
		t.Fatal(err)
	}
	res, err := sessionlog.Verify(ctx, db, r.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Checked != n+2 {
		t.Fatalf("Verify = %+v; want ok with %d events", res, n+2)
	}
}

func TestRecordAfterEnd(t *testing.T) {
	db, _ := open(t)
	ctx := context.Background()
	r, err := sessionlog.New(db, nil, nil).Start(ctx, session())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.End(ctx, "client"); err != nil {
		t.Fatal(err)
	}
	if err := r.Record(ctx, time.Now(), "x", nil); mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Fatalf("Record after End = %v; want conflict", err)
	}
	if err := r.End(ctx, "again"); err != nil {
		t.Fatalf("second End = %v; want nil", err)
	}
}

// BenchmarkRecordStatements: 8 sessions recording statements like a busy
// PostgreSQL gateway's (pgbench -S); ns/op is the cost of one statement
// until written, writer included.
func BenchmarkRecordStatements(b *testing.B) {
	path := filepath.Join(b.TempDir(), "mayfly.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	log := sessionlog.New(db, nil, nil)
	const sessions = 8
	var rs []*sessionlog.Recorder
	for range sessions {
		r, err := log.Start(ctx, session())
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	st := mayfly.Statement{Text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1;", Protocol: "extended",
		ParamsHMAC: []string{"hmac-sha256:0f3c9a8b7e6d5c4b3a291807f6e5d4c3b2a19080706050403020100f0e0d0c0b"}, Tag: "SELECT 1", Rows: 1, DurationUS: 60}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; j < b.N; j += sessions {
				st.Start = time.Now()
				if err := r.Record(ctx, st.Start, mayfly.SessionEventStatement, st); err != nil {
					b.Error(err)
					return
				}
			}
			r.Flush(ctx)
		}()
	}
	wg.Wait()
}
