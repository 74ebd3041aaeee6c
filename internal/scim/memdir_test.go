package scim

import (
	"context"
	"slices"
	"sync"
)

// memDirectory is an in-memory Directory that records deprovisioning, as
// the broker-backed one suspends users.
type memDirectory struct {
	mu        sync.Mutex
	users     map[string]*User
	groups    map[string]*Group
	suspended []string // user names, in order
}

func newMemDirectory() *memDirectory {
	return &memDirectory{users: map[string]*User{}, groups: map[string]*Group{}}
}

func (d *memDirectory) userCopy(u *User) *User {
	c := cloneUser(u)
	c.Groups = nil
	for _, g := range d.groups {
		if slices.Contains(g.Members, u.ID) {
			name, _ := GroupName(g.DisplayName)
			c.Groups = append(c.Groups, name)
		}
	}
	slices.Sort(c.Groups)
	return c
}

func (d *memDirectory) CreateUser(ctx context.Context, u *User) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, o := range d.users {
		if o.UserName == u.UserName {
			return ErrConflict
		}
	}
	d.users[u.ID] = cloneUser(u)
	return nil
}

func (d *memDirectory) GetUser(ctx context.Context, id string) (*User, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, ok := d.users[id]
	if !ok {
		return nil, ErrNotFound
	}
	return d.userCopy(u), nil
}

func (d *memDirectory) FindUserByName(ctx context.Context, name string) (*User, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range d.users {
		if u.UserName == name {
			return d.userCopy(u), nil
		}
	}
	return nil, ErrNotFound
}

func (d *memDirectory) ListUsers(ctx context.Context) ([]*User, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*User
	for _, u := range d.users {
		out = append(out, d.userCopy(u))
	}
	return out, nil
}

func (d *memDirectory) ReplaceUser(ctx context.Context, u *User) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	old, ok := d.users[u.ID]
	if !ok {
		return ErrNotFound
	}
	for _, o := range d.users {
		if o.UserName == u.UserName && o.ID != u.ID {
			return ErrConflict
		}
	}
	if old.Active && !u.Active {
		d.suspended = append(d.suspended, u.UserName)
	}
	d.users[u.ID] = cloneUser(u)
	return nil
}

func (d *memDirectory) DeleteUser(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, ok := d.users[id]
	if !ok {
		return ErrNotFound
	}
	if u.Active {
		d.suspended = append(d.suspended, u.UserName)
	}
	delete(d.users, id)
	for _, g := range d.groups {
		g.Members = slices.DeleteFunc(g.Members, func(m string) bool { return m == id })
	}
	return nil
}

func (d *memDirectory) CreateGroup(ctx context.Context, g *Group) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.groups[g.ID] = cloneGroup(g)
	return nil
}

func (d *memDirectory) GetGroup(ctx context.Context, id string) (*Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.groups[id]
	if !ok {
		return nil, ErrNotFound
	}
	return cloneGroup(g), nil
}

func (d *memDirectory) ListGroups(ctx context.Context) ([]*Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*Group
	for _, g := range d.groups {
		out = append(out, cloneGroup(g))
	}
	return out, nil
}

func (d *memDirectory) ReplaceGroup(ctx context.Context, g *Group) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.groups[g.ID]; !ok {
		return ErrNotFound
	}
	d.groups[g.ID] = cloneGroup(g)
	return nil
}

func (d *memDirectory) DeleteGroup(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.groups[id]; !ok {
		return ErrNotFound
	}
	delete(d.groups, id)
	return nil
}

func (d *memDirectory) suspendedUsers() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.suspended)
}
