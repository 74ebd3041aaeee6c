package sqlite

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// TestBackgroundCheckpoint checks that committed pages reach the database
// file without a commit paying for it: the writer's own checkpoint is far
// away (walBackstop), so only the background checkpointer can do it.
func TestBackgroundCheckpoint(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	size := func() int64 {
		fi, err := os.Stat(db.path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// Let the checkpointer settle what Open wrote.
	time.Sleep(3 * checkpointEvery)
	before := size()
	for i := range 300 {
		if err := db.Update(ctx, func(tx mayfly.Tx) error {
			return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Actor: "alice", Action: "bulk", Reason: string(make([]byte, 512)), Seq: int64(i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for size() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes 5s after 300 commits: nothing was checkpointed", before)
		}
		time.Sleep(checkpointEvery / 2)
	}
	// The checkpointer stops with the database.
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
