package broker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// ReconcileResult is what one reconciliation pass over a target found and did.
type ReconcileResult struct {
	Target string `json:"target"`
	// Accounts is how many managed accounts the target reported.
	Accounts int `json:"accounts"`
	// OrphansRemoved are accounts positively identified as this
	// installation's (its mark, or a name a lease of this store was given)
	// that no live lease explains; removed.
	OrphansRemoved []string `json:"orphans_removed"`
	// Unmanaged are accounts under the prefix that Mayfly did not make (no
	// mark, no lease ever named them): reported and left in place, unless
	// the target sets remove_unmarked.
	Unmanaged []string `json:"unmanaged"`
	// SuperusersKept are superusers under the prefix that no live lease
	// explains: never removed, whoever made them.
	SuperusersKept []string `json:"superusers_kept"`
	// LeasesMissing are active leases whose account had vanished; they are
	// revoked (which succeeds for an absent account) and end as missing.
	LeasesMissing []string `json:"leases_missing"`
	// ProvisioningFinished are leases stuck in provisioning, handed to the
	// scheduler to undo.
	ProvisioningFinished []string `json:"provisioning_finished"`
	Errors               []string `json:"errors"`
	Duration             string   `json:"duration"`
}

// Reconcile compares each target's accounts under its prefix with live
// leases. An account no live lease explains is an orphan, and is removed,
// only when it is positively this installation's: it carries the
// installation's mark (Account.Marked), or a lease of this store was given
// its name. Any other account under the prefix is reported (Unmanaged, and
// an alert the first time it is seen) and left alone unless the target sets
// remove_unmarked; a superuser is never removed. Active leases whose
// account has vanished are revoked (idempotent) and end as missing; leases
// stuck in provisioning are undone. target "" means every target. Accounts
// are listed before leases, so an account created for a new lease meanwhile
// is never taken for an orphan (its intent is committed before the account
// exists); an active lease whose account that listing missed is looked for
// again before it is called missing (see stillMissing).
func (b *Broker) Reconcile(ctx context.Context, c Caller, target string) ([]ReconcileResult, error) {
	if !c.Admin {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "reconciling needs an admin")
	}
	cfg := b.cfg.Load()
	var names []string
	for n := range cfg.Targets {
		if target == "" || n == target {
			names = append(names, n)
		}
	}
	if target != "" && len(names) == 0 {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "unknown target %q", target)
	}
	slices.Sort(names)
	out := []ReconcileResult{}
	for _, n := range names {
		out = append(out, b.reconcileTarget(ctx, c, cfg.Targets[n]))
	}
	return out, nil
}

func (b *Broker) reconcileTarget(ctx context.Context, c Caller, t mayfly.Target) ReconcileResult {
	start := time.Now()
	res := ReconcileResult{Target: t.Name, OrphansRemoved: []string{}, Unmanaged: []string{}, SuperusersKept: []string{},
		LeasesMissing: []string{}, ProvisioningFinished: []string{}, Errors: []string{}}
	defer func() { res.Duration = time.Since(start).Round(time.Millisecond).String() }()
	conn, ok := b.connectors[t.Name]
	if !ok {
		res.Errors = append(res.Errors, "no connector")
		return res
	}
	listedAt := b.clock.Now().UTC()
	accts, err := listAccounts(ctx, conn, t)
	if err != nil {
		res.Errors = append(res.Errors, "list accounts: "+Scrub(mayfly.ErrorMessageOrText(err)))
		return res
	}
	present := map[string]mayfly.Account{}
	for _, a := range accts {
		if t.Prefix != "" && strings.HasPrefix(a.Name, t.Prefix) {
			present[a.Name] = a
		}
	}
	res.Accounts = len(present)
	var live []*mayfly.Lease
	err = b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		live, err = tx.ListLeases(mayfly.LeaseFilter{Target: t.Name, States: []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking}})
		return err
	})
	if err != nil {
		res.Errors = append(res.Errors, "list leases: "+err.Error())
		return res
	}
	explained := map[string]bool{}
	now := b.clock.Now().UTC()
	var missing, stuck []*mayfly.Lease
	for _, l := range live {
		explained[l.Username] = true
		switch {
		case l.State == mayfly.LeaseActive && !has(present, l.Username) && l.CreatedAt.Before(listedAt):
			missing = append(missing, l)
		case l.State == mayfly.LeaseProvisioning && now.Sub(l.CreatedAt) > b.provTO:
			stuck = append(stuck, l)
		}
	}
	if len(missing) > 0 {
		missing = b.stillMissing(ctx, conn, t, missing, &res)
	}
	var orphans []string
	how := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(present)) {
		if explained[name] {
			continue
		}
		a := present[name]
		issued, busy, err := b.issued(ctx, t.Name, name, listedAt)
		switch {
		case err != nil:
			res.Errors = append(res.Errors, "look up leases of "+name+": "+err.Error())
		case busy:
			// A lease for it ended after the listing (its revocation
			// raced the listing), or a live lease of another target on
			// the same server holds it.
		case a.Superuser:
			res.SuperusersKept = append(res.SuperusersKept, name)
		case a.Marked:
			orphans, how[name] = append(orphans, name), "mark"
		case issued:
			orphans, how[name] = append(orphans, name), "lease"
		case t.RemoveUnmarked:
			orphans, how[name] = append(orphans, name), "remove_unmarked"
		default:
			res.Unmanaged = append(res.Unmanaged, name)
		}
	}
	b.alertUnmanaged(ctx, t.Name, append(slices.Clone(res.Unmanaged), res.SuperusersKept...))
	for _, name := range orphans {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := conn.Revoke(rctx, mayfly.RevokeRequest{Username: name})
		cancel()
		action, note := "account.orphan_removed", "no live lease explains this account"
		if err != nil {
			action, note = "account.orphan_remove_failed", Scrub(mayfly.ErrorMessageOrText(err))
			res.Errors = append(res.Errors, fmt.Sprintf("remove orphan %s: %s", name, note))
		} else {
			res.OrphansRemoved = append(res.OrphansRemoved, name)
		}
		b.log.Warn("orphan account on target", "target", t.Name, "account", name, "removed", err == nil)
		if err := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
			return tx.AppendAudit(&mayfly.AuditEvent{Time: b.clock.Now().UTC(), Actor: c.User, Action: action,
				Subject: "target:" + t.Name, Target: t.Name, Reason: note, Source: c.Source,
				Data: map[string]string{"account": name, "end_reason": mayfly.EndOrphan, "identified_by": how[name]}})
		}); err != nil {
			// The removal stands (or failed) all the same; say that it is
			// not in the audit trail rather than drop it silently.
			b.log.Error("reconcile: audit event not recorded", "target", t.Name, "account", name, "action", action, "err", err)
			res.Errors = append(res.Errors, fmt.Sprintf("record %s of %s in the audit trail: %v", action, name, err))
		}
		if b.hooks.Orphan != nil {
			b.hooks.Orphan(t.Name, name)
		}
	}
	if len(missing)+len(stuck) > 0 {
		err := b.store.Update(ctx, func(tx mayfly.Tx) error {
			// A store may run this again (a deadlock, or another replica's
			// append): start the lists afresh.
			res.LeasesMissing, res.ProvisioningFinished = res.LeasesMissing[:0], res.ProvisioningFinished[:0]
			for _, l := range missing {
				cur, err := tx.GetLease(l.ID)
				if err != nil || cur.State != mayfly.LeaseActive {
					continue
				}
				// Revoked like any other end: the connector's revocation
				// succeeds for an absent account and verifies it is gone.
				cur.State, cur.EndReason, cur.DueAt = mayfly.LeaseRevoking, mayfly.EndMissing, now
				if err := tx.UpdateLease(cur); err != nil {
					return err
				}
				if err := b.endExtensions(tx, c, cur.ID, "lease ended ("+mayfly.EndMissing+")"); err != nil {
					return err
				}
				if err := b.audit(tx, c, "lease.missing", nil, cur, "the account vanished from the target; revoking", map[string]string{"username": cur.Username, "end_reason": mayfly.EndMissing}); err != nil {
					return err
				}
				res.LeasesMissing = append(res.LeasesMissing, cur.ID)
			}
			for _, l := range stuck {
				cur, err := tx.GetLease(l.ID)
				if err != nil || cur.State != mayfly.LeaseProvisioning {
					continue
				}
				cur.State, cur.EndReason, cur.DueAt = mayfly.LeaseRevoking, mayfly.EndFailed, now
				if err := tx.UpdateLease(cur); err != nil {
					return err
				}
				if err := b.audit(tx, c, "lease.recover", nil, cur, "provisioning did not finish; undoing", nil); err != nil {
					return err
				}
				res.ProvisioningFinished = append(res.ProvisioningFinished, cur.ID)
			}
			return nil
		})
		if err != nil {
			res.Errors = append(res.Errors, "record: "+err.Error())
		}
		b.poke()
	}
	b.committed()
	return res
}

// stillMissing returns the leases of ls whose accounts a second listing,
// made after the leases were read, still does not find. A one-call issue
// records its lease active before the target commits the account (see
// commitRecorded), moments later: a lease read active whose account was
// being committed while the accounts were listed is not missing. This
// replica's own commits in flight are waited for first; another replica's
// commit that outlasts the leases' reading and the second listing ends
// its lease as missing, early, which is the safe side.
func (b *Broker) stillMissing(ctx context.Context, conn mayfly.Connector, t mayfly.Target, ls []*mayfly.Lease, res *ReconcileResult) []*mayfly.Lease {
	for _, l := range ls {
		b.awaitCommit(ctx, l.ID)
	}
	accts, err := listAccounts(ctx, conn, t)
	if err != nil {
		res.Errors = append(res.Errors, "list accounts again: "+Scrub(mayfly.ErrorMessageOrText(err)))
		return nil
	}
	found := map[string]bool{}
	for _, a := range accts {
		found[a.Name] = true
	}
	var out []*mayfly.Lease
	for _, l := range ls {
		if !found[l.Username] {
			out = append(out, l)
		}
	}
	return out
}

// listAccounts lists the accounts under t's prefix, for at most two
// minutes.
func listAccounts(ctx context.Context, conn mayfly.Connector, t mayfly.Target) ([]mayfly.Account, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return conn.Accounts(ctx, mayfly.AccountsRequest{Prefix: t.Prefix})
}

func has(m map[string]mayfly.Account, name string) bool {
	_, ok := m[name]
	return ok
}

// issued reports whether a lease of this store on target was ever given
// the account name (Mayfly issued it), and whether the account is busy: a
// lease for it ended after t (its revocation raced the listing), or a live
// lease of another target holds it (two targets on one server), so it is
// no orphan.
func (b *Broker) issued(ctx context.Context, target, username string, t time.Time) (issued, busy bool, err error) {
	err = b.store.View(ctx, func(tx mayfly.Tx) error {
		ls, err := tx.ListLeases(mayfly.LeaseFilter{Username: username})
		for _, l := range ls {
			if l.State.Live() {
				busy = busy || l.Target != target
			} else if !l.EndedAt.Before(t) {
				busy = true
			}
			if l.Target == target {
				issued = true
			}
		}
		return err
	})
	return issued, busy, err
}

// alertUnmanaged raises an alert for each account in names (unmanaged
// accounts and superusers under the prefix of target) not alerted before,
// remembering in the store which ones were.
func (b *Broker) alertUnmanaged(ctx context.Context, target string, names []string) {
	key := "reconcile_reported:" + target
	var fresh []string
	err := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		fresh = nil
		prev, err := tx.GetSetting(key)
		if err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			return err
		}
		seen := strings.Fields(prev)
		for _, n := range names {
			if !slices.Contains(seen, n) {
				fresh = append(fresh, n)
			}
		}
		cur := strings.Join(slices.Sorted(slices.Values(names)), " ")
		if cur == prev {
			return nil
		}
		return tx.PutSetting(key, cur)
	})
	if err != nil {
		b.log.Error("record reported accounts", "target", target, "err", err)
		return
	}
	for _, n := range fresh {
		b.Alert(ctx, "alert.unmanaged_account", target, "", "account "+n+" on "+target+" is under the prefix but Mayfly did not make it",
			"the account carries no mark of this installation and no lease of this store was given its name (or it is a superuser); it was left in place",
			"find out who created it; remove it by hand, or rename it out of the prefix; remove_unmarked: true on the target lets the reconciler remove such accounts (never superusers)")
	}
}

// InventoryAccount is one account on a target, managed by Mayfly or not.
type InventoryAccount struct {
	mayfly.Account
	// Managed is true when Mayfly made the account: it is under the
	// target's prefix and carries this installation's mark, or a lease of
	// this store was given its name.
	Managed bool `json:"managed"`
}

// Inventory lists every account on a target with what it can do, marking
// those Mayfly manages: the rest are standing privileges (admins only).
func (b *Broker) Inventory(ctx context.Context, c Caller, target string) ([]InventoryAccount, error) {
	if !c.Admin {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "the inventory needs an admin")
	}
	t, ok := b.cfg.Load().Targets[target]
	if !ok {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "unknown target %q", target)
	}
	conn, ok := b.connectors[target]
	if !ok {
		return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "target %q has no connector", target)
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	accts, err := conn.Accounts(actx, mayfly.AccountsRequest{})
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "list accounts on %s: %s", target, Scrub(mayfly.ErrorMessageOrText(err)))
	}
	out := make([]InventoryAccount, 0, len(accts))
	for _, a := range accts {
		managed := false
		if t.Prefix != "" && strings.HasPrefix(a.Name, t.Prefix) {
			// Under the prefix is not enough: Mayfly made it only if it
			// carries the mark or a lease of this store was given its name.
			managed = a.Marked
			if !managed {
				issued, _, err := b.issued(ctx, target, a.Name, time.Time{})
				if err != nil {
					return nil, err
				}
				managed = issued
			}
		}
		out = append(out, InventoryAccount{Account: a, Managed: managed})
	}
	return out, nil
}

// RunReconciler reconciles every target each interval until ctx ends.
func (b *Broker) RunReconciler(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		return nil
	}
	t := mayfly.NewTicker(b.clock, every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			res, err := b.Reconcile(ctx, System, "")
			if err != nil {
				b.log.Error("reconcile", "err", err)
				continue
			}
			for _, r := range res {
				if len(r.OrphansRemoved)+len(r.Unmanaged)+len(r.SuperusersKept)+len(r.LeasesMissing)+len(r.ProvisioningFinished)+len(r.Errors) > 0 {
					b.log.Info("reconciled", "target", r.Target, "orphans_removed", len(r.OrphansRemoved),
						"unmanaged", len(r.Unmanaged), "superusers_kept", len(r.SuperusersKept),
						"leases_missing", len(r.LeasesMissing), "provisioning_finished", len(r.ProvisioningFinished),
						"errors", strings.Join(r.Errors, "; "))
				}
			}
		}
	}
}

// StandingTarget is one target's standing privileges next to its
// Mayfly-managed access.
type StandingTarget struct {
	Target string `json:"target"`
	Kind   string `json:"kind"`
	// Unmanaged are accounts that can log in and that Mayfly does not
	// manage: the standing privileges left to eliminate.
	Unmanaged []InventoryAccount `json:"unmanaged"`
	// Managed are the live leases: access that ends by itself.
	Managed []*mayfly.Lease `json:"managed"`
	Error   string          `json:"error,omitempty"`
}

// Standing lists, for every target, the unmanaged accounts that can log in
// beside the live Mayfly leases (admins only).
func (b *Broker) Standing(ctx context.Context, c Caller) ([]StandingTarget, error) {
	if !c.Admin {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "the standing-privilege report needs an admin")
	}
	cfg := b.cfg.Load()
	var names []string
	for n := range cfg.Targets {
		names = append(names, n)
	}
	slices.Sort(names)
	out := []StandingTarget{}
	for _, n := range names {
		st := StandingTarget{Target: n, Kind: cfg.Targets[n].Kind, Unmanaged: []InventoryAccount{}, Managed: []*mayfly.Lease{}}
		inv, err := b.Inventory(ctx, c, n)
		if err != nil {
			st.Error = mayfly.ErrorMessage(err)
		}
		for _, a := range inv {
			if !a.Managed && a.CanLogin {
				st.Unmanaged = append(st.Unmanaged, a)
			}
		}
		err = b.store.View(ctx, func(tx mayfly.Tx) error {
			ls, err := tx.ListLeases(mayfly.LeaseFilter{Target: n, States: []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking}})
			st.Managed = append(st.Managed, ls...)
			return err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}
