// Package audit verifies the hash chain of the audit trail.
package audit

import (
	"context"
	"fmt"

	"github.com/mayflyhq/mayfly"
)

// Result is the outcome of a verification.
type Result struct {
	OK      bool   `json:"ok"`
	Checked int64  `json:"checked"`
	First   int64  `json:"first_seq"`
	Last    int64  `json:"last_seq"`
	Broken  int64  `json:"broken_seq,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// pageSize is how many events one read transaction loads.
const pageSize = 5000

// Verify checks the chain from event fromSeq (0: the first retained) to
// toSeq (0: the last): sequence numbers are contiguous, each event's
// prev_hash is the hash of the one before, and each hash matches its
// content. It names the first broken event.
func Verify(ctx context.Context, s mayfly.Store, fromSeq, toSeq int64) (Result, error) {
	var res Result
	var prev *mayfly.AuditEvent
	after := int64(0)
	if fromSeq > 1 {
		// Start from the event before the range so the first link is checked.
		after = fromSeq - 2
	}
	for {
		var page []*mayfly.AuditEvent
		err := s.View(ctx, func(tx mayfly.Tx) error {
			var err error
			page, err = tx.ListAudit(mayfly.AuditFilter{AfterSeq: after, UntilSeq: toSeq, Limit: pageSize})
			return err
		})
		if err != nil {
			return res, fmt.Errorf("verify audit chain: %w", err)
		}
		for _, e := range page {
			after = e.Seq
			if fromSeq > 1 && e.Seq < fromSeq {
				prev = e
				continue
			}
			if res.First == 0 {
				res.First = e.Seq
			}
			if p := check(prev, e); p != "" {
				res.Broken, res.Problem = e.Seq, p
				res.Last = e.Seq
				return res, nil
			}
			res.Checked++
			res.Last = e.Seq
			prev = e
		}
		if len(page) < pageSize {
			break
		}
	}
	res.OK = true
	return res, nil
}

func check(prev, e *mayfly.AuditEvent) string {
	if prev != nil {
		if e.Seq != prev.Seq+1 {
			return fmt.Sprintf("event %d follows event %d: events %d to %d are missing", e.Seq, prev.Seq, prev.Seq+1, e.Seq-1)
		}
		if e.PrevHash != prev.Hash {
			return fmt.Sprintf("event %d: prev_hash does not match the hash of event %d (events removed, reordered or altered)", e.Seq, prev.Seq)
		}
	} else if e.Seq == 1 && e.PrevHash != "" {
		return "event 1: prev_hash must be empty"
	}
	if got := e.ComputeHash(); got != e.Hash {
		return fmt.Sprintf("event %d: content does not match its hash (altered)", e.Seq)
	}
	return ""
}
