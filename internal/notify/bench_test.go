package notify

import (
	"context"
	"fmt"
	"testing"

	"github.com/mayflyhq/mayfly"
)

// BenchmarkWebhookPass measures one channel turning request.create events
// into signed webhook deliveries: directory look-up, rendering, signing,
// an HTTP round trip to a loopback receiver and the cursor update.
func BenchmarkWebhookPass(b *testing.B) {
	db := openStore(b)
	h := &hook{secret: []byte("s3cret")}
	h.srv = newBenchServer(b, h)
	n, err := New(db, webhookConfig(h), newDir(db), func(k string) string { return hookEnv[k] }, testLog)
	if err != nil {
		b.Fatal(err)
	}
	w := n.workers[0]
	ctx := context.Background()
	if err := w.loadCursor(ctx); err != nil {
		b.Fatal(err)
	}
	err = db.Update(ctx, func(tx mayfly.Tx) error {
		for i := range b.N {
			r := pendingRequest(fmt.Sprintf("req_%d", i))
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
			if err := tx.AppendAudit(&mayfly.AuditEvent{Time: t0, Actor: r.Requester, Action: "request.create",
				Subject: "request:" + r.ID, Target: r.Target, RequestID: r.ID, Reason: r.Reason,
				Data: map[string]string{"decision": "approval"}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := w.pass(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if got := len(h.payloads()); got != b.N {
		b.Fatalf("delivered %d; want %d", got, b.N)
	}
}
