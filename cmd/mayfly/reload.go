package main

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/notify"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// needsRestart lists what changed from the running configuration old to
// next that a reload does not apply (the server set it up at start), each
// naming what changed but no secret. Users, admins, targets' grants and
// policies reload; these need a restart.
func needsRestart(old, next *config.Config) []string {
	var out []string
	if old.Listen != next.Listen {
		out = append(out, fmt.Sprintf("listen: %s → %s", old.Listen, next.Listen))
	}
	if !old.Store.Equal(next.Store) {
		out = append(out, "store: the database changed")
	}
	if old.StateDir != next.StateDir {
		out = append(out, "state_dir changed")
	}
	if old.TLS.Enabled() != next.TLS.Enabled() || old.InsecureHTTP != next.InsecureHTTP {
		out = append(out, "tls turned on or off, or insecure_http changed")
	}
	out = append(out, notificationChanges(old.Notifications, next.Notifications)...)
	for _, s := range []struct {
		name      string
		old, next any
	}{
		{"scheduler", old.Scheduler, next.Scheduler},
		{"log", old.Log, next.Log},
		{"ssh_ca", old.SSHCA, next.SSHCA},
		{"audit", old.Audit, next.Audit},
		{"reconcile", old.Reconcile, next.Reconcile},
		{"scim", old.SCIM, next.SCIM},
		{"metrics", old.Metrics, next.Metrics},
		{"slack", old.Slack, next.Slack},
		{"seal", old.Seal, next.Seal},
		{"auth.oidc", old.Auth.OIDC, next.Auth.OIDC},
		{"auth.session_ttl", old.Auth.SessionTTL, next.Auth.SessionTTL},
	} {
		if !reflect.DeepEqual(s.old, s.next) {
			out = append(out, s.name+" settings changed")
		}
	}
	var added []string
	for _, t := range next.Targets {
		if !slices.ContainsFunc(old.Targets, func(o2 mayfly.Target) bool { return o2.Name == t.Name }) {
			added = append(added, t.Name)
		}
	}
	if len(added) > 0 {
		out = append(out, "targets added (not usable until then): "+strings.Join(added, ", "))
	}
	return out
}

// groupWarnings names the approver groups of c's policies that no user of
// c and no SCIM user (when sd is not nil) is in.
func groupWarnings(c *config.Config, sd *scimDirectory) []string {
	has := configGroups(c.Users)
	return policy.ApproverGroupWarnings(c.Policies, func(g string) bool {
		return has(g) || (sd != nil && sd.hasGroup(g))
	})
}

// configGroups reports whether any of users is in a group.
func configGroups(users []config.User) func(string) bool {
	set := map[string]bool{}
	for _, u := range users {
		for _, g := range u.Groups {
			set[g] = true
		}
	}
	return func(g string) bool { return set[g] }
}

// hasGroup reports whether any SCIM user is in group g.
func (d *scimDirectory) hasGroup(g string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, gs := range d.groups {
		if slices.Contains(gs, g) {
			return true
		}
	}
	return false
}

// notificationChanges names the notification channels added, removed or
// changed, and whether the other notification settings changed.
func notificationChanges(old, next notify.Config) []string {
	byName := func(cs []notify.Channel) map[string]notify.Channel {
		m := map[string]notify.Channel{}
		for _, c := range cs {
			m[c.Name] = c
		}
		return m
	}
	o, n := byName(old.Channels), byName(next.Channels)
	var added, removed, changed []string
	for name, c := range n {
		if oc, ok := o[name]; !ok {
			added = append(added, name)
		} else if !reflect.DeepEqual(oc, c) {
			changed = append(changed, name)
		}
	}
	for name := range o {
		if _, ok := n[name]; !ok {
			removed = append(removed, name)
		}
	}
	var out []string
	for _, x := range []struct {
		what  string
		names []string
	}{{"added", added}, {"removed", removed}, {"changed", changed}} {
		if len(x.names) > 0 {
			slices.Sort(x.names)
			out = append(out, "notification channels "+x.what+": "+strings.Join(x.names, ", "))
		}
	}
	old.Channels, next.Channels = nil, nil
	if !reflect.DeepEqual(old, next) {
		out = append(out, "notifications settings changed (expiry_warning, base_url, security_groups, poll_interval or max_backoff)")
	}
	return out
}
