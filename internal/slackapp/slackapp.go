// Package slackapp lets approvers decide access requests in Slack. A
// request that waits for approval gets one message with Approve and Deny
// buttons in its approvers' channel; the message is updated in place as
// approvals, the decision or the lapse come in, whoever decided and
// through whatever interface (Slack, the API, the CLI, the web app). The
// requester gets a direct message when the request is approved, denied or
// lapses, and when the lease is about to expire.
//
// Button clicks arrive at POST /v1/integrations/slack/interactions (each
// request's Slack signature and timestamp verified, a replay refused by
// every replica sharing the store) or over a Socket Mode connection; both
// feed one handler, which maps the Slack user to a Mayfly user and calls
// the broker's own Approve and Deny, so the rules of the API apply.
//
// Like the notifications, the sender reads the audit trail after a cursor
// kept in the store and records where each request's message is
// (mayfly.ChatMessage), so delivery survives restarts; it runs on one
// replica at a time (cluster.RunWhileLeader).
package slackapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
)

// Defaults.
const (
	DefaultExpiryWarning = 5 * time.Minute
	DefaultPollInterval  = 10 * time.Second
	// ReplayWindow is how long a request's signature is remembered: Slack
	// signatures older than five minutes are refused anyway, and a
	// timestamp may be up to five minutes ahead of this server's clock.
	ReplayWindow = 10 * time.Minute
	// DefaultAPIURL is Slack's Web API.
	DefaultAPIURL = "https://slack.com/api/"
	// InteractionsPath receives interactions over HTTP.
	InteractionsPath = "/v1/integrations/slack/interactions"
)

// Config is the slack section of the configuration file. Slack is off
// when BotTokenEnv is empty.
type Config struct {
	// BotTokenEnv names the environment variable holding the bot token
	// (xoxb-...), with the scopes chat:write, im:write, users:read and,
	// for MatchEmail, users:read.email.
	BotTokenEnv string `yaml:"bot_token_env"`
	// SigningSecretEnv names the environment variable holding the app's
	// signing secret: interactions then arrive over HTTP, at
	// /v1/integrations/slack/interactions.
	SigningSecretEnv string `yaml:"signing_secret_env"`
	// AppTokenEnv names the environment variable holding an app-level
	// token (xapp-..., scope connections:write): interactions then arrive
	// over Socket Mode, an outbound connection, for installations Slack
	// cannot reach.
	AppTokenEnv string `yaml:"app_token_env"`
	// DefaultChannel receives the approval messages of requests whose
	// policy names no slack_channel (a channel id such as C0123ABCD, or
	// #name). With neither, a request gets no approval message.
	DefaultChannel string `yaml:"default_channel"`
	// APIURL is Slack's Web API (default https://slack.com/api/); tests
	// point it at a fake.
	APIURL string `yaml:"api_url"`
	// MatchEmail, when true, maps a Slack user without a slack_id to the
	// Mayfly user with the same email address (users.info), and finds a
	// requester's Slack account by email (users.lookupByEmail).
	MatchEmail bool `yaml:"match_email"`
	// BaseURL of Mayfly, for an "Open in Mayfly" button (optional).
	BaseURL string `yaml:"base_url"`
	// ExpiryWarning is how long before a lease expires its requester gets
	// a direct message (default 5m; leases shorter than that get none).
	ExpiryWarning time.Duration `yaml:"expiry_warning"`
	// PollInterval is how often the sender looks for work when nothing
	// wakes it (default 10s).
	PollInterval time.Duration `yaml:"poll_interval"`
}

// Enabled reports whether Slack is configured.
func (c Config) Enabled() bool { return c.BotTokenEnv != "" }

var (
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	channelRE = regexp.MustCompile(`^(#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{2,30})$`)
	userIDRE  = regexp.MustCompile(`^[UW][A-Z0-9]{2,30}$`)
)

// ValidChannel reports whether s is a channel id or #name.
func ValidChannel(s string) bool { return channelRE.MatchString(s) }

// ValidUserID reports whether s is a Slack user id (U0123ABCD).
func ValidUserID(s string) bool { return userIDRE.MatchString(s) }

// Validate checks c and returns the first problem as an EINVALID error.
// Environment variables are read by New, not here.
func Validate(c Config) error {
	bad := func(format string, args ...any) error {
		return mayfly.Errorf(mayfly.EINVALID, "slack: "+format, args...)
	}
	if !c.Enabled() {
		if c != (Config{}) {
			return bad("bot_token_env is required (the other slack settings need it)")
		}
		return nil
	}
	for _, e := range [][2]string{{"bot_token_env", c.BotTokenEnv}, {"signing_secret_env", c.SigningSecretEnv}, {"app_token_env", c.AppTokenEnv}} {
		if e[1] != "" && !envNameRE.MatchString(e[1]) {
			return bad("%s %q is not an environment variable name", e[0], e[1])
		}
	}
	if c.SigningSecretEnv == "" && c.AppTokenEnv == "" {
		return bad("set signing_secret_env (clicks arrive over HTTP) or app_token_env (Socket Mode), or both: otherwise the buttons do nothing")
	}
	if c.DefaultChannel != "" && !ValidChannel(c.DefaultChannel) {
		return bad("default_channel %q: give a channel id (C0123ABCD) or #name", c.DefaultChannel)
	}
	for _, u := range [][2]string{{"api_url", c.APIURL}, {"base_url", c.BaseURL}} {
		if u[1] == "" {
			continue
		}
		p, err := url.Parse(u[1])
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return bad("%s %q must be an absolute http or https URL", u[0], u[1])
		}
	}
	if c.ExpiryWarning < 0 || c.PollInterval < 0 {
		return bad("expiry_warning and poll_interval must not be negative")
	}
	return nil
}

// Directory answers who is who: the configured users (and those an
// identity provider provisioned), their groups, Slack ids and emails.
type Directory interface {
	// User returns the groups of a known user and whether they are an
	// administrator; ok is false for an unknown user.
	User(name string) (groups []string, admin, ok bool)
	// BySlackID returns the user whose slack_id is id.
	BySlackID(id string) (name string, ok bool)
	// SlackID returns a user's slack_id, "" when none.
	SlackID(name string) string
	// ByEmail returns the user with this email address.
	ByEmail(email string) (name string, ok bool)
	// Email returns a user's email address, "" when unknown.
	Email(name string) string
}

// Options are what an App needs besides its Config.
type Options struct {
	Store  mayfly.Store
	Broker *broker.Broker
	Dir    Directory
	// Channels maps a policy name to its approvers' channel (the
	// policy's slack_channel).
	Channels map[string]string
	Getenv   func(string) string
	Logger   *slog.Logger
	Clock    mayfly.Clock
	// HTTPClient talks to Slack (default: a client with a 10s timeout).
	HTTPClient *http.Client
}

// App is the Slack integration: the sender (Run), the HTTP endpoint
// (Handler) and Socket Mode (RunSocketMode).
type App struct {
	cfg      Config
	store    mayfly.Store
	b        *broker.Broker
	dir      Directory
	log      *slog.Logger
	clock    mayfly.Clock
	api      *slack.Client
	apiURL   string
	secret   string // signing secret, "" without HTTP interactions
	appToken string // app-level token, "" without Socket Mode
	hc       *http.Client
	warning  time.Duration
	poll     time.Duration
	baseURL  string

	mu       sync.RWMutex
	channels map[string]string // policy → channel

	dmMu sync.Mutex
	dms  map[string]string // Slack user id → DM channel id

	wake chan struct{}
}

// New reads the secrets c names from the environment and returns an App.
// It touches neither the store nor the network.
func New(c Config, o Options) (*App, error) {
	if err := Validate(c); err != nil {
		return nil, err
	}
	if !c.Enabled() {
		return nil, errors.New("slack: not configured")
	}
	if o.Store == nil || o.Broker == nil || o.Dir == nil {
		return nil, errors.New("slack: a store, a broker and a directory are required")
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	env := func(name, what string) (string, error) {
		if name == "" {
			return "", nil
		}
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return "", mayfly.Errorf(mayfly.EINVALID, "slack: environment variable %s (%s) is not set", name, what)
		}
		return v, nil
	}
	token, err := env(c.BotTokenEnv, "bot_token_env")
	if err != nil {
		return nil, err
	}
	secret, err := env(c.SigningSecretEnv, "signing_secret_env")
	if err != nil {
		return nil, err
	}
	appToken, err := env(c.AppTokenEnv, "app_token_env")
	if err != nil {
		return nil, err
	}
	a := &App{cfg: c, store: o.Store, b: o.Broker, dir: o.Dir, log: o.Logger, clock: o.Clock, hc: o.HTTPClient,
		secret: secret, appToken: appToken, dms: map[string]string{}, wake: make(chan struct{}, 1),
		warning: c.ExpiryWarning, poll: c.PollInterval, baseURL: strings.TrimRight(c.BaseURL, "/")}
	if a.log == nil {
		a.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if a.clock == nil {
		a.clock = mayfly.SystemClock{}
	}
	if a.hc == nil {
		a.hc = &http.Client{Timeout: 10 * time.Second,
			// A redirected call would carry the token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if a.warning == 0 {
		a.warning = DefaultExpiryWarning
	}
	if a.poll == 0 {
		a.poll = DefaultPollInterval
	}
	a.apiURL = c.APIURL
	if a.apiURL == "" {
		a.apiURL = DefaultAPIURL
	}
	if !strings.HasSuffix(a.apiURL, "/") {
		a.apiURL += "/"
	}
	opts := []slack.Option{slack.OptionAPIURL(a.apiURL), slack.OptionHTTPClient(a.hc)}
	if appToken != "" {
		opts = append(opts, slack.OptionAppLevelToken(appToken))
	}
	a.api = slack.New(token, opts...)
	a.SetChannels(o.Channels)
	return a, nil
}

// SetChannels replaces the policy → channel map (on a configuration
// reload).
func (a *App) SetChannels(m map[string]string) {
	c := map[string]string{}
	for k, v := range m {
		if v != "" {
			c[k] = v
		}
	}
	a.mu.Lock()
	a.channels = c
	a.mu.Unlock()
}

// channelFor returns the approvers' channel of a policy.
func (a *App) channelFor(policyName string) string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if c := a.channels[policyName]; c != "" {
		return c
	}
	return a.cfg.DefaultChannel
}

// HTTPInteractions reports whether interactions arrive over HTTP.
func (a *App) HTTPInteractions() bool { return a.secret != "" }

// SocketMode reports whether interactions arrive over Socket Mode.
func (a *App) SocketMode() bool { return a.appToken != "" }

// Notify wakes the sender to look for new events now. It never blocks.
func (a *App) Notify() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// slackErr describes an error of a Slack call without anything secret:
// the Web API's error code, or the transport's error without the URL.
func slackErr(what string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", what, ue.Err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// permanent reports whether a Slack error will not go away by retrying
// (the Web API answered ok:false for a reason other than a rate limit).
func permanent(err error) bool {
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return false
	}
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		switch se.Err {
		case "ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout":
			return false
		}
		return true
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
