// Package config loads and validates Mayfly's YAML configuration: listen
// address, store, users and their token hashes, admins, targets with their
// grants, and policies. Errors name the file, the line and the reason.
package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit/sink"
	"github.com/mayflyhq/mayfly/internal/notify"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/seal"
	"github.com/mayflyhq/mayfly/internal/slackapp"
)

// Config is the whole configuration file.
type Config struct {
	Listen   string          `yaml:"listen"`
	Store    Store           `yaml:"store"`
	Users    []User          `yaml:"users"`
	Admins   Admins          `yaml:"admins"`
	Targets  []mayfly.Target `yaml:"targets"`
	Policies []policy.Policy `yaml:"policies"`
	// StateDir keeps files the broker writes (SSH CA keys, revocation
	// lists); default: beside the SQLite database.
	StateDir  string    `yaml:"state_dir"`
	Scheduler Scheduler `yaml:"scheduler"`
	Cluster   Cluster   `yaml:"cluster"`
	Log       Log       `yaml:"log"`
	// SSHCA locates the SSH user certificate authority (ssh targets).
	SSHCA SSHCA `yaml:"ssh_ca"`
	// Notifications reach approvers and requesters (webhook, Slack, e-mail).
	Notifications notify.Config `yaml:"notifications"`
	// Slack lets approvers decide requests in Slack (docs/slack.md).
	Slack slackapp.Config `yaml:"slack"`
	// Audit configures where the audit trail is delivered.
	Audit Audit `yaml:"audit"`
	// Reconcile sets how often targets are compared with leases.
	Reconcile Reconcile `yaml:"reconcile"`
	// SCIM enables the SCIM 2.0 endpoint /scim/v2 for identity providers.
	SCIM SCIM `yaml:"scim"`
	// Metrics protects /metrics with a token when TokenSHA256 is set.
	Metrics Metrics `yaml:"metrics"`
	// Auth configures how people authenticate: single sign-on with OIDC
	// and the sessions it opens.
	Auth Auth `yaml:"auth"`
	// InstanceKeyEnv names the environment variable holding this broker
	// installation's key (at least 16 bytes). Connectors mark every
	// account they create with an HMAC of its name under this key, so the
	// reconciler recognises this installation's accounts, and only them,
	// even after the store was lost. Keep it with the configuration, not in
	// the store; give every installation its own.
	InstanceKeyEnv string `yaml:"instance_key_env"`
	// Seal locates the master key that seals the admin credentials kept in
	// the store (`mayfly targets set-credential`): key_file or key_env.
	Seal seal.Config `yaml:"seal"`
	// TLS makes the server speak HTTPS (and, with a client CA, require
	// client certificates).
	TLS TLS `yaml:"tls"`
	// InsecureHTTP allows listening without TLS on an address that is not
	// loopback (the server then warns at every start).
	InsecureHTTP bool `yaml:"insecure_http"`
	// Gateway configures the gateways of grants with via: gateway.
	Gateway Gateway `yaml:"gateway"`

	// Tests are policy test cases kept beside the policies (`mayfly policy
	// test`); the server ignores them.
	Tests []PolicyTest `yaml:"tests"`

	// Path is the file the configuration came from ("" when parsed from bytes).
	Path string `yaml:"-"`
	// offline: read for policy checks, not to serve (files it names, such
	// as tls certificates, need not be on this machine).
	offline bool
}

// Store selects the store: exactly one of SQLite and Postgres.
type Store struct {
	// SQLite is the path of the embedded database file.
	SQLite string `yaml:"sqlite"`
	// Postgres is a PostgreSQL database, which several replicas may share.
	Postgres *PostgresStore `yaml:"postgres"`
}

// PostgresStore locates a PostgreSQL store.
type PostgresStore struct {
	// DSN is a postgres:// URL or key=value connection string.
	DSN string `yaml:"dsn"`
	// DSNEnv names the environment variable holding the DSN instead, to
	// keep a password out of the file.
	DSNEnv string `yaml:"dsn_env"`
	// MaxConns bounds the connections of this replica (default 10).
	MaxConns int `yaml:"max_conns"`
}

// ResolveDSN returns the DSN, from the environment when DSNEnv is set.
func (p *PostgresStore) ResolveDSN(getenv func(string) string) (string, error) {
	if p.DSNEnv == "" {
		return p.DSN, nil
	}
	v := getenv(p.DSNEnv)
	if v == "" {
		return "", mayfly.Errorf(mayfly.EINVALID, "store.postgres.dsn_env: environment variable %s is not set", p.DSNEnv)
	}
	return v, nil
}

// Equal reports whether s and o name the same store the same way.
func (s Store) Equal(o Store) bool {
	if s.SQLite != o.SQLite || (s.Postgres == nil) != (o.Postgres == nil) {
		return false
	}
	return s.Postgres == nil || *s.Postgres == *o.Postgres
}

func (s *Store) validate(file string, line int) error {
	if s.Postgres == nil {
		if s.SQLite == "" {
			return lineErr(file, line, "store: set store.sqlite (path of the database file) or store.postgres")
		}
		return nil
	}
	p := s.Postgres
	switch {
	case s.SQLite != "":
		return lineErr(file, line, "store: set one of store.sqlite and store.postgres, not both")
	case p.DSN == "" && p.DSNEnv == "":
		return lineErr(file, line, "store.postgres: dsn or dsn_env is required")
	case p.DSN != "" && p.DSNEnv != "":
		return lineErr(file, line, "store.postgres: set one of dsn and dsn_env, not both")
	case p.DSNEnv != "" && !envNameRE.MatchString(p.DSNEnv):
		return lineErr(file, line, "store.postgres.dsn_env %q is not an environment variable name", p.DSNEnv)
	case p.MaxConns < 0:
		return lineErr(file, line, "store.postgres.max_conns must not be negative (0: the default, 10)")
	}
	return nil
}

// User is a person or automation identity and the SHA-256 of its bearer token.
type User struct {
	Name        string   `yaml:"name"`
	Groups      []string `yaml:"groups"`
	TokenSHA256 string   `yaml:"token_sha256"`
	// Email receives notifications.
	Email string `yaml:"email"`
	// SlackID is the user's Slack member id (U0123ABCD): their clicks on
	// Slack approval messages act as this user, and direct messages reach
	// them there.
	SlackID string `yaml:"slack_id"`
	line    int
}

// Admins names who may act on everything (revoke any lease, read all).
type Admins struct {
	Groups []string `yaml:"groups"`
	Users  []string `yaml:"users"`
}

// Scheduler tunes revocation.
type Scheduler struct {
	// Concurrency is how many revocations run at once (default 16).
	Concurrency int `yaml:"concurrency"`
	// PerTarget is how many revocations run at once on one target
	// (default 4), so a target that hangs holds no more than that.
	PerTarget int `yaml:"per_target"`
	// BatchSize is how many due leases one pass claims (default 500).
	BatchSize int `yaml:"batch_size"`
	// MaxBackoff caps the delay between revocation retries (default 1m).
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// ClaimFor is the term of a replica's claim of a due lease (default
	// 3s, renewed every third of it while the lease is in flight): a
	// replica that dies mid-revocation leaves its leases to another
	// within this term.
	ClaimFor time.Duration `yaml:"claim_for"`
}

// Cluster tunes how replicas sharing a store coordinate.
type Cluster struct {
	// LeaderTTL is the term of a leader lease of work that runs on one
	// replica at a time (default 10s, renewed every third of it): the
	// work moves within about 4/3 of it when its holder dies.
	LeaderTTL time.Duration `yaml:"leader_ttl"`
	// HeartbeatEvery is how often a replica records that it is alive
	// (default 5s).
	HeartbeatEvery time.Duration `yaml:"heartbeat_every"`
}

// SSHCA locates the SSH user certificate authority. Its keys are stored in
// Dir encrypted with a passphrase read from the environment variable
// PassphraseEnv.
type SSHCA struct {
	Dir           string `yaml:"dir"`            // default: <state_dir>/ssh-ca
	PassphraseEnv string `yaml:"passphrase_env"` // default: MAYFLY_SSH_CA_PASSPHRASE
	// RevokedKeysTokenSHA256 is the hex SHA-256 of a token that can read
	// the revocation lists (GET /v1/ssh/revoked-keys) and nothing else:
	// the one to put on hosts, which fetch their list on a timer.
	RevokedKeysTokenSHA256 string `yaml:"revoked_keys_token_sha256"`
}

// Audit configures audit delivery, retention and alerts.
type Audit struct {
	// Sinks receive every audit event, at least once and in order.
	Sinks []sink.Config `yaml:"sinks"`
	// Retention, when set (at least 24h), archives then removes older
	// events once a day (never those of live leases).
	Retention time.Duration `yaml:"retention"`
	// BacklogAlert alerts when a sink is this many events behind
	// (default 10000).
	BacklogAlert int64 `yaml:"backlog_alert"`
	// RevocationOverdueAlert alerts when a revocation has kept failing
	// this long (default 10m).
	RevocationOverdueAlert time.Duration `yaml:"revocation_overdue_alert"`
}

// Reconcile configures the reconciler.
type Reconcile struct {
	// Interval between passes over every target (default 10m; "0s" off).
	Interval *time.Duration `yaml:"interval"`
	// HealthInterval between target health checks (default 30s).
	HealthInterval time.Duration `yaml:"health_interval"`
	// IdleInterval between idle checks of leases whose policy sets
	// idle_timeout (default 15s).
	IdleInterval time.Duration `yaml:"idle_interval"`
}

// SCIM configures the SCIM 2.0 service provider.
type SCIM struct {
	// TokenSHA256 is the hex SHA-256 of the identity provider's bearer
	// token; the endpoint is off when it is empty.
	TokenSHA256 string `yaml:"token_sha256"`
}

// Metrics configures /metrics.
type Metrics struct {
	TokenSHA256 string `yaml:"token_sha256"`
}

// Log configures structured logging.
type Log struct {
	Format string `yaml:"format"` // json (default) or text
	Level  string `yaml:"level"`  // debug, info (default), warn, error
}

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "read config: %v", err)
	}
	c, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	return c, nil
}

var (
	nameRE      = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)
	grantNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	targetRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	prefixRE    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,14}_$`)
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hexRE       = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// lineError is a validation error at a line of the file.
func lineErr(file string, line int, format string, args ...any) error {
	loc := file
	if loc == "" {
		loc = "config"
	}
	if line > 0 {
		loc = fmt.Sprintf("%s:%d", loc, line)
	}
	return mayfly.Errorf(mayfly.EINVALID, "%s: %s", loc, fmt.Sprintf(format, args...))
}

var yamlLineRE = regexp.MustCompile(`line (\d+): (.*)`)

// Parse parses and validates configuration bytes; file names the source in
// error messages.
func Parse(data []byte, file string) (*Config, error) {
	return parse(data, file, true)
}

func parse(data []byte, file string, requireStore bool) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlErr(file, err)
	}
	if len(root.Content) == 0 {
		return nil, lineErr(file, 0, "empty configuration")
	}
	data, keys, err := prepareDurations(data, &root, reflect.TypeOf(Config{}), file)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, yamlErrKeys(file, err, keys)
	}
	c.Path = file
	lines := collectLines(root.Content[0])
	for i := range c.Users {
		c.Users[i].line = lines["users"].at(i)
	}
	for i := range c.Policies {
		c.Policies[i].Line = lines["policies"].at(i)
	}
	for i := range c.Tests {
		c.Tests[i].Line = lines["tests"].at(i)
	}
	if !requireStore && c.Store.SQLite == "" && c.Store.Postgres == nil {
		c.Store.SQLite = "unused.db"
	}
	c.offline = !requireStore
	if err := c.validate(lines); err != nil {
		return nil, err
	}
	return &c, nil
}

func yamlErr(file string, err error) error { return yamlErrKeys(file, err, nil) }

func yamlErrKeys(file string, err error, keys keyIndex) error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		var n int
		fmt.Sscan(m[1], &n)
		return lineErr(file, n, "%s", plainYAMLError(m[2], n, keys))
	}
	return lineErr(file, 0, "%s", msg)
}

type seqLines []int

func (s seqLines) at(i int) int {
	if i < len(s) {
		return s[i]
	}
	return 0
}

// collectLines returns, for each top-level sequence key, the line of each item.
func collectLines(m *yaml.Node) map[string]seqLines {
	out := map[string]seqLines{}
	if m.Kind != yaml.MappingNode {
		return out
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if v.Kind == yaml.SequenceNode {
			for _, item := range v.Content {
				out[k.Value] = append(out[k.Value], item.Line)
			}
		} else {
			out[k.Value] = seqLines{k.Line}
		}
	}
	return out
}

func (c *Config) validate(lines map[string]seqLines) error {
	f := c.Path
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8765"
	}
	if err := c.Store.validate(f, lines["store"].at(0)); err != nil {
		return err
	}
	if c.StateDir == "" && c.Store.SQLite != "" {
		c.StateDir = filepath.Join(filepath.Dir(c.Store.SQLite), "mayfly-state")
	} else if c.StateDir == "" {
		// With a PostgreSQL store: beside the configuration file.
		c.StateDir = filepath.Join(filepath.Dir(c.Path), "mayfly-state")
	}
	if err := notify.Validate(c.Notifications); err != nil {
		return lineErr(f, lines["notifications"].at(0), "notifications: %s", mayfly.ErrorMessageOrText(err))
	}
	if c.Audit.Retention != 0 && c.Audit.Retention < 24*time.Hour {
		return lineErr(f, lines["audit"].at(0), "audit.retention %s: at least 24h", c.Audit.Retention)
	}
	if c.Audit.BacklogAlert <= 0 {
		c.Audit.BacklogAlert = 10000
	}
	if c.Audit.RevocationOverdueAlert <= 0 {
		c.Audit.RevocationOverdueAlert = 10 * time.Minute
	}
	if err := slackapp.Validate(c.Slack); err != nil {
		return lineErr(f, lines["slack"].at(0), "%s", mayfly.ErrorMessageOrText(err))
	}
	if err := sink.Validate(c.Audit.Sinks); err != nil {
		return lineErr(f, lines["audit"].at(0), "audit.sinks: %s", mayfly.ErrorMessageOrText(err))
	}
	if c.Reconcile.Interval == nil {
		d := 10 * time.Minute
		c.Reconcile.Interval = &d
	}
	if *c.Reconcile.Interval < 0 || c.Reconcile.HealthInterval < 0 {
		return lineErr(f, lines["reconcile"].at(0), "reconcile intervals must not be negative")
	}
	if c.Reconcile.IdleInterval <= 0 {
		c.Reconcile.IdleInterval = 15 * time.Second
	}
	if c.Reconcile.HealthInterval == 0 {
		c.Reconcile.HealthInterval = 30 * time.Second
	}
	if c.Metrics.TokenSHA256 != "" && !hexRE.MatchString(strings.ToLower(c.Metrics.TokenSHA256)) {
		return lineErr(f, lines["metrics"].at(0), "metrics.token_sha256 must be 64 hex digits")
	}
	c.Metrics.TokenSHA256 = strings.ToLower(c.Metrics.TokenSHA256)
	c.SSHCA.RevokedKeysTokenSHA256 = strings.ToLower(c.SSHCA.RevokedKeysTokenSHA256)
	if c.SSHCA.RevokedKeysTokenSHA256 != "" && !hexRE.MatchString(c.SSHCA.RevokedKeysTokenSHA256) {
		return lineErr(f, lines["ssh_ca"].at(0), "ssh_ca.revoked_keys_token_sha256 must be 64 hex digits (`mayfly token` makes one)")
	}
	c.SCIM.TokenSHA256 = strings.ToLower(c.SCIM.TokenSHA256)
	if c.SCIM.TokenSHA256 != "" && !hexRE.MatchString(c.SCIM.TokenSHA256) {
		return lineErr(f, lines["scim"].at(0), "scim.token_sha256 must be 64 hex digits")
	}
	if err := c.Auth.validate(f, lines["auth"].at(0)); err != nil {
		return err
	}
	if c.InstanceKeyEnv != "" && !envNameRE.MatchString(c.InstanceKeyEnv) {
		return lineErr(f, lines["instance_key_env"].at(0), "instance_key_env %q is not an environment variable name", c.InstanceKeyEnv)
	}
	if err := c.Seal.Validate(); err != nil {
		return lineErr(f, lines["seal"].at(0), "%s", mayfly.ErrorMessage(err))
	}
	if err := c.validateTLS(lines); err != nil {
		return err
	}
	if c.SSHCA.Dir == "" {
		c.SSHCA.Dir = filepath.Join(c.StateDir, "ssh-ca")
	}
	if err := c.validateSSHGateway(lines); err != nil {
		return err
	}
	if c.SSHCA.PassphraseEnv == "" {
		c.SSHCA.PassphraseEnv = "MAYFLY_SSH_CA_PASSPHRASE"
	}
	if c.Scheduler.Concurrency == 0 {
		c.Scheduler.Concurrency = 16
	}
	if c.Scheduler.BatchSize == 0 {
		c.Scheduler.BatchSize = 500
	}
	if c.Scheduler.PerTarget == 0 {
		c.Scheduler.PerTarget = 4
	}
	if c.Scheduler.MaxBackoff == 0 {
		c.Scheduler.MaxBackoff = time.Minute
	}
	if c.Scheduler.Concurrency < 0 || c.Scheduler.PerTarget < 0 || c.Scheduler.BatchSize < 0 || c.Scheduler.MaxBackoff < 0 {
		return lineErr(f, lines["scheduler"].at(0), "scheduler settings must be positive")
	}
	if d := c.Scheduler.ClaimFor; d != 0 && (d < time.Second || d > time.Hour) {
		return lineErr(f, lines["scheduler"].at(0), "scheduler.claim_for %s: want between 1s and 1h", d)
	}
	if c.Cluster.LeaderTTL == 0 {
		c.Cluster.LeaderTTL = 10 * time.Second
	}
	if c.Cluster.HeartbeatEvery == 0 {
		c.Cluster.HeartbeatEvery = 5 * time.Second
	}
	if d := c.Cluster.LeaderTTL; d < time.Second || d > 10*time.Minute {
		return lineErr(f, lines["cluster"].at(0), "cluster.leader_ttl %s: want between 1s and 10m", d)
	}
	if d := c.Cluster.HeartbeatEvery; d < 100*time.Millisecond || d > 10*time.Minute {
		return lineErr(f, lines["cluster"].at(0), "cluster.heartbeat_every %s: want between 100ms and 10m", d)
	}
	switch c.Log.Format {
	case "", "json", "text":
	default:
		return lineErr(f, lines["log"].at(0), "log.format %q: want json or text", c.Log.Format)
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		return lineErr(f, lines["log"].at(0), "log.level %q: want debug, info, warn or error", c.Log.Level)
	}

	users := map[string]bool{}
	tokens := map[string]string{}
	slackIDs := map[string]string{}
	for i := range c.Users {
		u := &c.Users[i]
		if !nameRE.MatchString(u.Name) {
			return lineErr(f, u.line, "user name %q: use lowercase letters, digits, '_', '.', '-' (at most 63, starting with a letter)", u.Name)
		}
		if users[u.Name] {
			return lineErr(f, u.line, "user %q is defined twice", u.Name)
		}
		users[u.Name] = true
		u.TokenSHA256 = strings.ToLower(u.TokenSHA256)
		if !hexRE.MatchString(u.TokenSHA256) {
			return lineErr(f, u.line, "user %q: token_sha256 must be 64 hex digits (sha256 of the bearer token; `mayfly token` makes one)", u.Name)
		}
		if other, dup := tokens[u.TokenSHA256]; dup {
			return lineErr(f, u.line, "users %q and %q share a token", other, u.Name)
		}
		tokens[u.TokenSHA256] = u.Name
		for _, g := range u.Groups {
			if !nameRE.MatchString(g) {
				return lineErr(f, u.line, "user %q: group name %q is not valid", u.Name, g)
			}
		}
		if u.SlackID != "" {
			if !slackapp.ValidUserID(u.SlackID) {
				return lineErr(f, u.line, "user %q: slack_id %q is not a Slack member id (like U0123ABCD: in Slack, the profile's ⋮ menu, Copy member ID)", u.Name, u.SlackID)
			}
			if other, dup := slackIDs[u.SlackID]; dup {
				return lineErr(f, u.line, "users %q and %q share slack_id %s", other, u.Name, u.SlackID)
			}
			slackIDs[u.SlackID] = u.Name
		}
	}

	tlines := lines["targets"]
	seen := map[string]bool{}
	var infos []policy.TargetInfo
	for i := range c.Targets {
		t := &c.Targets[i]
		line := tlines.at(i)
		if !targetRE.MatchString(t.Name) {
			return lineErr(f, line, "target name %q: use lowercase letters, digits and '-' (at most 63, starting with a letter)", t.Name)
		}
		if seen[t.Name] {
			return lineErr(f, line, "target %q is defined twice", t.Name)
		}
		seen[t.Name] = true
		switch t.Kind {
		case mayfly.KindPostgres, mayfly.KindMySQL, mayfly.KindRedis, mayfly.KindSSH, mayfly.KindScript:
		case "":
			return lineErr(f, line, "target %q: kind is required (postgres, mysql, redis, ssh or script)", t.Name)
		default:
			return lineErr(f, line, "target %q: unknown kind %q (want postgres, mysql, redis, ssh or script)", t.Name, t.Kind)
		}
		if t.Prefix == "" {
			t.Prefix = mayfly.DefaultPrefix
		}
		if !prefixRE.MatchString(t.Prefix) {
			return lineErr(f, line, "target %q: prefix %q: use lowercase letters, digits and '_' (at most 16, starting with a letter and ending with '_')", t.Name, t.Prefix)
		}
		t.InstanceKeyEnv = c.InstanceKeyEnv
		if t.NameTemplate == "" {
			t.NameTemplate = "{prefix}{user}_{random}"
		}
		if !strings.HasPrefix(t.NameTemplate, "{prefix}") || !strings.Contains(t.NameTemplate, "{random}") {
			return lineErr(f, line, "target %q: name_template must start with {prefix} and contain {random}", t.Name)
		}
		if len(t.Grants) == 0 {
			return lineErr(f, line, "target %q: at least one grant is required", t.Name)
		}
		var gnames []string
		for name, g := range t.Grants {
			if !grantNameRE.MatchString(name) {
				return lineErr(f, line, "target %q: grant name %q: use lowercase letters, digits, '_' and '-'", t.Name, name)
			}
			g.Name = name
			t.Grants[name] = g
			gnames = append(gnames, name)
		}
		slices.Sort(gnames)
		if t.RotateEvery != 0 {
			switch {
			case t.Kind != mayfly.KindPostgres && t.Kind != mayfly.KindMySQL && t.Kind != mayfly.KindRedis:
				return lineErr(f, line, "target %q: rotate_every applies to postgres, mysql and redis targets only", t.Name)
			case t.RotateEvery < time.Minute:
				return lineErr(f, line, "target %q: rotate_every %s: at least 1m", t.Name, t.RotateEvery)
			case !c.Seal.Enabled():
				return lineErr(f, line, "target %q: rotate_every needs a master key to seal the new credential (seal.key_file or seal.key_env)", t.Name)
			}
		}
		if t.Timeout < 0 || t.ConnectionLimit < 0 || t.SCRAMIterations < 0 || t.MaxConns < 0 {
			return lineErr(f, line, "target %q: timeout, connection_limit, scram_iterations and max_conns must not be negative", t.Name)
		}
		infos = append(infos, policy.TargetInfo{Name: t.Name, Kind: t.Kind, Labels: t.Labels, Grants: gnames})
	}
	if err := c.validateGateway(lines); err != nil {
		return err
	}
	for _, a := range c.Admins.Users {
		if !users[a] {
			return lineErr(f, lines["admins"].at(0), "admins.users: unknown user %q", a)
		}
	}
	for _, p := range c.Policies {
		if p.SlackChannel != "" && !slackapp.ValidChannel(p.SlackChannel) {
			return lineErr(f, p.Line, "policy %q: slack_channel %q: give a channel id (C0123ABCD) or #name", p.Name, p.SlackChannel)
		}
		for _, u := range p.Users {
			if !users[u] {
				return lineErr(f, p.Line, "policy %q: unknown user %q", p.Name, u)
			}
		}
	}
	if _, err := policy.Compile(c.Policies, infos); err != nil {
		var me *mayfly.Error
		msg := err.Error()
		if errors.As(err, &me) {
			msg = me.Message
		}
		return lineErr(f, 0, "%s", msg)
	}
	return c.checkIdleTimeouts()
}

// checkIdleTimeouts refuses an idle_timeout on a policy that covers a
// grant whose target cannot report activity: a script target, or an SSH
// grant without a host user reached directly (a certificate leaves no
// trace Mayfly can read; through the gateway, the gateway sees it). Such leases would look idle while in use and be revoked.
func (c *Config) checkIdleTimeouts() error {
	for _, p := range c.Policies {
		if p.IdleTimeout <= 0 {
			continue
		}
		for _, t := range c.Targets {
			covered := slices.Contains(p.Targets, "*") || slices.Contains(p.Targets, t.Name)
			if !covered && len(p.TargetLabels) > 0 {
				covered = true
				for k, v := range p.TargetLabels {
					if got, ok := t.Labels[k]; !ok || got != v {
						covered = false
					}
				}
			}
			if !covered {
				continue
			}
			for _, gname := range slices.Sorted(maps.Keys(t.Grants)) {
				if !slices.Contains(p.Grants, "*") && !slices.Contains(p.Grants, gname) {
					continue
				}
				why := ""
				switch {
				case t.Kind == mayfly.KindScript:
					why = "a script target reports no activity Mayfly can rely on"
				case t.Kind == mayfly.KindSSH && !t.Grants[gname].HostUser && t.Grants[gname].Via != mayfly.ViaGateway:
					why = "an SSH certificate leaves no activity Mayfly can see (only host_user grants and grants via the gateway report it)"
				default:
					continue
				}
				return lineErr(c.Path, p.Line, "policy %q: idle_timeout cannot apply to target %q grant %q: %s, so leases in use would be revoked as idle; remove idle_timeout or leave that grant out of the policy", p.Name, t.Name, gname, why)
			}
		}
	}
	return nil
}

// TargetInfos describes the targets for the policy engine.
func (c *Config) TargetInfos() []policy.TargetInfo {
	var infos []policy.TargetInfo
	for _, t := range c.Targets {
		var g []string
		for name := range t.Grants {
			g = append(g, name)
		}
		slices.Sort(g)
		infos = append(infos, policy.TargetInfo{Name: t.Name, Kind: t.Kind, Labels: t.Labels, Grants: g})
	}
	return infos
}

// IsAdmin reports whether the user is an administrator.
func (c *Config) IsAdmin(name string, groups []string) bool {
	if slices.Contains(c.Admins.Users, name) {
		return true
	}
	for _, g := range groups {
		if slices.Contains(c.Admins.Groups, g) {
			return true
		}
	}
	return false
}

// TokenHash returns the hex SHA-256 form a token is configured by.
func TokenHash(sum [32]byte) string { return hex.EncodeToString(sum[:]) }

// SlackChannels maps each policy with a slack_channel to it.
func (c *Config) SlackChannels() map[string]string {
	m := map[string]string{}
	for _, p := range c.Policies {
		if p.SlackChannel != "" {
			m[p.Name] = p.SlackChannel
		}
	}
	return m
}
