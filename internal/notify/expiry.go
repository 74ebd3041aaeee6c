package notify

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/mayflyhq/mayfly"
)

// Upcoming expiries are not audit events, so each channel keeps its own
// compact watermark instead of a cursor: the (expiry, lease id) of the last
// lease it warned, stored under notify_expiry:<channel>. Leases are warned
// in that order, so everything at or below the watermark has been warned.
// A lease whose expiry is extended beyond the warning window gets a new
// warning when its new expiry comes near.

// expiryMark orders leases by expiry, then id.
func expiryMark(l *mayfly.Lease) string {
	return fmt.Sprintf("%020d|%s", l.ExpiresAt.UnixNano(), l.ID)
}

// expiring warns the requesters of active leases that expire within the
// warning window and have not been warned on this channel.
func (w *worker) expiring(ctx context.Context) error {
	if w.n.warning <= 0 || (w.events != nil && !w.events[TypeExpiring]) {
		return nil
	}
	now := w.n.now()
	horizon := now.Add(w.n.warning)
	key := w.expiryKey()
	var (
		mark   string
		leases []*mayfly.Lease
	)
	err := w.n.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		mark, err = tx.GetSetting(key)
		if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
			mark, err = "", nil
		}
		if err != nil {
			return err
		}
		leases, err = tx.DueLeases(horizon, []mayfly.LeaseState{mayfly.LeaseActive}, mayfly.DueCursor{}, maxExpiring)
		return err
	})
	if err != nil {
		return fmt.Errorf("find expiring leases: %w", err)
	}
	due := leases[:0]
	for _, l := range leases {
		switch {
		case l.State != mayfly.LeaseActive,
			!l.ExpiresAt.After(now),                     // already expired: the end notice follows
			l.ExpiresAt.After(horizon),                  // not yet
			l.ExpiresAt.Sub(l.CreatedAt) <= w.n.warning, // shorter than the warning itself
			expiryMark(l) <= mark:
			continue
		}
		due = append(due, l)
	}
	slices.SortFunc(due, func(a, b *mayfly.Lease) int { return cmp.Compare(expiryMark(a), expiryMark(b)) })
	for _, l := range due {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := w.n.expiringMessage(ctx, l, now)
		if err != nil {
			return err
		}
		if err := w.deliver(ctx, m); err != nil {
			return err
		}
		mark = expiryMark(l)
		if err := w.n.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
			return tx.PutSetting(key, mark)
		}); err != nil {
			return fmt.Errorf("save expiry watermark: %w", err)
		}
	}
	return nil
}
