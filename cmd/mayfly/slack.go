package main

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/slackapp"
)

// slackDirectory answers the Slack app's questions about users: the
// configured users (their slack_id, email, groups) and, with SCIM, the
// users and groups the identity provider provisioned.
type slackDirectory struct {
	mu      sync.RWMutex
	users   map[string]config.User
	bySlack map[string]string
	isAdmin func(name string, groups []string) bool
	scim    *scimDirectory // nil without SCIM
}

func (d *slackDirectory) load(cfg *config.Config) {
	users, bySlack := map[string]config.User{}, map[string]string{}
	for _, u := range cfg.Users {
		users[u.Name] = u
		if u.SlackID != "" {
			bySlack[u.SlackID] = u.Name
		}
	}
	d.mu.Lock()
	d.users, d.bySlack, d.isAdmin = users, bySlack, cfg.IsAdmin
	d.mu.Unlock()
}

func (d *slackDirectory) User(name string) ([]string, bool, bool) {
	d.mu.RLock()
	u, ok := d.users[name]
	isAdmin := d.isAdmin
	d.mu.RUnlock()
	groups := slices.Clone(u.Groups)
	if d.scim != nil {
		if extra := d.scim.Groups(name); len(extra) > 0 {
			ok = true
			groups = append(groups, extra...)
			slices.Sort(groups)
			groups = slices.Compact(groups)
		}
	}
	if !ok {
		return nil, false, false
	}
	return groups, isAdmin(name, groups), true
}

func (d *slackDirectory) BySlackID(id string) (string, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n, ok := d.bySlack[id]
	return n, ok
}

func (d *slackDirectory) SlackID(name string) string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.users[name].SlackID
}

// ByEmail finds the user with this address: a configured user's email,
// or an active SCIM user's (the identity provider's) address.
func (d *slackDirectory) ByEmail(email string) (string, bool) {
	d.mu.RLock()
	for _, u := range d.users {
		if u.Email != "" && strings.EqualFold(u.Email, email) {
			d.mu.RUnlock()
			return u.Name, true
		}
	}
	d.mu.RUnlock()
	if d.scim == nil {
		return "", false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	us, err := d.scim.ListUsers(ctx)
	if err != nil {
		return "", false
	}
	for _, u := range us {
		if u.Active && slices.ContainsFunc(u.Emails, func(e string) bool { return strings.EqualFold(e, email) }) {
			return u.UserName, true
		}
	}
	return "", false
}

func (d *slackDirectory) Email(name string) string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.users[name].Email
}

// newSlackApp returns the Slack app of cfg, or nil when Slack is off.
func newSlackApp(ctx context.Context, cfg *config.Config, st mayfly.Store, b *broker.Broker, sd *scimDirectory,
	getenv func(string) string, log *slog.Logger) (*slackapp.App, *slackDirectory, error) {
	if !cfg.Slack.Enabled() {
		return nil, nil, nil
	}
	dir := &slackDirectory{scim: sd}
	dir.load(cfg)
	app, err := slackapp.New(cfg.Slack, slackapp.Options{Store: st, Broker: b, Dir: dir, Channels: cfg.SlackChannels(),
		Getenv: getenv, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	if err := app.Start(ctx); err != nil {
		return nil, nil, err
	}
	return app, dir, nil
}

// slackRoute serves the Slack interactions endpoint, which Slack's
// signature authenticates, ahead of the API's bearer authentication.
func slackRoute(h http.Handler, app *slackapp.App) http.Handler {
	if app == nil || !app.HTTPInteractions() {
		return h
	}
	sh := app.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == slackapp.InteractionsPath {
			sh.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
