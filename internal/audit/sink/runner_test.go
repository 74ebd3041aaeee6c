package sink

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func TestLastSeq(t *testing.T) {
	db := openStore(t)
	total := 0
	for _, n := range []int{1, 2, 1023, 1024, 1025, 3000, 5000} {
		for total < n {
			appendEvents(t, db, min(n-total, 1000))
			total = min(n, total+1000)
		}
		for _, known := range []int64{1, 2, int64(n) / 2, int64(n) - 1, int64(n)} {
			if known < 1 || known > int64(n) {
				continue
			}
			var got int64
			err := db.View(context.Background(), func(tx mayfly.Tx) error {
				var err error
				got, err = lastSeq(tx, known)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if got != int64(n) {
				t.Errorf("with %d events, lastSeq(tx, %d) = %d; want %d", n, known, got, n)
			}
		}
	}
}

// TestRestartKeepsCursor stops a Runner and starts another: the second
// resumes after the last confirmed event and delivers nothing twice.
func TestRestartKeepsCursor(t *testing.T) {
	db := openStore(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	cfg := Config{Name: "local", Type: "file", Path: path, BatchSize: 7}
	appendEvents(t, db, 30)
	r1 := newRunner(t, db, nil, cfg)
	stop := start(t, r1)
	waitFor(t, "cursor 30", func() bool { return storedCursor(t, db, "local") == "30" })
	stop()
	if err := r1.Run(context.Background()); err == nil {
		t.Error("second Run on one Runner = nil; want an error")
	}

	appendEvents(t, db, 20)
	r2 := newRunner(t, db, nil, cfg)
	start(t, r2)
	waitFor(t, "cursor 50", func() bool { return storedCursor(t, db, "local") == "50" })
	if got, want := seqs(readLines(t, path)), seqs(allEvents(t, db)); !reflect.DeepEqual(got, want) {
		t.Fatalf("file holds %v; want %v", got, want)
	}
}

// TestNotify checks that Notify delivers at once, without waiting for the
// poll interval.
func TestNotify(t *testing.T) {
	db := openStore(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	r := newRunner(t, db, nil, Config{Name: "local", Type: "file", Path: path})
	r.poll = time.Hour
	start(t, r)
	for i := 1; i <= 3; i++ {
		appendEvents(t, db, 1)
		r.Notify()
		waitFor(t, "the event after Notify", func() bool { return fileLen(path) == i })
	}
}

// TestBacklogAndIndependence keeps one sink down while another delivers:
// the healthy sink is not held up, and Backlog counts what the failing one
// still owes, also as new events arrive.
func TestBacklogAndIndependence(t *testing.T) {
	db := openStore(t)
	var up atomic.Bool
	var got []int64 // first seq of each accepted batch
	gotc := make(chan []int64, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		b := decodeBatch(t, req)
		gotc <- b
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "audit.log")
	r := newRunner(t, db, nil,
		Config{Name: "hook", Type: "webhook", URL: srv.URL, BatchSize: 100},
		Config{Name: "local", Type: "file", Path: path})
	if got, want := r.Backlog(), map[string]int64{"hook": 0, "local": 0}; !reflect.DeepEqual(got, want) {
		t.Errorf("Backlog before Run = %v; want %v", got, want)
	}
	appendEvents(t, db, 2500)
	start(t, r)
	waitFor(t, "file sink caught up", func() bool { return storedCursor(t, db, "local") == "2500" })
	waitFor(t, "webhook backlog 2500", func() bool { return r.Backlog()["hook"] == 2500 })
	if got := r.Backlog()["local"]; got != 0 {
		t.Errorf("file sink Backlog = %d; want 0", got)
	}

	appendEvents(t, db, 150)
	r.Notify()
	waitFor(t, "file sink caught up", func() bool { return storedCursor(t, db, "local") == "2650" })
	waitFor(t, "webhook backlog 2650", func() bool { return r.Backlog()["hook"] == 2650 })

	up.Store(true)
	waitFor(t, "webhook caught up", func() bool { return storedCursor(t, db, "hook") == "2650" })
	close(gotc)
	for b := range gotc {
		got = append(got, b...)
	}
	checkExactly(t, got, 2650)
	// The cursor is stored before the sink's count in memory moves: the
	// count follows shortly after.
	waitFor(t, "webhook Backlog 0", func() bool { return r.Backlog()["hook"] == 0 })
}

// checkExactly checks that got is 1..n.
func checkExactly(t *testing.T, got []int64, n int64) {
	t.Helper()
	if int64(len(got)) != n {
		t.Fatalf("delivered %d events; want %d", len(got), n)
	}
	for i, s := range got {
		if s != int64(i)+1 {
			t.Fatalf("delivery %d is event %d; want %d", i, s, i+1)
		}
	}
}
