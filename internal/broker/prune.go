package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mayflyhq/mayfly"
)

// PruneResult says what a retention pass removed.
type PruneResult struct {
	Removed   int64  `json:"removed"`
	FirstKept int64  `json:"first_kept_seq"`
	Archive   string `json:"archive,omitempty"`
}

// PruneAudit archives then removes audit events older than olderThan,
// except the events of leases that still live (and their requests) and the
// last event, so the chain stays verifiable from the first retained event.
// The archive is a JSON-lines file in archiveDir (required) that
// `audit verify`-style tools can check on its own.
func (b *Broker) PruneAudit(ctx context.Context, c Caller, olderThan time.Duration, archiveDir string) (PruneResult, error) {
	var res PruneResult
	if !c.Admin {
		return res, mayfly.Errorf(mayfly.EFORBIDDEN, "pruning the audit trail needs an admin")
	}
	if olderThan < 24*time.Hour {
		return res, mayfly.Errorf(mayfly.EINVALID, "retention %s is under the minimum of 24h", olderThan)
	}
	cutoff := b.clock.Now().Add(-olderThan)
	var before int64
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		last, err := lastSeq(tx)
		if err != nil || last == 0 {
			return err
		}
		before = last // never the last event
		if evs, err := tx.ListAudit(mayfly.AuditFilter{Since: cutoff, Limit: 1}); err != nil {
			return err
		} else if len(evs) == 1 && evs[0].Seq < before {
			before = evs[0].Seq
		}
		live, err := tx.ListLeases(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking}})
		if err != nil {
			return err
		}
		for _, l := range live {
			for _, f := range []mayfly.AuditFilter{{LeaseID: l.ID, Limit: 1}, {RequestID: l.RequestID, Limit: 1}} {
				evs, err := tx.ListAudit(f)
				if err != nil {
					return err
				}
				if len(evs) == 1 && evs[0].Seq < before {
					before = evs[0].Seq
				}
			}
		}
		return nil
	})
	if err != nil || before <= 1 {
		res.FirstKept = max(before, 1)
		return res, err
	}
	if err := os.MkdirAll(archiveDir, 0o700); err != nil {
		return res, fmt.Errorf("archive directory: %w", err)
	}
	path := filepath.Join(archiveDir, fmt.Sprintf("audit-before-%d-%s.jsonl", before, b.clock.Now().UTC().Format("20060102T150405Z")))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return res, fmt.Errorf("archive: %w", err)
	}
	enc := json.NewEncoder(f)
	var lastHash string
	for after := int64(0); ; {
		var page []*mayfly.AuditEvent
		err := b.store.View(ctx, func(tx mayfly.Tx) error {
			var err error
			page, err = tx.ListAudit(mayfly.AuditFilter{AfterSeq: after, UntilSeq: before - 1, Limit: 5000})
			return err
		})
		if err != nil {
			f.Close()
			return res, err
		}
		for _, e := range page {
			if err := enc.Encode(e); err != nil {
				f.Close()
				return res, fmt.Errorf("archive: %w", err)
			}
			after, lastHash = e.Seq, e.Hash
		}
		if len(page) < 5000 {
			break
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return res, fmt.Errorf("archive: %w", err)
	}
	f.Close()
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		n, err := tx.DeleteAuditBefore(before)
		if err != nil {
			return err
		}
		res.Removed = n
		return tx.AppendAudit(&mayfly.AuditEvent{Time: b.clock.Now().UTC(), Actor: c.User, Action: "audit.prune",
			Subject: "audit", Reason: "retention " + olderThan.String(), Source: c.Source,
			Data: map[string]string{"before_seq": strconv.FormatInt(before, 10), "archive": path, "last_pruned_hash": lastHash}})
	})
	if err != nil {
		return res, err
	}
	res.FirstKept, res.Archive = before, path
	b.committed()
	return res, nil
}

// lastSeq returns the sequence number of the newest event (0 when none).
func lastSeq(tx mayfly.Tx) (int64, error) {
	var last int64
	for {
		evs, err := tx.ListAudit(mayfly.AuditFilter{AfterSeq: last, Limit: 10000})
		if err != nil {
			return 0, err
		}
		if len(evs) == 0 {
			return last, nil
		}
		last = evs[len(evs)-1].Seq
	}
}
