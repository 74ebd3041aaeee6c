package broker

import (
	"context"
	"crypto/rand"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mayflyhq/mayfly"
)

// FindLease resolves id, a lease id or a request id, to a lease the caller
// may act on.
func (b *Broker) FindLease(ctx context.Context, c Caller, id string) (*mayfly.Lease, error) {
	var l *mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		if strings.HasPrefix(id, "req_") {
			r, err := tx.GetRequest(id)
			if err != nil {
				return err
			}
			if r.LeaseID == "" {
				return mayfly.Errorf(mayfly.ENOTFOUND, "request %s has no lease (credentials were never issued)", id)
			}
			id = r.LeaseID
		}
		var err error
		l, err = tx.GetLease(id)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !c.Admin && l.Requester != c.User {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "lease %q not found", id)
	}
	return l, nil
}

// ListLeases returns leases the caller may see: admins all, others their own.
func (b *Broker) ListLeases(ctx context.Context, c Caller, f mayfly.LeaseFilter) ([]*mayfly.Lease, error) {
	if !c.Admin {
		if f.Requester != "" && f.Requester != c.User {
			return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "only admins may list another user's leases (you asked for %s's; without a user you see your own)", f.Requester)
		}
		f.Requester = c.User
	}
	var out []*mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		out, err = tx.ListLeases(f)
		return err
	})
	if out == nil {
		out = []*mayfly.Lease{}
	}
	return out, err
}

// EndLease ends a lease early: "done" by its holder (or an admin), or
// "revoked" by an admin. The account is revoked right away; if the target
// fails, the scheduler keeps retrying. A lease whose account is being
// created right now is marked revoking at once and its activation, which
// owns it until its provisioning deadline, undoes the account instead of
// issuing the credential: the end always wins over the activation.
//
// The revocation is detached from ctx: a client that goes away does not
// interrupt it.
func (b *Broker) EndLease(ctx context.Context, c Caller, id, endReason, note string) (*mayfly.Lease, error) {
	l, err := b.FindLease(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if endReason == mayfly.EndRevoked && !c.Admin && l.Requester != c.User {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "only an admin can revoke another user's lease")
	}
	ctx = context.WithoutCancel(ctx)
	revokeNow := false
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		revokeNow = false
		cur, err := tx.GetLease(l.ID)
		if err != nil {
			return err
		}
		l = cur
		switch l.State {
		case mayfly.LeaseActive:
			l.DueAt, revokeNow = b.clock.Now().UTC(), true
			if why, down := b.targetDown(l.Target); down {
				// The scheduler found the target not answering: the call
				// does not wait on it; the scheduler retries as it comes
				// back.
				revokeNow = false
				l.LastError = "not attempted: target " + l.Target + " is not answering (" + why + ")"
			}
		case mayfly.LeaseRevoking:
			return nil // already on its way out
		case mayfly.LeaseProvisioning:
			// Its DueAt stays the provisioning deadline: the activation in
			// flight sees the end and undoes the account; if it died, the
			// scheduler does at the deadline.
		default:
			return mayfly.Errorf(mayfly.ECONFLICT, "lease %s has already ended (%s, %s)", l.ID, l.State, l.EndReason)
		}
		l.State, l.EndReason = mayfly.LeaseRevoking, endReason
		if err := tx.UpdateLease(l); err != nil {
			return err
		}
		if err := b.endExtensions(tx, c, l.ID, "lease ended ("+endReason+")"); err != nil {
			return err
		}
		action := "lease.done"
		if endReason == mayfly.EndRevoked {
			action = "lease.revoke"
		}
		return b.audit(tx, c, action, nil, l, note, nil)
	})
	if err != nil {
		return nil, err
	}
	if revokeNow {
		b.RevokeNow(ctx, l)
	} else {
		b.poke()
	}
	return b.getLease(ctx, l.ID)
}

func (b *Broker) getLease(ctx context.Context, id string) (*mayfly.Lease, error) {
	var l *mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		l, err = tx.GetLease(id)
		return err
	})
	return l, err
}

// RevokeNow attempts the revocation of a lease already marked revoking and
// records the outcome: revoked (or failed, when undoing a provisioning), or
// a failed attempt with the next retry time.
//
// The attempt is detached from ctx: a caller that goes away (an HTTP client
// disconnecting) does not cancel a revocation half done.
func (b *Broker) RevokeNow(ctx context.Context, l *mayfly.Lease) {
	ctx = context.WithoutCancel(ctx)
	err := b.revokeOnTarget(ctx, l)
	var after []func()
	if rerr := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		after = after[:0] // a transaction run again starts afresh
		return b.recordRevocations(tx, []outcome{{lease: l, err: err}}, &after)
	}); rerr != nil {
		b.log.Error("record revocation", "lease", l.ID, "err", rerr)
	} else {
		runAll(after)
	}
	b.poke()
	b.committed()
}

// revokeOnTarget calls the target's connector.
func (b *Broker) revokeOnTarget(ctx context.Context, l *mayfly.Lease) error {
	conn, ok := b.connectors[l.Target]
	if !ok {
		return fmt.Errorf("target %q has no connector (removed from the configuration?)", l.Target)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b.awaitCommit(rctx, l.ID)
	// Revoked through this broker after the commit: nothing to read again.
	b.forgetRecheck(l.ID)
	return conn.Revoke(rctx, mayfly.RevokeRequest{LeaseID: l.ID, Username: l.Username, ExpiresAt: l.ExpiresAt})
}

func runAll(fs []func()) {
	for _, f := range fs {
		f()
	}
}

// recordRevocations writes the outcomes of revocation attempts in tx, in
// lease order. Each outcome's lease carries the end reason the scheduler
// decided (expired, session_lost, provisioning_failed) for a stored lease
// that does not have one yet. The open extension
// requests are read once, not once per lease; on a store where each
// statement is a round trip (mayfly.LeaseBatcher), the leases are also
// locked and read in one statement and written in one.
//
// The hooks (metrics) of what it records are appended to after, for the
// caller to run once the transaction has committed: a store runs a
// transaction again after a deadlock, and a hook run inside it would count
// twice. With after nil they run at once.
func (b *Broker) recordRevocations(tx mayfly.Tx, outs []outcome, after *[]func()) error {
	lb, batched := tx.(mayfly.LeaseBatcher)
	batched = batched && len(outs) > 1
	var locked map[string]*mayfly.Lease
	if batched {
		ids := make([]string, len(outs))
		for i, r := range outs {
			ids[i] = r.lease.ID
		}
		ls, err := lb.LockLeases(ids)
		if err != nil {
			return err
		}
		locked = make(map[string]*mayfly.Lease, len(ls))
		for _, l := range ls {
			locked[l.ID] = l
		}
	}
	var updates []*mayfly.Lease
	queued := map[string]bool{}
	update := func(l *mayfly.Lease) error {
		if batched {
			if !queued[l.ID] {
				queued[l.ID] = true
				updates = append(updates, l)
			}
			return nil
		}
		return tx.UpdateLease(l)
	}
	ext := &openExtensions{}
	for _, r := range outs {
		var cur *mayfly.Lease
		if batched {
			if cur = locked[r.lease.ID]; cur == nil {
				return mayfly.Errorf(mayfly.ENOTFOUND, "lease %q not found", r.lease.ID)
			}
		} else {
			var err error
			if cur, err = tx.GetLease(r.lease.ID); err != nil {
				return err
			}
		}
		if err := b.recordOutcome(tx, cur, r.lease, r.err, update, ext, after); err != nil {
			return err
		}
	}
	if len(updates) > 0 {
		return lb.UpdateLeases(updates)
	}
	return nil
}

// recordOutcome records one outcome for the stored lease cur, read locked
// in tx; update writes a lease, and ext holds the open extension requests
// read once for a batch.
func (b *Broker) recordOutcome(tx mayfly.Tx, cur, l *mayfly.Lease, rerr error, update func(*mayfly.Lease) error, ext *openExtensions, after *[]func()) error {
	revoked := func(l *mayfly.Lease, lag time.Duration, err error) {
		if b.hooks.Revoked == nil {
			return
		}
		if after == nil {
			b.hooks.Revoked(l, lag, err)
			return
		}
		c := *l
		*after = append(*after, func() { b.hooks.Revoked(&c, lag, err) })
	}
	if !cur.State.Live() {
		return nil // someone else finished it
	}
	if cur.State == mayfly.LeaseActive && l.State != mayfly.LeaseActive {
		// Compare-and-set: the attempt began on a lease that was not yet
		// active (a provisioning taken over at its deadline); its account
		// was created after the attempt, so the outcome says nothing about
		// it. The active lease is revoked at its own expiry.
		return nil
	}
	now := b.clock.Now().UTC()
	if cur.EndReason == "" {
		cur.EndReason = l.EndReason
	}
	if cur.State == mayfly.LeaseProvisioning && cur.EndReason == "" {
		cur.EndReason = mayfly.EndFailed
	}
	if cur.State == mayfly.LeaseActive && rerr != nil {
		// The expiry (or lost session) is recorded before the failure; on
		// success the single lease.revoked event says both (end_reason).
		action, why := "lease.expire", "lease expired"
		if cur.EndReason == mayfly.EndSessionLost {
			action, why = "lease.session_lost", "no heartbeat from the client"
		}
		if err := b.audit(tx, System, action, nil, cur, why, map[string]string{"expires_at": cur.ExpiresAt.Format(time.RFC3339Nano)}); err != nil {
			return err
		}
	}
	if rerr != nil {
		prevError := cur.LastError
		cur.State = mayfly.LeaseRevoking
		cur.RevokeAttempts++
		cur.LastError = Scrub(rerr.Error())
		delay := Backoff(cur.RevokeAttempts, b.maxBackoff)
		cur.DueAt = now.Add(delay)
		*l = *cur
		if err := update(cur); err != nil {
			return err
		}
		revoked(cur, 0, rerr)
		if !auditAttempt(cur.RevokeAttempts, prevError, cur.LastError) {
			return nil // counted on the lease (revoke_attempts, last_error)
		}
		b.log.Warn("revocation failed; will retry", "lease", cur.ID, "target", cur.Target, "attempt", cur.RevokeAttempts, "retry_in", delay.String(), "err", cur.LastError)
		return b.audit(tx, System, "lease.revoke_failed", nil, cur, cur.LastError,
			map[string]string{"attempt": fmt.Sprint(cur.RevokeAttempts), "retry_at": cur.DueAt.Format(time.RFC3339Nano)})
	}
	cur.State = mayfly.LeaseRevoked
	action := "lease.revoked"
	if cur.EndReason == mayfly.EndFailed {
		cur.State, action = mayfly.LeaseFailed, "lease.undone"
	}
	cur.EndedAt, cur.LastError = now, ""
	*l = *cur
	if err := update(cur); err != nil {
		return err
	}
	if err := b.endExtensionsIn(tx, System, cur.ID, "lease ended ("+cur.EndReason+")", ext); err != nil {
		return err
	}
	if b.viaGateway(cur) {
		// The gateway secret's verifier is of no use once the lease has
		// ended (the gateway refuses an ended lease anyway): drop it.
		if err := tx.DeleteSetting(GatewayVerifierKey(cur.ID)); err != nil {
			return err
		}
	}
	data := map[string]string{"username": cur.Username, "end_reason": cur.EndReason, "verified_absent": "true"}
	var lag time.Duration = -1
	if !cur.ExpiresAt.IsZero() && cur.EndReason == mayfly.EndExpired {
		lag = now.Sub(cur.ExpiresAt)
		data["lag"] = lag.String()
	}
	revoked(cur, lag, nil)
	return b.audit(tx, System, action, nil, cur, cur.EndReason, data)
}

// auditAttempt reports whether failed revocation attempt n is audited: the
// first three, then attempts 4, 8, 16, ... and any attempt whose error
// differs from the previous one. A target down for a day (retries every
// minute) adds about a dozen events, not 1,440; every attempt is still
// counted on the lease (revoke_attempts, last_error) and in the metrics.
func auditAttempt(n int, prevErr, err string) bool {
	return n <= 3 || n&(n-1) == 0 || prevErr != err
}

// Backoff returns the delay before revocation attempt n+1: exponential from
// 1s, capped at max, with up to 20% jitter.
func Backoff(attempt int, max time.Duration) time.Duration {
	d := time.Second
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	var j [2]byte
	rand.Read(j[:])
	jitter := time.Duration(int64(d) / 5 * int64(uint16(j[0])<<8|uint16(j[1])) / 65536)
	return d - jitter
}

// Scrub makes a target's error text fit to record and show: it removes
// what looks like a password (URL userinfo passwords and password=...
// settings), drops carriage returns, and replaces the other control
// characters but tab and newline, and bytes that are not UTF-8, with
// U+FFFD. Such text comes from outside (a script's stderr, a hostile name
// echoed back): PostgreSQL's text columns refuse NUL and invalid UTF-8,
// which would leave the failure unrecorded, and escape sequences would
// reach terminals.
func Scrub(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\r':
			return -1 // a CRLF line end stays a line end
		case unicode.IsControl(r) && r != '\n' && r != '\t':
			return utf8.RuneError
		}
		return r
	}, s)
	s = scrubURL.ReplaceAllString(s, "$1:[REDACTED]@")
	s = scrubKV.ReplaceAllString(s, "${1}[REDACTED]")
	return s
}

var (
	scrubURL = regexp.MustCompile(`(://[^:/@\s]+):[^@\s]*@`)
	scrubKV  = regexp.MustCompile(`(?i)((?:password|passwd|pwd)\s*[=:]\s*)\S+`)
)
