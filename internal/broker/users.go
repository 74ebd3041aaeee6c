package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
)

// User statuses.
const (
	UserActive        = "active"
	UserSuspended     = "suspended"
	UserDeprovisioned = "deprovisioned"
)

// statusRecheck is how long a broker trusts a user's status or a stored
// token it has read before reading it again from the store: a suspension,
// or a token revoked, through another replica sharing the store is
// enforced here within it.
const statusRecheck = time.Second

// userStatuses caches the stored status of users; a user with no stored
// status is active.
type userStatuses struct {
	mu sync.RWMutex
	m  map[string]userStatus
	// gen counts changes made through this broker, so a status read from
	// the store while one was being made is not cached over it.
	gen uint64
}

type userStatus struct {
	status string
	// at is when it was read from the store, or set.
	at time.Time
}

func (u *userStatuses) get(name string) string {
	s, _ := u.fresh(name, time.Time{})
	return s
}

// fresh returns name's cached status and whether it was read or set after
// since.
func (u *userStatuses) fresh(name string, since time.Time) (string, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	if s, ok := u.m[name]; ok {
		return s.status, s.at.After(since)
	}
	return UserActive, false
}

func (u *userStatuses) generation() uint64 {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.gen
}

// set records a status this broker set, or read at a time when nothing
// had been set through it since gen (pass the current generation).
func (u *userStatuses) set(name, status string, at time.Time, gen uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if gen != u.gen {
		return
	}
	if u.m == nil {
		u.m = map[string]userStatus{}
	}
	u.m[name] = userStatus{status: status, at: at}
}

// change records a status set through this broker.
func (u *userStatuses) change(name, status string, at time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gen++
	if u.m == nil {
		u.m = map[string]userStatus{}
	}
	u.m[name] = userStatus{status: status, at: at}
}

// LoadUserStatuses reads every stored user status; call it at start-up.
func (b *Broker) LoadUserStatuses(ctx context.Context) error {
	now := b.clock.Now()
	gen := b.users.generation()
	return b.store.View(ctx, func(tx mayfly.Tx) error {
		m, err := tx.UserStatuses()
		if err != nil {
			return err
		}
		for n, s := range m {
			b.users.set(n, s, now, gen)
		}
		return nil
	})
}

// UserStatus returns a user's status as this broker last read or set it:
// active, suspended or deprovisioned.
func (b *Broker) UserStatus(name string) string { return b.users.get(name) }

// CurrentUserStatus returns a user's status, read again from the store
// when this broker read it more than statusRecheck ago, so that a change
// made through another replica holds here too. When the store cannot be
// read (within 5 s) it returns the status last known.
func (b *Broker) CurrentUserStatus(ctx context.Context, name string) string {
	now := b.clock.Now()
	if s, ok := b.users.fresh(name, now.Add(-statusRecheck)); ok {
		return s
	}
	gen := b.users.generation()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var st string
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		st, err = tx.GetUserStatus(name)
		return err
	})
	if err != nil {
		// Kept as last known for another statusRecheck: while the store
		// is away, one read a second per user, not one per call.
		b.log.Warn("read user status", "user", name, "err", err)
		st = b.users.get(name)
		b.users.set(name, st, now, gen)
		return st
	}
	if st == "" {
		st = UserActive
	}
	b.users.set(name, st, now, gen)
	return st
}

// UserView is a user as listed by the API.
type UserView struct {
	Name string `json:"name"`
	// Groups are the user's groups in the configuration file.
	Groups []string `json:"groups"`
	// SCIMGroups are the groups the identity provider manages (SCIM).
	SCIMGroups []string `json:"scim_groups,omitempty"`
	Status     string   `json:"status"`
	// Leases counts the user's live leases.
	Leases int `json:"live_leases"`
}

// ListUsers lists configured users with their status (admins only).
func (b *Broker) ListUsers(ctx context.Context, c Caller) ([]UserView, error) {
	if !c.Admin {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "listing users needs an admin")
	}
	cfg := b.cfg.Load()
	live := map[string]int{}
	// Statuses as stored: another replica may have changed one.
	var statuses map[string]string
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		if statuses, err = tx.UserStatuses(); err != nil {
			return err
		}
		ls, err := tx.ListLeases(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking}})
		if err != nil {
			return err
		}
		for _, l := range ls {
			live[l.Requester]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var dir map[string][]string
	if f := b.directory.Load(); f != nil {
		dir = (*f)()
	}
	status := func(name string) string {
		if s := statuses[name]; s != "" {
			return s
		}
		return UserActive
	}
	out := []UserView{}
	for _, name := range cfg.UserOrder {
		g := cfg.Users[name]
		if g == nil {
			g = []string{}
		}
		out = append(out, UserView{Name: name, Groups: g, SCIMGroups: dir[name], Status: status(name), Leases: live[name]})
	}
	// Users only the identity provider knows.
	names := make([]string, 0, len(dir))
	for name := range dir {
		if _, ok := cfg.Users[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		out = append(out, UserView{Name: name, Groups: []string{}, SCIMGroups: dir[name], Status: status(name), Leases: live[name]})
	}
	return out, nil
}

// SetDirectory makes ListUsers show the groups the identity provider
// manages (SCIM): groups returns them by user name.
func (b *Broker) SetDirectory(groups func() map[string][]string) { b.directory.Store(&groups) }

// SetUserStatus suspends, resumes or deprovisions a user (admins only, or
// the identity provider through SCIM). Suspending or deprovisioning
// revokes every live lease of the user (end reason user_suspended) and
// cancels their open requests, in the same transaction as the status
// change; their tokens are refused from that moment. It returns how many
// leases and requests it ended.
func (b *Broker) SetUserStatus(ctx context.Context, c Caller, name, status, reason string) (leases, requests int, err error) {
	if !c.Admin {
		return 0, 0, mayfly.Errorf(mayfly.EFORBIDDEN, "changing a user's status needs an admin")
	}
	switch status {
	case UserActive, UserSuspended, UserDeprovisioned:
	default:
		return 0, 0, mayfly.Errorf(mayfly.EINVALID, "status %q: want active, suspended or deprovisioned", status)
	}
	if _, ok := b.cfg.Load().Users[name]; !ok && !b.knownUser(ctx, name) {
		return 0, 0, mayfly.Errorf(mayfly.ENOTFOUND, "unknown user %q", name)
	}
	var ended []*mayfly.Lease
	err = b.store.Update(ctx, func(tx mayfly.Tx) error {
		ended, requests = nil, 0
		if err := tx.SetUserStatus(name, status); err != nil {
			return err
		}
		action := map[string]string{UserActive: "user.resume", UserSuspended: "user.suspend", UserDeprovisioned: "user.remove"}[status]
		if err := tx.AppendAudit(&mayfly.AuditEvent{Time: b.clock.Now().UTC(), Actor: c.User, Action: action,
			Subject: "user:" + name, Reason: reason, Source: c.Source}); err != nil {
			return err
		}
		if status == UserActive {
			return nil
		}
		var err error
		ended, requests, err = b.endUserAccess(tx, c, name, mayfly.EndUserSuspended, "user "+status)
		if err != nil {
			return err
		}
		return b.revokeUserTokens(tx, c, name, "user "+status)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("set status of user %s: %w", name, err)
	}
	b.users.change(name, status, b.clock.Now())
	if status != UserActive {
		b.tokens.dropUser(name)
	}
	b.poke()
	return len(ended), requests, nil
}

// knownUser reports whether the store knows a status for name, or a
// token of name (a user known from single sign-on has sessions).
func (b *Broker) knownUser(ctx context.Context, name string) bool {
	var st string
	var toks []*mayfly.Token
	b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		if st, err = tx.GetUserStatus(name); err != nil || st != "" {
			return err
		}
		toks, err = tx.ListTokens(mayfly.TokenFilter{User: name})
		return err
	})
	return st != "" || len(toks) > 0
}

// endUserAccess ends, in tx, every live lease of user (end reason
// endReason; an end already decided is kept) and cancels their open
// requests. It returns the leases it ended and how many requests.
func (b *Broker) endUserAccess(tx mayfly.Tx, c Caller, name, endReason, why string) (ended []*mayfly.Lease, requests int, err error) {
	now := b.clock.Now().UTC()
	ls, err := tx.ListLeases(mayfly.LeaseFilter{Requester: name, States: []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive}})
	if err != nil {
		return nil, 0, err
	}
	for _, l := range ls {
		// An active lease is due now. A provisioning one keeps its
		// provisioning deadline: its activation in flight sees the
		// suspension at its compare-and-set and undoes the account (the
		// scheduler does, at the deadline, if the activation died).
		if l.State == mayfly.LeaseActive {
			l.DueAt = now
		}
		l.State = mayfly.LeaseRevoking
		if l.EndReason == "" {
			l.EndReason = endReason
		}
		if err := tx.UpdateLease(l); err != nil {
			return nil, 0, err
		}
		if err := b.audit(tx, c, "lease.revoke", nil, l, why, map[string]string{"end_reason": l.EndReason}); err != nil {
			return nil, 0, err
		}
		ended = append(ended, l)
	}
	rs, err := tx.ListRequests(mayfly.RequestFilter{Requester: name, Open: true})
	if err != nil {
		return nil, 0, err
	}
	for _, r := range rs {
		if r.State == mayfly.RequestApproved && r.LeaseID != "" {
			continue // its lease is handled above
		}
		if err := b.closeRequest(tx, c, r, mayfly.RequestCancelled, "request.cancel", why, nil); err != nil {
			return nil, 0, err
		}
		requests++
	}
	return ended, requests, nil
}

// Reconfigure swaps the configuration, like SetConfig, and applies it to
// what is live: the leases of users the new configuration no longer lists
// are ended (end reason user_removed) and their open requests cancelled,
// as their tokens are refused from now on. It returns how many leases it
// ended.
func (b *Broker) Reconfigure(ctx context.Context, cfg *Config) (int, error) {
	old := b.cfg.Swap(cfg)
	if old == nil {
		return 0, nil
	}
	var removed []string
	for _, name := range old.UserOrder {
		if _, ok := cfg.Users[name]; !ok {
			removed = append(removed, name)
		}
	}
	if len(removed) == 0 {
		return 0, nil
	}
	n := 0
	err := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		n = 0
		for _, name := range removed {
			ended, _, err := b.endUserAccess(tx, System, name, mayfly.EndUserRemoved, "user removed from the configuration")
			if err != nil {
				return err
			}
			n += len(ended)
			if err := b.revokeUserTokens(tx, System, name, "user removed from the configuration"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("end access of users removed from the configuration: %w", err)
	}
	for _, name := range removed {
		b.tokens.dropUser(name)
	}
	b.poke()
	b.committed()
	return n, nil
}
