package postgres

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// TestCopyChatMessagesOfOpenRequests: the places of the Slack messages of
// open requests move with a copy, so their later decisions update them;
// those of decided requests stay behind.
func TestCopyChatMessagesOfOpenRequests(t *testing.T) {
	ctx := context.Background()
	src, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	now := time.Now().UTC().Truncate(time.Second)
	err = src.Update(ctx, func(tx mayfly.Tx) error {
		for _, r := range []*mayfly.Request{
			{ID: "req_open", Requester: "alice", Target: "pg", Grant: "ro", Policy: "p", State: mayfly.RequestPending, CreatedAt: now},
			{ID: "req_done", Requester: "alice", Target: "pg", Grant: "ro", Policy: "p", State: mayfly.RequestDenied, CreatedAt: now.Add(time.Second)},
		} {
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
			if err := tx.PutChatMessage(&mayfly.ChatMessage{RequestID: r.ID, Channel: "C0DBA", TS: "1700000000.0001" + r.ID[4:6], UpdatedAt: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dst := open(t, pgtest.NewDatabase(t))
	n, err := dst.CopyFrom(ctx, src)
	if err != nil {
		t.Fatalf("CopyFrom: %v", err)
	}
	if n.Requests != 2 || n.ChatMessages != 1 {
		t.Errorf("CopyFrom counts = %+v; want 2 requests and 1 chat message", n)
	}
	err = dst.View(ctx, func(tx mayfly.Tx) error {
		m, err := tx.GetChatMessage("req_open")
		if err != nil {
			t.Errorf("chat message of the open request: %v", err)
		} else if m.Channel != "C0DBA" || m.TS != "1700000000.0001op" {
			t.Errorf("chat message of the open request = %+v", m)
		}
		if _, err := tx.GetChatMessage("req_done"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Errorf("chat message of the denied request: %v; want it left behind", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
