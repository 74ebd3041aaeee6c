package sink

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
)

// BenchmarkAppendAudit appends chained events to the embedded store,
// perTx of them per transaction; events/s counts events.
func BenchmarkAppendAudit(b *testing.B) {
	for _, perTx := range []int{1, 100} {
		b.Run(fmt.Sprintf("perTx=%d", perTx), func(b *testing.B) {
			db := openStore(b)
			ctx := context.Background()
			for b.Loop() {
				err := db.Update(ctx, func(tx mayfly.Tx) error {
					for i := range perTx {
						if err := tx.AppendAudit(testEvent(i)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*perTx)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkVerify1M verifies a chain of 1,000,000 events, built first in
// transactions of 10,000 appends (the build is not timed by the benchmark
// but reported as build-s and build-events/s).
func BenchmarkVerify1M(b *testing.B) {
	const total, perTx = 1_000_000, 10_000
	db := openStore(b)
	ctx := context.Background()
	begin := time.Now()
	for range total / perTx {
		err := db.Update(ctx, func(tx mayfly.Tx) error {
			for i := range perTx {
				if err := tx.AppendAudit(testEvent(i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	build := time.Since(begin)
	for b.Loop() {
		res, err := audit.Verify(ctx, db, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		if !res.OK || res.Checked != total {
			b.Fatalf("Verify = %+v; want OK with %d events checked", res, total)
		}
	}
	b.ReportMetric(build.Seconds(), "build-s")
	b.ReportMetric(total/build.Seconds(), "build-events/s")
	b.ReportMetric(float64(b.N*total)/b.Elapsed().Seconds(), "verified-events/s")
}

// BenchmarkDeliver measures one sink delivering batches of 100 events to a
// local receiver, without the store; events/s counts events.
func BenchmarkDeliver(b *testing.B) {
	events := make([]*mayfly.AuditEvent, 100)
	for i := range events {
		events[i] = testEvent(i)
		events[i].Seq = int64(i + 1)
		events[i].Hash = events[i].ComputeHash()
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	sinks := []struct {
		name string
		out  deliverer
	}{
		{"file", newFileSink(Config{Path: filepath.Join(b.TempDir(), "audit.log"), MaxBytes: DefaultMaxBytes, MaxFiles: 2})},
		{"syslog-udp", must(newSyslogSink(Config{Network: "udp", Address: pc.LocalAddr().String(), AppName: "mayfly", Timeout: DefaultTimeout}))},
		{"syslog-tcp", must(newSyslogSink(Config{Network: "tcp", Address: ln.Addr().String(), AppName: "mayfly", Timeout: DefaultTimeout}))},
		{"webhook", newWebhookSink(Config{URL: srv.URL, Timeout: DefaultTimeout}, []byte("key"))},
	}
	for _, s := range sinks {
		b.Run(s.name, func(b *testing.B) {
			defer s.out.close()
			for b.Loop() {
				if err := s.out.deliver(context.Background(), events); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(events))/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// BenchmarkCatchUp measures a Runner delivering a backlog of 20,000 events
// from the store, cursor updates included; one op is the whole backlog.
func BenchmarkCatchUp(b *testing.B) {
	const n = 20_000
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	for _, cfg := range []Config{
		{Name: "file", Type: TypeFile, Path: filepath.Join(b.TempDir(), "audit.log")},
		{Name: "webhook", Type: TypeWebhook, URL: srv.URL},
	} {
		b.Run(cfg.Name, func(b *testing.B) {
			db := openStore(b)
			for range n / 10_000 {
				appendEvents(b, db, 10_000)
			}
			ctx := context.Background()
			want := fmt.Sprint(n)
			for b.Loop() {
				if err := db.Update(ctx, func(tx mayfly.Tx) error { return tx.PutSetting(CursorKey(cfg.Name), "0") }); err != nil {
					b.Fatal(err)
				}
				r := newRunner(b, db, nil, cfg)
				stop := start(b, r)
				for storedCursor(b, db, cfg.Name) != want {
					time.Sleep(time.Millisecond)
				}
				stop()
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
