package broker

import (
	"context"
	"fmt"
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
	// OrphansRemoved are managed accounts no live lease explains; removed.
	OrphansRemoved []string `json:"orphans_removed"`
	// LeasesMissing are live leases whose account had vanished; ended.
	LeasesMissing []string `json:"leases_missing"`
	// ProvisioningFinished are leases stuck in provisioning, handed to the
	// scheduler to undo.
	ProvisioningFinished []string `json:"provisioning_finished"`
	Errors               []string `json:"errors"`
	Duration             string   `json:"duration"`
}

// Reconcile compares each target's managed accounts (those starting with
// its prefix) with live leases: accounts with no live lease are orphans and
// are removed; active leases whose account has vanished are ended as
// missing; leases stuck in provisioning are undone. target "" means every
// target. Accounts are listed before leases, so an account created for a
// new lease meanwhile is never taken for an orphan (its intent is committed
// before the account exists).
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
	res := ReconcileResult{Target: t.Name, OrphansRemoved: []string{}, LeasesMissing: []string{}, ProvisioningFinished: []string{}, Errors: []string{}}
	defer func() { res.Duration = time.Since(start).Round(time.Millisecond).String() }()
	conn, ok := b.connectors[t.Name]
	if !ok {
		res.Errors = append(res.Errors, "no connector")
		return res
	}
	listedAt := b.clock.Now().UTC()
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	accts, err := conn.Accounts(actx, mayfly.AccountsRequest{Prefix: t.Prefix})
	cancel()
	if err != nil {
		res.Errors = append(res.Errors, "list accounts: "+Scrub(mayfly.ErrorMessageOrText(err)))
		return res
	}
	present := map[string]bool{}
	for _, a := range accts {
		if strings.HasPrefix(a.Name, t.Prefix) {
			present[a.Name] = true
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
		case l.State == mayfly.LeaseActive && !present[l.Username] && l.CreatedAt.Before(listedAt):
			missing = append(missing, l)
		case l.State == mayfly.LeaseProvisioning && now.Sub(l.CreatedAt) > b.provTO:
			stuck = append(stuck, l)
		}
	}
	var orphans []string
	for name := range present {
		if !explained[name] && !b.endedSince(ctx, name, listedAt) {
			orphans = append(orphans, name)
		}
	}
	slices.Sort(orphans)
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
		b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
			return tx.AppendAudit(&mayfly.AuditEvent{Time: b.clock.Now().UTC(), Actor: c.User, Action: action,
				Subject: "target:" + t.Name, Target: t.Name, Reason: note, Source: c.Source,
				Data: map[string]string{"account": name, "end_reason": mayfly.EndOrphan}})
		})
		if b.hooks.Orphan != nil {
			b.hooks.Orphan(t.Name, name)
		}
	}
	if len(missing)+len(stuck) > 0 {
		err := b.store.Update(ctx, func(tx mayfly.Tx) error {
			for _, l := range missing {
				cur, err := tx.GetLease(l.ID)
				if err != nil || cur.State != mayfly.LeaseActive {
					continue
				}
				cur.State, cur.EndReason, cur.EndedAt = mayfly.LeaseRevoked, mayfly.EndMissing, now
				if err := tx.UpdateLease(cur); err != nil {
					return err
				}
				if err := b.audit(tx, c, "lease.missing", nil, cur, "the account vanished from the target", map[string]string{"username": cur.Username, "end_reason": mayfly.EndMissing}); err != nil {
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

// endedSince reports whether a lease for the account ended after t: its
// revocation raced the listing, so the account is no orphan.
func (b *Broker) endedSince(ctx context.Context, username string, t time.Time) bool {
	var ended bool
	b.store.View(ctx, func(tx mayfly.Tx) error {
		ls, err := tx.ListLeases(mayfly.LeaseFilter{Username: username})
		for _, l := range ls {
			if !l.EndedAt.Before(t) {
				ended = true
			}
		}
		return err
	})
	return ended
}

// InventoryAccount is one account on a target, managed by Mayfly or not.
type InventoryAccount struct {
	mayfly.Account
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
		out = append(out, InventoryAccount{Account: a, Managed: strings.HasPrefix(a.Name, t.Prefix)})
	}
	return out, nil
}

// RunReconciler reconciles every target each interval until ctx ends.
func (b *Broker) RunReconciler(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		return nil
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			res, err := b.Reconcile(ctx, System, "")
			if err != nil {
				b.log.Error("reconcile", "err", err)
				continue
			}
			for _, r := range res {
				if len(r.OrphansRemoved)+len(r.LeasesMissing)+len(r.ProvisioningFinished)+len(r.Errors) > 0 {
					b.log.Info("reconciled", "target", r.Target, "orphans_removed", len(r.OrphansRemoved),
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
