package slackapp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/slack-go/slack"

	"github.com/mayflyhq/mayfly"
)

// Settings the sender keeps in the store.
const (
	cursorKey = "slack_cursor" // seq of the last audit event handled
	expiryKey = "slack_expiry" // watermark of the last lease warned
)

const batchSize = 100

// Run posts and updates the approval messages and sends the direct
// messages until ctx ends, then returns nil. Run it on one replica at a
// time (cluster.RunWhileLeader): it reads the audit trail after the
// cursor kept in the store, so a replica taking over carries on where the
// last one stopped. A Slack call that fails for a passing reason is
// retried with capped exponential backoff; one that Slack refuses for
// good (a channel that does not exist, a user it does not know) is logged
// and skipped, so it holds nothing else back.
func (a *App) Run(ctx context.Context) error {
	cursor, err := a.loadCursor(ctx)
	if err != nil {
		return err
	}
	failures := 0
	for {
		changed := a.b.Changed()
		if err := a.pass(ctx, &cursor); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			d := backoff(failures)
			a.log.Warn("slack: will retry", "err", err, "retry_in", d.String())
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		failures = 0
		t := time.NewTimer(a.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
		case <-a.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func backoff(attempt int) time.Duration {
	d := time.Second
	for i := 1; i < attempt && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// Start fixes where the sender begins before the server takes requests:
// the first time, after the latest audit event, so that enabling Slack
// does not post about history.
func (a *App) Start(ctx context.Context) error {
	_, err := a.loadCursor(ctx)
	return err
}

func (a *App) loadCursor(ctx context.Context) (int64, error) {
	var cursor int64
	err := a.store.Update(ctx, func(tx mayfly.Tx) error {
		v, err := tx.GetSetting(cursorKey)
		if err == nil {
			c, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil || c < 0 {
				return fmt.Errorf("setting %s holds %q, not an event number", cursorKey, v)
			}
			cursor = c
			return nil
		}
		if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			return err
		}
		evs, err := tx.ListAudit(mayfly.AuditFilter{Newest: true, Limit: 1})
		if err != nil {
			return err
		}
		if len(evs) > 0 {
			cursor = evs[0].Seq
		}
		return tx.PutSetting(cursorKey, strconv.FormatInt(cursor, 10))
	})
	if err != nil {
		return 0, fmt.Errorf("slack: read cursor: %w", err)
	}
	return cursor, nil
}

func (a *App) saveCursor(ctx context.Context, cursor int64) error {
	return a.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		return tx.PutSetting(cursorKey, strconv.FormatInt(cursor, 10))
	})
}

// pass handles every audit event after the cursor, then upcoming expiries.
func (a *App) pass(ctx context.Context, cursor *int64) error {
	for {
		var events []*mayfly.AuditEvent
		err := a.store.View(ctx, func(tx mayfly.Tx) error {
			var err error
			events, err = tx.ListAudit(mayfly.AuditFilter{AfterSeq: *cursor, Limit: batchSize})
			return err
		})
		if err != nil {
			return fmt.Errorf("read audit events after %d: %w", *cursor, err)
		}
		unsaved := false
		for _, e := range events {
			if ctx.Err() != nil {
				break
			}
			hctx, cancel := mayfly.Finishing(ctx)
			acted, err := a.handle(hctx, e)
			cancel()
			if err != nil {
				return err
			}
			*cursor = e.Seq
			unsaved = true
			// After a message went out the cursor is saved at once, so a
			// crash repeats as little as possible; other events are
			// passed over in a batch.
			if acted {
				if err := a.saveCursor(ctx, *cursor); err != nil {
					return fmt.Errorf("save cursor: %w", err)
				}
				unsaved = false
			}
		}
		if unsaved {
			if err := a.saveCursor(ctx, *cursor); err != nil {
				return fmt.Errorf("save cursor: %w", err)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(events) < batchSize {
			break
		}
	}
	return a.expiring(ctx)
}

// handle acts on one audit event and reports whether it concerned Slack;
// an error means it must be tried again.
func (a *App) handle(ctx context.Context, e *mayfly.AuditEvent) (bool, error) {
	switch e.Action {
	case "request.create", "request.approval", "request.approve", "request.deny", "request.cancel", "request.lapse":
	default:
		return false, nil
	}
	return true, a.handleRequest(ctx, e)
}

func (a *App) handleRequest(ctx context.Context, e *mayfly.AuditEvent) error {
	var r *mayfly.Request
	err := a.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = tx.GetRequest(e.RequestID)
		return err
	})
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read request %s: %w", e.RequestID, err)
	}
	// An approval that decided the request is followed by the event of
	// the decision, which updates the message once.
	if e.Action != "request.approval" || r.State == mayfly.RequestPending {
		if err := a.updateApproval(ctx, e, r); err != nil {
			return err
		}
	}
	switch e.Action {
	case "request.approve":
		if e.Data["auto"] != "true" {
			return a.directMessage(ctx, r.Requester, decisionDM(r, a.baseURL), "request "+r.ID+" approved")
		}
	case "request.deny", "request.lapse":
		return a.directMessage(ctx, r.Requester, decisionDM(r, a.baseURL), "request "+r.ID+" "+string(r.State))
	}
	return nil
}

// updateApproval posts the approval message of a request that waits for
// approval, or updates the one posted, to show r as it stands now.
func (a *App) updateApproval(ctx context.Context, e *mayfly.AuditEvent, r *mayfly.Request) error {
	var ref *mayfly.ChatMessage
	err := a.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		ref, err = tx.GetChatMessage(r.ID)
		return err
	})
	switch {
	case mayfly.ErrorCode(err) == mayfly.ENOTFOUND:
		ref = nil
	case err != nil:
		return fmt.Errorf("read the Slack message of request %s: %w", r.ID, err)
	}
	msg := approvalMessage(r, a.baseURL)
	if ref != nil {
		_, _, _, err := a.api.UpdateMessageContext(ctx, ref.Channel, ref.TS, msg.options()...)
		if err != nil {
			if permanent(err) {
				a.log.Error("slack: cannot update the approval message; skipped", "request", r.ID, "channel", ref.Channel, "err", slackErr("chat.update", err))
				return nil
			}
			return slackErr("chat.update", err)
		}
		return a.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
			ref.UpdatedAt = a.clock.Now().UTC()
			return tx.PutChatMessage(ref)
		})
	}
	// Only a request that came to wait for approval gets a message; one
	// decided before this sender saw it (auto-approved, break-glass) does
	// not.
	if e.Action != "request.create" || e.Data["decision"] == "auto" || e.Data["decision"] == "break_glass" || r.BreakGlass || len(r.Steps) == 0 {
		return nil
	}
	channel := a.channelFor(r.Policy)
	if channel == "" {
		return nil
	}
	ch, ts, err := a.api.PostMessageContext(ctx, channel, msg.options()...)
	if err != nil {
		if permanent(err) {
			a.log.Error("slack: cannot post the approval message; skipped", "request", r.ID, "channel", channel, "err", slackErr("chat.postMessage", err))
			return nil
		}
		return slackErr("chat.postMessage", err)
	}
	// A crash before this commit posts the message again when the event is
	// handled again (at least once).
	return a.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		return tx.PutChatMessage(&mayfly.ChatMessage{RequestID: r.ID, Channel: ch, TS: ts, UpdatedAt: a.clock.Now().UTC()})
	})
}

// directMessage sends m to user in a direct message. A user with no
// Slack account Mayfly knows of is skipped.
func (a *App) directMessage(ctx context.Context, user string, m rendered, what string) error {
	id, err := a.slackIDOf(ctx, user)
	if err != nil {
		return err
	}
	if id == "" {
		a.log.Debug("slack: no Slack account known for user; direct message skipped", "user", user, "about", what)
		return nil
	}
	ch, err := a.dmChannel(ctx, id)
	if err == nil {
		if _, _, err = a.api.PostMessageContext(ctx, ch, m.options()...); err != nil {
			err = slackErr("chat.postMessage", err)
		}
	}
	if err != nil {
		if permanent(err) {
			a.log.Error("slack: cannot send a direct message; skipped", "user", user, "about", what, "err", err)
			return nil
		}
		return err
	}
	return nil
}

// slackIDOf finds user's Slack id: the configured slack_id or, with
// match_email, the Slack account with the user's email address.
func (a *App) slackIDOf(ctx context.Context, user string) (string, error) {
	if id := a.dir.SlackID(user); id != "" {
		return id, nil
	}
	if !a.cfg.MatchEmail {
		return "", nil
	}
	email := a.dir.Email(user)
	if email == "" {
		return "", nil
	}
	u, err := a.api.GetUserByEmailContext(ctx, email)
	if err != nil {
		if permanent(err) { // users_not_found
			return "", nil
		}
		return "", slackErr("users.lookupByEmail", err)
	}
	return u.ID, nil
}

// dmChannel opens (or recalls) the direct message channel with a user.
func (a *App) dmChannel(ctx context.Context, userID string) (string, error) {
	a.dmMu.Lock()
	ch, ok := a.dms[userID]
	a.dmMu.Unlock()
	if ok {
		return ch, nil
	}
	c, _, _, err := a.api.OpenConversationContext(ctx, &slack.OpenConversationParameters{Users: []string{userID}})
	if err != nil {
		return "", slackErr("conversations.open", err)
	}
	if c == nil || c.ID == "" {
		return "", errors.New("conversations.open: no channel in the answer")
	}
	a.dmMu.Lock()
	a.dms[userID] = c.ID
	a.dmMu.Unlock()
	return c.ID, nil
}

// expiryMark orders leases by expiry, then id.
func expiryMark(l *mayfly.Lease) string {
	return fmt.Sprintf("%020d|%s", l.ExpiresAt.UnixNano(), l.ID)
}

// expiring warns the requesters of active leases that expire within the
// warning window and have not been warned: leases are warned in order of
// (expiry, id), and the last one warned is kept in the store.
func (a *App) expiring(ctx context.Context) error {
	now := a.clock.Now()
	horizon := now.Add(a.warning)
	var (
		mark   string
		leases []*mayfly.Lease
	)
	err := a.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		mark, err = tx.GetSetting(expiryKey)
		if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
			mark, err = "", nil
		}
		if err != nil {
			return err
		}
		leases, err = tx.DueLeases(horizon, []mayfly.LeaseState{mayfly.LeaseActive}, mayfly.DueCursor{}, 1000)
		return err
	})
	if err != nil {
		return fmt.Errorf("find expiring leases: %w", err)
	}
	due := leases[:0]
	for _, l := range leases {
		switch {
		case l.State != mayfly.LeaseActive, !l.ExpiresAt.After(now), l.ExpiresAt.After(horizon),
			l.ExpiresAt.Sub(l.CreatedAt) <= a.warning, expiryMark(l) <= mark:
			continue
		}
		due = append(due, l)
	}
	slices.SortFunc(due, func(x, y *mayfly.Lease) int { return cmp.Compare(expiryMark(x), expiryMark(y)) })
	for _, l := range due {
		if err := ctx.Err(); err != nil {
			return err
		}
		var r *mayfly.Request
		if err := a.store.View(ctx, func(tx mayfly.Tx) error {
			var err error
			r, err = tx.GetRequest(l.RequestID)
			return err
		}); err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			return fmt.Errorf("read request %s: %w", l.RequestID, err)
		}
		left := l.ExpiresAt.Sub(now).Round(time.Second)
		dctx, cancel := mayfly.Finishing(ctx)
		err := a.directMessage(dctx, l.Requester, expiringDM(l, r, left, a.baseURL), "lease "+l.ID+" expiring")
		cancel()
		if err != nil {
			return err
		}
		mark = expiryMark(l)
		if err := a.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
			return tx.PutSetting(expiryKey, mark)
		}); err != nil {
			return fmt.Errorf("save expiry watermark: %w", err)
		}
	}
	return nil
}
