package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/cluster"
	"github.com/mayflyhq/mayfly/internal/scim"
)

// scimDirectory keeps SCIM users and groups in the store's settings and
// turns deprovisioning into the broker's suspension: a user set inactive or
// deleted by the identity provider loses every lease at once.
type scimDirectory struct {
	store mayfly.Store
	b     *broker.Broker
	mu    sync.RWMutex
	// groups caches each user name's SCIM groups for authentication.
	groups map[string][]string
	// seen is the directory's version (scimVersionKey) groups were last
	// loaded at, once loaded, so that changes made through other replicas
	// are followed.
	seen   string
	loaded bool
}

var scimCaller = broker.Caller{User: "scim", Admin: true, Source: "scim"}

const (
	scimUserKey  = "scim_user:"
	scimGroupKey = "scim_group:"
	// scimVersionKey changes (to a new random value) in the transaction
	// of every change to the directory.
	scimVersionKey = "scim.version"
)

func newSCIMDirectory(ctx context.Context, st mayfly.Store, b *broker.Broker) (*scimDirectory, error) {
	d := &scimDirectory{store: st, b: b, groups: map[string][]string{}}
	if _, err := d.reload(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// reload reads the groups of every active user again when the directory's
// version changed since they were last read, and reports whether it did.
func (d *scimDirectory) reload(ctx context.Context) (bool, error) {
	var version string
	err := d.store.View(ctx, func(tx mayfly.Tx) error {
		v, err := tx.GetSetting(scimVersionKey)
		if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
			return nil
		}
		version = v
		return err
	})
	if err != nil {
		return false, err
	}
	d.mu.RLock()
	same := d.loaded && version == d.seen
	d.mu.RUnlock()
	if same {
		return false, nil
	}
	// Read after the version: a change committed meanwhile moves the
	// version again and is read at the next call.
	us, err := d.ListUsers(ctx)
	if err != nil {
		return false, err
	}
	groups := map[string][]string{}
	for _, u := range us {
		if u.Active {
			groups[u.UserName] = u.Groups
		}
	}
	d.mu.Lock()
	d.groups, d.seen, d.loaded = groups, version, true
	d.mu.Unlock()
	return true, nil
}

// follow keeps the cached groups current with the changes the identity
// provider makes through other replicas sharing the store: every interval
// it reads the directory's version, and everything again when it moved.
func (d *scimDirectory) follow(ctx context.Context, every time.Duration, log *slog.Logger) {
	cluster.Follow(ctx, every, func(ctx context.Context) error {
		_, err := d.reload(ctx)
		return err
	}, func(err error) { log.Warn("scim: cannot read the directory's changes", "err", err) })
}

// LockChanges serializes the directory's changes across replicas sharing
// a store (see scim.ChangeLocker): a change through one, such as a group
// PATCH, reads and writes without another's change in between, which
// could otherwise be lost (a member removed through one replica put back
// by a write through another that had read the group before).
func (d *scimDirectory) LockChanges(ctx context.Context) (unlock func(), err error) {
	l, ok := d.store.(mayfly.Locker)
	if !ok {
		return func() {}, nil // one process: the handler's mutex is enough
	}
	return l.Lock(ctx, "scim")
}

// Groups returns the SCIM groups of a Mayfly user.
func (d *scimDirectory) Groups(name string) []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.groups[name]
}

// All returns every active SCIM user's groups, by user name.
func (d *scimDirectory) All() map[string][]string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make(map[string][]string, len(d.groups))
	for n, g := range d.groups {
		out[n] = slices.Clone(g)
	}
	return out
}

func (d *scimDirectory) cache(u *scim.User) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if u.Active {
		d.groups[u.UserName] = u.Groups
	} else {
		delete(d.groups, u.UserName)
	}
}

func list[T any](ctx context.Context, st mayfly.Store, prefix string) ([]*T, error) {
	var out []*T
	err := st.View(ctx, func(tx mayfly.Tx) error {
		m, err := tx.ListSettings(prefix)
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := new(T)
			if err := json.Unmarshal([]byte(m[k]), v); err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

func get[T any](ctx context.Context, st mayfly.Store, key string) (*T, error) {
	var v *T
	err := st.View(ctx, func(tx mayfly.Tx) error {
		s, err := tx.GetSetting(key)
		if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
			return scim.ErrNotFound
		}
		if err != nil {
			return err
		}
		v = new(T)
		return json.Unmarshal([]byte(s), v)
	})
	return v, err
}

// put writes a user or group of the directory, and moves its version.
func put(ctx context.Context, st mayfly.Store, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return st.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.PutSetting(key, string(b)); err != nil {
			return err
		}
		return bumpSCIMVersion(tx)
	})
}

// remove deletes a user or group of the directory, and moves its version.
func remove(ctx context.Context, st mayfly.Store, key string) error {
	return st.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.DeleteSetting(key); err != nil {
			return err
		}
		return bumpSCIMVersion(tx)
	})
}

// bumpSCIMVersion gives the directory a new version: a random one, so
// that two changes committed at once through two replicas never leave
// the version a follower saw between them.
func bumpSCIMVersion(tx mayfly.Tx) error {
	return tx.PutSetting(scimVersionKey, rand.Text())
}

func (d *scimDirectory) setStatus(ctx context.Context, name, status string) error {
	_, _, err := d.b.SetUserStatus(ctx, scimCaller, name, status, "identity provider (SCIM)")
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
		return nil // not a Mayfly user yet: nothing to revoke
	}
	return err
}

func (d *scimDirectory) CreateUser(ctx context.Context, u *scim.User) error {
	if _, err := d.FindUserByName(ctx, u.UserName); err == nil {
		return scim.ErrConflict
	}
	if err := put(ctx, d.store, scimUserKey+u.ID, u); err != nil {
		return err
	}
	d.cache(u)
	if !u.Active {
		return d.setStatus(ctx, u.UserName, broker.UserSuspended)
	}
	return nil
}

func (d *scimDirectory) GetUser(ctx context.Context, id string) (*scim.User, error) {
	return get[scim.User](ctx, d.store, scimUserKey+id)
}

func (d *scimDirectory) FindUserByName(ctx context.Context, name string) (*scim.User, error) {
	us, err := d.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	for _, u := range us {
		if u.UserName == name {
			return u, nil
		}
	}
	return nil, scim.ErrNotFound
}

func (d *scimDirectory) ListUsers(ctx context.Context) ([]*scim.User, error) {
	return list[scim.User](ctx, d.store, scimUserKey)
}

func (d *scimDirectory) ReplaceUser(ctx context.Context, u *scim.User) error {
	old, err := d.GetUser(ctx, u.ID)
	if err != nil {
		return err
	}
	if other, err := d.FindUserByName(ctx, u.UserName); err == nil && other.ID != u.ID {
		return scim.ErrConflict
	}
	if err := put(ctx, d.store, scimUserKey+u.ID, u); err != nil {
		return err
	}
	d.cache(u)
	switch {
	case old.Active && !u.Active:
		return d.setStatus(ctx, u.UserName, broker.UserSuspended)
	case !old.Active && u.Active:
		return d.setStatus(ctx, u.UserName, broker.UserActive)
	}
	return nil
}

func (d *scimDirectory) DeleteUser(ctx context.Context, id string) error {
	u, err := d.GetUser(ctx, id)
	if err != nil {
		return err
	}
	gs, err := d.ListGroups(ctx)
	if err != nil {
		return err
	}
	for _, g := range gs {
		if i := slices.Index(g.Members, id); i >= 0 {
			g.Members = slices.Delete(g.Members, i, i+1)
			if err := put(ctx, d.store, scimGroupKey+g.ID, g); err != nil {
				return err
			}
		}
	}
	if err := remove(ctx, d.store, scimUserKey+id); err != nil {
		return err
	}
	u.Active = false
	d.cache(u)
	return d.setStatus(ctx, u.UserName, broker.UserDeprovisioned)
}

// syncMembers rewrites the Groups of every user from the groups' members.
func (d *scimDirectory) syncMembers(ctx context.Context) error {
	gs, err := d.ListGroups(ctx)
	if err != nil {
		return err
	}
	us, err := d.ListUsers(ctx)
	if err != nil {
		return err
	}
	for _, u := range us {
		var groups []string
		for _, g := range gs {
			if slices.Contains(g.Members, u.ID) {
				if name, ok := scim.GroupName(g.DisplayName); ok {
					groups = append(groups, name)
				}
			}
		}
		slices.Sort(groups)
		if !slices.Equal(groups, u.Groups) {
			u.Groups = groups
			if err := put(ctx, d.store, scimUserKey+u.ID, u); err != nil {
				return err
			}
		}
		d.cache(u)
	}
	return nil
}

func (d *scimDirectory) CreateGroup(ctx context.Context, g *scim.Group) error {
	if err := put(ctx, d.store, scimGroupKey+g.ID, g); err != nil {
		return err
	}
	return d.syncMembers(ctx)
}

func (d *scimDirectory) GetGroup(ctx context.Context, id string) (*scim.Group, error) {
	return get[scim.Group](ctx, d.store, scimGroupKey+id)
}

func (d *scimDirectory) ListGroups(ctx context.Context) ([]*scim.Group, error) {
	return list[scim.Group](ctx, d.store, scimGroupKey)
}

func (d *scimDirectory) ReplaceGroup(ctx context.Context, g *scim.Group) error {
	if _, err := d.GetGroup(ctx, g.ID); err != nil {
		return err
	}
	if err := put(ctx, d.store, scimGroupKey+g.ID, g); err != nil {
		return err
	}
	return d.syncMembers(ctx)
}

func (d *scimDirectory) DeleteGroup(ctx context.Context, id string) error {
	if _, err := d.GetGroup(ctx, id); err != nil {
		return err
	}
	if err := remove(ctx, d.store, scimGroupKey+id); err != nil {
		return err
	}
	return d.syncMembers(ctx)
}
