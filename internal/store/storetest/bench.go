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
// of 8 sessions (what 10 ms of pgbench -S with 8 clients queues). ns/op
// is per write; µs/event is the same divided by the 120 events.
func BenchSessionWrite(b *testing.B, s mayfly.Store) {
	const sessions, perSession = 8, 15
	ctx := context.Background()
	start := time.Now().UTC()
	var ids []string
	for i := range sessions {
		id := fmt.Sprintf("ses_bench_%d_%d", start.UnixNano(), i)
		ids = append(ids, id)
		if err := s.Update(ctx, func(tx mayfly.Tx) error {
			return tx.CreateSession(&mayfly.Session{ID: id, Kind: mayfly.SessionPostgres, LeaseID: "l1", User: "alice", Target: "pg", StartedAt: start})
		}); err != nil {
			b.Fatal(err)
		}
	}
	// A statement event as the gateway records one under pgbench -S.
	body := []byte(`{"text":"SELECT abalance FROM pgbench_accounts WHERE aid = $1;","protocol":"extended",` +
		`"params_hmac":["hmac-sha256:0f3c9a8b7e6d5c4b3a291807f6e5d4c3b2a19080706050403020100f0e0d0c0b"],` +
		`"start":"2026-12-02T09:24:08.123456789Z","duration_us":60,"tag":"SELECT 1","rows":1}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Update(ctx, func(tx mayfly.Tx) error {
			for _, id := range ids {
				evs := make([]*mayfly.SessionEvent, perSession)
				for j := range evs {
					evs[j] = &mayfly.SessionEvent{Time: time.Now(), Kind: mayfly.SessionEventStatement, Body: body, Compact: true}
				}
				if err := tx.AppendSessionEvents(id, evs); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*sessions*perSession), "µs/event")
}
