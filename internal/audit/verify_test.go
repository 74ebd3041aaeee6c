package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// Every way of tampering with the stored trail is detected and the first
// broken event named.
func TestVerifyDetectsTampering(t *testing.T) {
	tests := []struct {
		name    string
		tamper  []string
		broken  int64
		problem string
	}{
		{"intact", nil, 0, ""},
		{"edited", []string{"UPDATE audit_events SET reason = 'nothing happened' WHERE seq = 4"}, 4, "altered"},
		{"edited with a recomputed hash", []string{"UPDATE audit_events SET actor = 'mallory', hash = 'x' WHERE seq = 4"}, 4, "altered"},
		{"deleted", []string{"DELETE FROM audit_events WHERE seq = 5"}, 6, "missing"},
		{"reordered", []string{
			"UPDATE audit_events SET seq = 100 WHERE seq = 3",
			"UPDATE audit_events SET seq = 3 WHERE seq = 4",
			"UPDATE audit_events SET seq = 4 WHERE seq = 100",
		}, 3, "prev_hash"},
		{"an early event removed", []string{"DELETE FROM audit_events WHERE seq = 2"}, 3, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "a.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for i := 1; i <= 8; i++ {
				if err := db.Update(ctx, func(tx mayfly.Tx) error {
					return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Actor: "alice", Action: "x", Subject: fmt.Sprintf("lease:l%d", i), Reason: fmt.Sprint("step ", i)})
				}); err != nil {
					t.Fatal(err)
				}
			}
			for _, q := range tt.tamper {
				if err := db.ExecForTest(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			res, err := audit.Verify(ctx, db, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != (tt.broken == 0) || res.Broken != tt.broken || !strings.Contains(res.Problem, tt.problem) {
				t.Errorf("Verify = %+v; want broken at %d (%s)", res, tt.broken, tt.problem)
			}
		})
	}
}

func TestVerifyRange(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 10; i++ {
		db.Update(ctx, func(tx mayfly.Tx) error {
			return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now(), Actor: "a", Action: "x", Subject: "s"})
		})
	}
	db.ExecForTest(ctx, "UPDATE audit_events SET actor = 'm' WHERE seq = 8")
	if res, _ := audit.Verify(ctx, db, 2, 6); !res.OK || res.First != 2 || res.Last != 6 || res.Checked != 5 {
		t.Errorf("Verify(2, 6) = %+v; want 5 intact events", res)
	}
	if res, _ := audit.Verify(ctx, db, 5, 0); res.OK || res.Broken != 8 {
		t.Errorf("Verify(5, end) = %+v; want broken at 8", res)
	}
}
