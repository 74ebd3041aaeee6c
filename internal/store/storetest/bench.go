package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// BenchSessionWrite measures one write of the session log as a busy
// PostgreSQL gateway makes it: one Update appending 15 statements to each
// of 8 sessions (what 10 ms of pgbench -S with 8 clients queues), and to
// each of 64. Each size runs twice: "batch" appends to all sessions in one
// AppendSessionsEvents, as the session log's writer does; "each" calls
// AppendSessionEvents once per session, as it did before. ns/op is per
// write; µs/event is the same divided by the events of a write.
func BenchSessionWrite(b *testing.B, s mayfly.Store) {
	const perSession = 15
	ctx := context.Background()
	start := time.Now().UTC()
	// A statement event as the gateway records one under pgbench -S.
	body := []byte(`{"text":"SELECT abalance FROM pgbench_accounts WHERE aid = $1;","protocol":"extended",` +
		`"params_hmac":["hmac-sha256:0f3c9a8b7e6d5c4b3a291807f6e5d4c3b2a19080706050403020100f0e0d0c0b"],` +
		`"start":"2026-12-02T09:24:08.123456789Z","duration_us":60,"tag":"SELECT 1","rows":1}`)
	runs := 0 // each run of a sub-benchmark makes sessions of its own
	for _, sessions := range []int{8, 64} {
		for _, mode := range []string{"batch", "each"} {
			b.Run(fmt.Sprintf("sessions=%d/%s", sessions, mode), func(b *testing.B) {
				var ids []string
				runs++
				if err := s.Update(ctx, func(tx mayfly.Tx) error {
					for i := range sessions {
						id := fmt.Sprintf("ses_bench_%d_%d_%d", start.UnixNano(), runs, i)
						ids = append(ids, id)
						if err := tx.CreateSession(&mayfly.Session{ID: id, Kind: mayfly.SessionPostgres, LeaseID: "l1", User: "alice", Target: "pg", StartedAt: start}); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					as := make([]mayfly.SessionAppend, len(ids))
					for i, id := range ids {
						evs := make([]*mayfly.SessionEvent, perSession)
						for j := range evs {
							evs[j] = &mayfly.SessionEvent{Time: time.Now(), Kind: mayfly.SessionEventStatement, Body: body, Compact: true}
						}
						as[i] = mayfly.SessionAppend{ID: id, Events: evs}
					}
					if err := s.Update(ctx, func(tx mayfly.Tx) error {
						if mode == "batch" {
							return tx.AppendSessionsEvents(as)
						}
						for _, a := range as {
							if err := tx.AppendSessionEvents(a.ID, a.Events); err != nil {
								return err
							}
						}
						return nil
					}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*sessions*perSession), "µs/event")
			})
		}
	}
}
