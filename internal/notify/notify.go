// Package notify tells people about access requests and leases: approvers
// about requests waiting for them, requesters about decisions, activation,
// upcoming expiry and revocation, and security about break-glass access and
// failing revocations. It delivers over webhooks, Slack incoming webhooks
// and email.
//
// The audit trail is the outbox. Every state change commits an audit event;
// each channel reads the events after its own durable cursor, turns them
// into messages, delivers them (retrying with capped exponential backoff)
// and only then advances the cursor. Delivery therefore never blocks a
// request or a revocation, a channel that is down delays only its own
// messages, and nothing is lost across restarts. Delivery is at least once:
// a crash between delivery and the cursor update repeats that message, and
// every message carries a stable id for receivers to deduplicate.
package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Channel types.
const (
	TypeWebhook = "webhook"
	TypeSlack   = "slack"
	TypeEmail   = "email"
)

// Defaults.
const (
	DefaultExpiryWarning = 5 * time.Minute
	DefaultPollInterval  = 10 * time.Second
	DefaultMaxBackoff    = 5 * time.Minute
	DefaultTimeout       = 10 * time.Second
)

// Config is the notifications section of the configuration file.
type Config struct {
	// ExpiryWarning is how long before a lease expires its requester is
	// warned (default 5m). Leases granted for less than this get no
	// warning: the activation notice already says when they expire.
	ExpiryWarning time.Duration `yaml:"expiry_warning"`
	// BaseURL of the Mayfly web interface, for links in messages (optional).
	BaseURL string `yaml:"base_url"`
	// SecurityGroups are told about break-glass access and failing
	// revocations.
	SecurityGroups []string  `yaml:"security_groups"`
	Channels       []Channel `yaml:"channels"`
	// PollInterval is how often channels look for new events when nothing
	// wakes them, and how often upcoming expiries are checked (default 10s).
	PollInterval time.Duration `yaml:"poll_interval"`
	// MaxBackoff caps the delay between delivery retries (default 5m).
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Channel is one way of delivering notifications. Fields that belong to
// one type say so; a channel rejects settings it does not use.
type Channel struct {
	// Name identifies the channel in logs and in its stored cursor; letters,
	// digits, '-' and '_'. Renaming a channel starts it afresh.
	Name string `yaml:"name"`
	// Type is webhook, slack or email.
	Type string `yaml:"type"`
	// URL receives the POSTed messages (webhook, slack). URLEnv names an
	// environment variable holding it instead, for URLs that are secrets.
	URL    string `yaml:"url"`
	URLEnv string `yaml:"url_env"`
	// SecretEnv names the environment variable holding the key that signs
	// each body (webhook, required): HMAC-SHA256 in the header
	// X-Mayfly-Signature: sha256=<hex>.
	SecretEnv string `yaml:"secret_env"`
	// SMTPAddr is the mail server's host:port (email).
	SMTPAddr string `yaml:"smtp_addr"`
	// From is the sender address (email).
	From string `yaml:"from"`
	// UsernameEnv and PasswordEnv name environment variables holding the
	// SMTP credentials (email; both or neither). Credentials are sent only
	// over TLS or to a loopback server.
	UsernameEnv string `yaml:"username_env"`
	PasswordEnv string `yaml:"password_env"`
	// StartTLS requires the server to upgrade the connection to TLS before
	// anything is sent (email).
	StartTLS bool `yaml:"starttls"`
	// Events restricts the channel to these message types (default: all).
	Events []string `yaml:"events"`
	// Timeout bounds one delivery attempt (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

// Directory answers who is who. The broker implements it from the
// configuration.
type Directory interface {
	// Groups returns the groups of a user.
	Groups(user string) []string
	// Email returns a user's email address, "" when unknown.
	Email(user string) string
	// Members returns the users in a group.
	Members(group string) []string
	// RequestInfo returns a request: requester, target, grant, reason,
	// duration and approval steps. It returns an ENOTFOUND *mayfly.Error
	// when there is no such request.
	RequestInfo(ctx context.Context, requestID string) (*mayfly.Request, error)
}

var channelName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate checks c and returns the first problem as an EINVALID error.
// Environment variables are read by New, not here.
func Validate(c Config) error {
	bad := func(format string, args ...any) error {
		return mayfly.Errorf(mayfly.EINVALID, "notifications: "+format, args...)
	}
	if c.ExpiryWarning < 0 {
		return bad("expiry_warning must not be negative")
	}
	if c.PollInterval < 0 {
		return bad("poll_interval must not be negative")
	}
	if c.MaxBackoff < 0 {
		return bad("max_backoff must not be negative")
	}
	if c.BaseURL != "" {
		if err := checkHTTPURL(c.BaseURL); err != nil {
			return bad("base_url: %v", err)
		}
	}
	for _, g := range c.SecurityGroups {
		if strings.TrimSpace(g) == "" {
			return bad("security_groups: empty group name")
		}
	}
	seen := map[string]bool{}
	for i, ch := range c.Channels {
		if !channelName.MatchString(ch.Name) {
			return bad("channel %d: name %q must be 1-64 letters, digits, '-' or '_'", i+1, ch.Name)
		}
		if seen[ch.Name] {
			return bad("channel %q: name used twice", ch.Name)
		}
		seen[ch.Name] = true
		if err := validateChannel(ch); err != nil {
			return bad("channel %q: %v", ch.Name, err)
		}
	}
	return nil
}

func validateChannel(ch Channel) error {
	if ch.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	for _, e := range ch.Events {
		if !slices.Contains(messageTypes, e) {
			return fmt.Errorf("events: unknown message type %q (known: %s)", e, strings.Join(messageTypes, ", "))
		}
	}
	unused := func(field, value string) error {
		if value != "" {
			return fmt.Errorf("%s is not used by %s channels", field, ch.Type)
		}
		return nil
	}
	switch ch.Type {
	case TypeWebhook, TypeSlack:
		for _, f := range [][2]string{{"smtp_addr", ch.SMTPAddr}, {"from", ch.From},
			{"username_env", ch.UsernameEnv}, {"password_env", ch.PasswordEnv}} {
			if err := unused(f[0], f[1]); err != nil {
				return err
			}
		}
		if ch.StartTLS {
			return fmt.Errorf("starttls is not used by %s channels", ch.Type)
		}
		switch {
		case ch.URL == "" && ch.URLEnv == "":
			return errors.New("url or url_env is required")
		case ch.URL != "" && ch.URLEnv != "":
			return errors.New("give url or url_env, not both")
		case ch.URL != "":
			if err := checkHTTPURL(ch.URL); err != nil {
				return fmt.Errorf("url: %w", err)
			}
		}
		if ch.Type == TypeWebhook && ch.SecretEnv == "" {
			return errors.New("secret_env is required: receivers verify the signature")
		}
		if ch.Type == TypeSlack {
			return unused("secret_env", ch.SecretEnv)
		}
	case TypeEmail:
		for _, f := range [][2]string{{"url", ch.URL}, {"url_env", ch.URLEnv}, {"secret_env", ch.SecretEnv}} {
			if err := unused(f[0], f[1]); err != nil {
				return err
			}
		}
		host, port, err := net.SplitHostPort(ch.SMTPAddr)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("smtp_addr %q must be host:port", ch.SMTPAddr)
		}
		if ch.From == "" {
			return errors.New("from is required")
		}
		if _, err := mail.ParseAddress(ch.From); err != nil || strings.ContainsAny(ch.From, "\r\n") {
			return fmt.Errorf("from %q is not an email address", ch.From)
		}
		if (ch.UsernameEnv == "") != (ch.PasswordEnv == "") {
			return errors.New("give both username_env and password_env, or neither")
		}
	case "":
		return errors.New("type is required (webhook, slack or email)")
	default:
		return fmt.Errorf("unknown type %q (webhook, slack or email)", ch.Type)
	}
	return nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an absolute http or https URL")
	}
	return nil
}

// Notifier delivers notifications. Create it with New, start it with Run
// and call Notify after committing audit events.
type Notifier struct {
	store    mayfly.Store
	dir      Directory
	log      *slog.Logger
	baseURL  string
	security []string
	warning  time.Duration
	poll     time.Duration
	// minBackoff and maxBackoff bound the delay between retries.
	minBackoff, maxBackoff time.Duration
	now                    func() time.Time
	workers                []*worker
	running                atomic.Bool
}

// New checks c, reads the secrets its channels name from getenv (nil:
// os.Getenv) and returns a Notifier. It touches neither the store nor the
// network.
func New(store mayfly.Store, c Config, dir Directory, getenv func(string) string, logger *slog.Logger) (*Notifier, error) {
	if err := Validate(c); err != nil {
		return nil, err
	}
	if store == nil || dir == nil {
		return nil, errors.New("notify: a store and a directory are required")
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	n := &Notifier{
		store:      store,
		dir:        dir,
		log:        logger,
		baseURL:    strings.TrimRight(c.BaseURL, "/"),
		security:   c.SecurityGroups,
		warning:    orDefault(c.ExpiryWarning, DefaultExpiryWarning),
		poll:       orDefault(c.PollInterval, DefaultPollInterval),
		minBackoff: time.Second,
		maxBackoff: orDefault(c.MaxBackoff, DefaultMaxBackoff),
		now:        time.Now,
	}
	for _, ch := range c.Channels {
		s, err := newSender(ch, getenv, logger.With("channel", ch.Name))
		if err != nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "notifications: channel %q: %v", ch.Name, err)
		}
		w := &worker{n: n, name: ch.Name, send: s, wake: make(chan struct{}, 1),
			log: logger.With("channel", ch.Name)}
		if len(ch.Events) > 0 {
			w.events = map[string]bool{}
			for _, e := range ch.Events {
				w.events[e] = true
			}
		}
		n.workers = append(n.workers, w)
	}
	return n, nil
}

// orDefault returns v, or def when v is zero.
func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// env reads a required environment variable; the error names the variable,
// never its value.
func env(getenv func(string) string, name, what string) (string, error) {
	v := getenv(name)
	if v == "" {
		return "", fmt.Errorf("environment variable %s (%s) is not set", name, what)
	}
	return v, nil
}

func newSender(ch Channel, getenv func(string) string, log *slog.Logger) (sender, error) {
	timeout := orDefault(ch.Timeout, DefaultTimeout)
	switch ch.Type {
	case TypeWebhook, TypeSlack:
		u := ch.URL
		if ch.URLEnv != "" {
			var err error
			if u, err = env(getenv, ch.URLEnv, "url_env"); err != nil {
				return nil, err
			}
			if err := checkHTTPURL(u); err != nil {
				return nil, fmt.Errorf("url_env %s: %w", ch.URLEnv, err)
			}
		}
		p := newPoster(u, timeout)
		if ch.Type == TypeSlack {
			return &slackSender{p: p}, nil
		}
		secret, err := env(getenv, ch.SecretEnv, "secret_env")
		if err != nil {
			return nil, err
		}
		return &webhookSender{p: p, secret: []byte(secret)}, nil
	case TypeEmail:
		s := &emailSender{addr: ch.SMTPAddr, startTLS: ch.StartTLS, timeout: timeout, helo: heloName(), log: log}
		s.host, _, _ = net.SplitHostPort(ch.SMTPAddr)
		from, err := mail.ParseAddress(ch.From)
		if err != nil {
			return nil, fmt.Errorf("from: %w", err)
		}
		s.from = from
		if ch.UsernameEnv != "" {
			if s.user, err = env(getenv, ch.UsernameEnv, "username_env"); err != nil {
				return nil, err
			}
			if s.pass, err = env(getenv, ch.PasswordEnv, "password_env"); err != nil {
				return nil, err
			}
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown type %q", ch.Type)
}

// Notify wakes every channel to look for new events now. It never blocks.
func (n *Notifier) Notify() {
	for _, w := range n.workers {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// Run delivers notifications until ctx is done, then returns nil. Each
// channel runs on its own; a channel that cannot deliver retries with
// capped exponential backoff and holds back only its own later messages.
func (n *Notifier) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("notify: already running")
	}
	defer n.running.Store(false)
	var wg sync.WaitGroup
	for _, w := range n.workers {
		wg.Go(func() { w.run(ctx) })
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// sender delivers one message over one channel. It returns nil once every
// recipient the channel can reach has it.
type sender interface {
	send(ctx context.Context, m *message) error
}

// worker delivers one channel's messages in order.
type worker struct {
	n      *Notifier
	name   string
	events map[string]bool // nil: every type
	send   sender
	wake   chan struct{}
	log    *slog.Logger

	cursor     int64 // seq of the last event handled
	haveCursor bool
}

// batchSize is how many audit events one read loads.
const batchSize = 100

// maxExpiring bounds the leases one expiry check looks at.
const maxExpiring = 1000

func (w *worker) cursorKey() string { return "notify_cursor:" + w.name }
func (w *worker) expiryKey() string { return "notify_expiry:" + w.name }

func (w *worker) run(ctx context.Context) {
	failures := 0
	for {
		if err := w.pass(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			d := w.n.backoff(failures)
			w.log.Warn("notifications: will retry", "err", err, "retry_in", d.String())
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		failures = 0
		t := time.NewTimer(w.n.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// pass handles every event after the cursor, then upcoming expiries.
func (w *worker) pass(ctx context.Context) error {
	if err := w.loadCursor(ctx); err != nil {
		return err
	}
	for {
		var events []*mayfly.AuditEvent
		err := w.n.store.View(ctx, func(tx mayfly.Tx) error {
			var err error
			events, err = tx.ListAudit(mayfly.AuditFilter{AfterSeq: w.cursor, Limit: batchSize})
			return err
		})
		if err != nil {
			return fmt.Errorf("read audit events after %d: %w", w.cursor, err)
		}
		unsaved := false
		for _, e := range events {
			if ctx.Err() != nil {
				break // stopping: between events, never within one
			}
			msgs, err := w.n.messages(ctx, e)
			if err != nil {
				return err
			}
			sent := false
			for _, m := range msgs {
				if !w.wants(m) {
					continue
				}
				if err := w.deliver(ctx, m); err != nil {
					return err
				}
				sent = true
			}
			w.cursor = e.Seq
			unsaved = true
			if sent {
				if err := w.saveCursor(ctx); err != nil {
					return err
				}
				unsaved = false
			}
		}
		if unsaved {
			if err := w.saveCursor(ctx); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(events) < batchSize {
			break
		}
	}
	return w.expiring(ctx)
}

func (w *worker) wants(m *message) bool {
	return w.events == nil || w.events[m.Type]
}

// loadCursor reads the channel's cursor; a channel seen for the first time
// starts after the last event so enabling it does not replay history.
func (w *worker) loadCursor(ctx context.Context) error {
	if w.haveCursor {
		return nil
	}
	key := w.cursorKey()
	var v string
	err := w.n.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		v, err = tx.GetSetting(key)
		return err
	})
	switch {
	case err == nil:
		c, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || c < 0 {
			return fmt.Errorf("setting %s holds %q, not an event number", key, v)
		}
		w.cursor = c
	case mayfly.ErrorCode(err) == mayfly.ENOTFOUND:
		err = w.n.store.Update(ctx, func(tx mayfly.Tx) error {
			if v, err := tx.GetSetting(key); err == nil { // set meanwhile
				c, perr := strconv.ParseInt(v, 10, 64)
				if perr != nil || c < 0 {
					return fmt.Errorf("setting %s holds %q, not an event number", key, v)
				}
				w.cursor = c
				return nil
			}
			last, err := lastSeq(tx)
			if err != nil {
				return err
			}
			w.cursor = last
			return tx.PutSetting(key, strconv.FormatInt(last, 10))
		})
		if err != nil {
			return fmt.Errorf("start cursor: %w", err)
		}
		w.log.Info("notifications: channel starts after the latest audit event", "seq", w.cursor)
	default:
		return fmt.Errorf("read cursor: %w", err)
	}
	w.haveCursor = true
	return nil
}

func (w *worker) saveCursor(ctx context.Context) error {
	key, v := w.cursorKey(), strconv.FormatInt(w.cursor, 10)
	err := w.n.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		return tx.PutSetting(key, v)
	})
	if err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	return nil
}

// lastSeq finds the sequence number of the last audit event (0 when there
// is none) with a logarithmic number of indexed reads.
func lastSeq(tx mayfly.Tx) (int64, error) {
	first := func(after int64) (int64, bool, error) {
		evs, err := tx.ListAudit(mayfly.AuditFilter{AfterSeq: after, Limit: 1})
		if err != nil || len(evs) == 0 {
			return 0, false, err
		}
		return evs[0].Seq, true, nil
	}
	lo, ok, err := first(0)
	if err != nil || !ok {
		return 0, err
	}
	// Gallop until nothing lies beyond hi, then bisect (lo, hi].
	var hi int64
	for step := int64(1); ; step *= 2 {
		s, ok, err := first(lo + step)
		if err != nil {
			return 0, err
		}
		if !ok {
			hi = lo + step
			break
		}
		lo = s
	}
	for hi > lo {
		mid := lo + (hi-lo+1)/2
		s, ok, err := first(mid - 1)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = s
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// deliver sends m until it succeeds or ctx is done. An attempt under way
// when ctx ends (the notifier stopping, or its replica losing the lead) is
// finished rather than cut off: cut off, it may have been delivered
// without the cursor moving past it, and the next run would deliver it
// again. Once ctx has ended no retry starts (the callers start no new
// event, but finish the messages of the one under way).
func (w *worker) deliver(ctx context.Context, m *message) error {
	for attempt := 1; ; attempt++ {
		// Each attempt is bounded by its channel's timeout besides.
		actx, cancel := mayfly.Finishing(ctx)
		err := w.send.send(actx, m)
		cancel()
		if err == nil {
			if attempt > 1 {
				w.log.Info("notifications: delivered after retrying", "id", m.ID, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := w.n.backoff(attempt)
		w.log.Warn("notifications: delivery failed; will retry", "id", m.ID, "type", m.Type,
			"attempt", attempt, "retry_in", d.String(), "err", err)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// backoff returns the delay before retry number attempt (from 1): doubling
// from minBackoff, capped at maxBackoff.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.minBackoff
	for i := 1; i < attempt && d < n.maxBackoff; i++ {
		d *= 2
	}
	return min(d, n.maxBackoff)
}

// sleep waits d or until ctx is done; it reports whether d passed.
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

// Start fixes where every channel begins before the server takes requests:
// a channel seen for the first time starts after the latest event, so the
// events of the server's first requests are not taken for history. Run
// calls it too; calling it first makes the starting point deterministic.
func (n *Notifier) Start(ctx context.Context) error {
	for _, w := range n.workers {
		if err := w.loadCursor(ctx); err != nil {
			return fmt.Errorf("notifications channel %s: %w", w.name, err)
		}
	}
	return nil
}
