package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit/sink"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/cluster"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/metrics"
	"github.com/mayflyhq/mayfly/internal/notify"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/scim"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
	"github.com/mayflyhq/mayfly/internal/webapp"
)

// krlFollowEvery is how often a replica reads the SSH targets' records to
// rewrite their krl_file after revocations made through other replicas.
const krlFollowEvery = 2 * time.Second

// scimFollowEvery is how often a replica checks for changes the identity
// provider made to the SCIM directory through other replicas.
const scimFollowEvery = time.Second

func cmdServer(e *env, args []string) error {
	f := newFlags(e, "server", false)
	path := f.String("config", "", "configuration file (YAML)")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if *path == "" {
		return usageErr("server: --config FILE is required")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	return serve(e, cfg, *path, nil)
}

// authenticator resolves token hashes to identities: the static tokens of
// the configuration first, then the tokens and sessions in the store.
type authenticator struct {
	mu     sync.RWMutex
	users  map[string]httpapi.Identity // by token hash
	status func(name string) string
	// extraGroups adds groups the identity provider manages (SCIM).
	extraGroups func(name string) []string
	// tokens resolves stored API tokens and sessions (nil: none).
	tokens func(ctx context.Context, hash string) (*mayfly.Token, bool)
	// holder names the user of a live stored token, whatever their status.
	holder func(ctx context.Context, hash string) (string, bool)
	// groups are the configured users' groups; isAdmin decides admins.
	groups  map[string][]string
	isAdmin func(name string, groups []string) bool
}

// Authenticate resolves a token hash; tokens of suspended or deprovisioned
// users are refused.
func (a *authenticator) Authenticate(h string) (httpapi.Identity, bool) {
	a.mu.RLock()
	id, ok := a.users[h]
	a.mu.RUnlock()
	if !ok {
		return a.stored(h)
	}
	if a.status != nil && a.status(id.Name) != broker.UserActive {
		return httpapi.Identity{}, false
	}
	if a.extraGroups != nil {
		if extra := a.extraGroups(id.Name); len(extra) > 0 {
			groups := append(slices.Clone(id.Groups), extra...)
			slices.Sort(groups)
			id.Groups = slices.Compact(groups)
		}
	}
	return id, true
}

// Refusal says why a token Authenticate refused was refused, when it is
// a valid token of a user who is suspended or removed.
func (a *authenticator) Refusal(h string) string {
	if a.status == nil {
		return ""
	}
	a.mu.RLock()
	id, ok := a.users[h]
	a.mu.RUnlock()
	user := id.Name
	if !ok && a.holder != nil {
		user, ok = a.holder(context.Background(), h)
	}
	if !ok {
		return ""
	}
	switch a.status(user) {
	case broker.UserSuspended:
		return fmt.Sprintf("user %s is suspended: every token and session of theirs is refused until an admin runs `mayfly users resume %s`", user, user)
	case broker.UserDeprovisioned:
		return fmt.Sprintf("user %s was removed (deprovisioned): their tokens and sessions are refused", user)
	}
	return ""
}

// stored resolves a token kept by the store: the token's user, with the
// groups a session carries or, for an API token, the user's configured
// groups, and the groups SCIM manages.
func (a *authenticator) stored(h string) (httpapi.Identity, bool) {
	if a.tokens == nil {
		return httpapi.Identity{}, false
	}
	t, ok := a.tokens(context.Background(), h)
	if !ok {
		return httpapi.Identity{}, false
	}
	a.mu.RLock()
	groups, isAdmin := a.groups[t.User], a.isAdmin
	a.mu.RUnlock()
	if t.Kind == mayfly.TokenSession {
		groups = t.Groups
	}
	if a.extraGroups != nil {
		if extra := a.extraGroups(t.User); len(extra) > 0 {
			groups = append(slices.Clone(groups), extra...)
			slices.Sort(groups)
			groups = slices.Compact(groups)
		}
	}
	id := httpapi.Identity{Name: t.User, Groups: groups, Method: t.Method, ExpiresAt: t.ExpiresAt}
	if isAdmin != nil {
		id.Admin = isAdmin(t.User, groups)
	}
	return id, true
}

func (a *authenticator) load(cfg *config.Config) {
	m := map[string]httpapi.Identity{}
	g := map[string][]string{}
	for _, u := range cfg.Users {
		m[u.TokenSHA256] = httpapi.Identity{Name: u.Name, Groups: u.Groups, Admin: cfg.IsAdmin(u.Name, u.Groups)}
		g[u.Name] = u.Groups
	}
	a.mu.Lock()
	a.users, a.groups, a.isAdmin = m, g, cfg.IsAdmin
	a.mu.Unlock()
}

func brokerConfig(cfg *config.Config) (*broker.Config, error) {
	set, err := policy.Compile(cfg.Policies, cfg.TargetInfos())
	if err != nil {
		return nil, err
	}
	bc := &broker.Config{Targets: map[string]mayfly.Target{}, Policies: set, Users: map[string][]string{},
		MaxTokenTTL: cfg.Auth.MaxTokenTTL}
	for _, t := range cfg.Targets {
		bc.Targets[t.Name] = t
	}
	for _, u := range cfg.Users {
		bc.Users[u.Name] = u.Groups
		bc.UserOrder = append(bc.UserOrder, u.Name)
	}
	return bc, nil
}

func newLogger(e *env, cfg *config.Config) *slog.Logger {
	lvl := slog.LevelInfo
	switch cfg.Log.Level {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(e.stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(e.stderr, opts))
}

// hmacKey returns the key for hashing issued secrets, created on first use
// and kept in the store.
func hmacKey(ctx context.Context, s mayfly.Store) ([]byte, error) {
	var key string
	err := s.Update(ctx, func(tx mayfly.Tx) error {
		var err error
		key, err = tx.GetSetting("secret_hmac_key")
		if err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			return err
		}
		if key != "" {
			return nil
		}
		b := make([]byte, 32)
		rand.Read(b)
		key = hex.EncodeToString(b)
		return tx.PutSetting("secret_hmac_key", key)
	})
	if err != nil {
		return nil, err
	}
	return hex.DecodeString(key)
}

// sqliteOwnerWait is how long a server waits for the one before it on the
// same SQLite store to stop: longer than a stop takes (its HTTP drain is
// bounded at 5 s, its connectors' close at 2 s).
const sqliteOwnerWait = 10 * time.Second

// serve runs the broker with cfg until the context ends. ready, when not
// nil, is called with the listening address.
func serve(e *env, cfg *config.Config, path string, ready func(addr string)) error {
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	log := newLogger(e, cfg)
	start := time.Now()

	if cfg.Store.SQLite != "" {
		// One server per SQLite file, taken before its schema is touched;
		// a restart may find the server it replaces still stopping.
		owner, err := sqlite.Own(ctx, cfg.Store.SQLite, sqliteOwnerWait, func(holder string) {
			log.Warn("store: another server holds the SQLite store; waiting for it to stop", "store", cfg.Store.SQLite, "holder", holder, "for", sqliteOwnerWait.String())
		})
		if err != nil {
			return err
		}
		defer owner.Close()
	}
	st, err := openStore(ctx, cfg.Store, e.getenv)
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.Store.SQLite != "" {
		leaders, replicas, err := clearDeadProcesses(ctx, st)
		if err != nil {
			return err
		}
		if leaders+replicas > 0 {
			log.Info("store: freed what the previous server left", "leader_leases", leaders, "replica_records", replicas)
		}
	}
	key, err := hmacKey(ctx, st)
	if err != nil {
		return fmt.Errorf("load secret hashing key: %w", err)
	}
	// This process among the replicas sharing the store (see rep below).
	repID := cluster.NewID()
	var onCommit func() // set once the hooks are
	creds, err := openCredentials(ctx, cfg, st, e.getenv, log, repID, func() {
		if onCommit != nil {
			onCommit()
		}
	}, false)
	if err != nil {
		return err
	}
	// Replicas of a PostgreSQL store keep the SSH CA and certificate
	// records in it, whatever their state_dir.
	var shared mayfly.Store
	if cfg.Store.Postgres != nil {
		shared = st
	}
	conns, err := buildConnectors(ctx, cfg, e.getenv, creds, shared)
	if err != nil {
		return err
	}
	if conns.ca != nil && conns.ca.Created() {
		where := cfg.SSHCA.Dir
		if shared != nil {
			where = "the store (none there nor in " + cfg.SSHCA.Dir + ")"
		}
		log.Warn("ssh ca: made a new CA in "+where+"; hosts refuse its certificates until they trust its key (mayfly ssh ca)", "key", conns.ca.PublicKeys()[0])
	}
	// A driver may wait on a target that stopped answering as it closes
	// (pgx pings a pooled connection with no deadline): the stop does not.
	defer closeWithin(conns.Close, 2*time.Second, log)
	bc, err := brokerConfig(cfg)
	if err != nil {
		return err
	}
	m := metrics.New(st)
	sinks, err := sink.New(st, cfg.Audit.Sinks, e.getenv, log)
	if err != nil {
		return err
	}
	hooks := metricHooks(m)
	dir := &directory{}
	dir.load(cfg)
	var notifier *notify.Notifier
	if len(cfg.Notifications.Channels) > 0 {
		if notifier, err = notify.New(st, cfg.Notifications, dir, e.getenv, log); err != nil {
			return err
		}
		if err := notifier.Start(ctx); err != nil {
			return err
		}
	}
	// The audit sinks and notifications run on the replica leading them
	// (see leader below). Each term of leadership after the first runs
	// fresh ones, which read their cursors from the store, where the
	// replica that led meanwhile moved them.
	var sinksNow atomic.Pointer[sink.Runner]
	var notifierNow atomic.Pointer[notify.Notifier]
	hooks.Committed = func() {
		if r := sinksNow.Load(); r != nil {
			r.Notify()
		}
		if n := notifierNow.Load(); n != nil {
			n.Notify()
		}
	}
	onCommit = hooks.Committed
	// What on this replica must hear of other replicas' commits as they
	// happen (see cluster.Demand): its live views while open, and what is
	// configured to react to commits for good.
	var demand cluster.Demand
	hooks.Watching = demand.Hold
	if notifier != nil || len(cfg.Audit.Sinks) > 0 || cfg.Gateway.Postgres != nil || cfg.Gateway.SSH != nil {
		defer demand.Hold()()
	}
	opts := broker.Options{Store: st, Logger: log, Connectors: conns.all, HMACKey: key, MaxBackoff: cfg.Scheduler.MaxBackoff,
		Hooks: hooks}
	if e.getenv("MAYFLY_FAILPOINT") == "crash-after-intent" {
		// Fault injection for crash-safety tests: die the hard way right
		// after the lease intent is committed, before the target is touched.
		opts.AfterIntent = func(*mayfly.Lease) { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	}
	b := broker.New(bc, opts)
	dir.store = st
	// This process among the replicas sharing the store: the scheduler
	// claims due leases under its id, and the work that must run once runs
	// only while it holds that work's leader lease.
	rep := cluster.New(st, nil, log, repID, "", buildInfo().Version)
	leader := func(name string, fn func(ctx context.Context)) func() {
		return func() {
			rep.RunWhileLeader(ctx, name, cfg.Cluster.LeaderTTL, func(ctx context.Context) error { fn(ctx); return nil })
		}
	}
	// Recovery at start undoes every lease left in provisioning at once,
	// which is right only when no other replica may be provisioning one
	// now. With other replicas alive on a shared (PostgreSQL) store,
	// leases interrupted by a stop are finished by the schedulers at their
	// deadlines instead. (A SQLite store serves one process: sqlite.Own.)
	var others []string
	if cfg.Store.Postgres != nil {
		if others, err = cluster.OthersAlive(ctx, st, time.Now(), rep.ID()); err != nil {
			return fmt.Errorf("read the replicas sharing the store: %w", err)
		}
	}
	if len(others) == 0 {
		n, err := b.Recover(ctx)
		if err != nil {
			return fmt.Errorf("recover interrupted leases: %w", err)
		}
		if n > 0 {
			log.Info("recovering leases interrupted by a stop", "count", n)
		}
	} else {
		log.Info("other replicas serve this store: leases interrupted by a stop are finished at their deadlines", "replicas", others)
	}
	if err := b.LoadUserStatuses(ctx); err != nil {
		return fmt.Errorf("load user statuses: %w", err)
	}
	// A status changed through another replica is read again within a
	// second (broker.CurrentUserStatus).
	userStatus := func(name string) string { return b.CurrentUserStatus(ctx, name) }
	auth := &authenticator{status: userStatus, tokens: b.ResolveToken, holder: b.TokenHolder}
	auth.load(cfg)
	login, err := oidcLogin(cfg, e.getenv, b, log)
	if err != nil {
		return err
	}
	var scimHandler http.Handler
	var scimDir *scimDirectory
	if cfg.SCIM.TokenSHA256 != "" {
		sd, err := newSCIMDirectory(ctx, st, b)
		if err != nil {
			return fmt.Errorf("load SCIM directory: %w", err)
		}
		auth.extraGroups = sd.Groups
		b.SetDirectory(sd.All)
		scimDir = sd
		scimHandler = scim.NewHandler(sd, cfg.SCIM.TokenSHA256, log)
	}
	slackApp, slackDir, err := newSlackApp(ctx, cfg, st, b, scimDir, e.getenv, log)
	if err != nil {
		return err
	}
	if slackApp != nil {
		defer demand.Hold()() // its approval messages follow every replica's decisions
	}
	for _, w := range groupWarnings(cfg, scimDir) {
		log.Warn("configuration: " + w)
	}
	if cfg.InstanceKeyEnv == "" && len(cfg.Targets) > 0 {
		log.Warn("configuration: instance_key_env is not set, so the accounts Mayfly makes carry no mark of this installation; " +
			"if the store is ever lost, the reconciler can only report its leftover accounts, not remove them (README, orphans)")
	}

	var schedErr error
	schedDone := make(chan struct{})
	so := broker.SchedulerOptions{Concurrency: cfg.Scheduler.Concurrency, PerTarget: cfg.Scheduler.PerTarget, BatchSize: cfg.Scheduler.BatchSize, ClaimFor: cfg.Scheduler.ClaimFor, Holder: rep.ID()}
	if cfg.Store.Postgres != nil {
		// Other replicas' leases are found by polling: those of a replica
		// that stopped are revoked within a second or so of their expiry.
		so.MaxSleep = broker.SharedMaxSleep
	}
	go func() {
		defer close(schedDone)
		schedErr = b.RunScheduler(ctx, so)
	}()
	var bg sync.WaitGroup
	defer bg.Wait()
	bg.Add(7)
	go func() {
		defer bg.Done()
		if notifier != nil {
			first := notifier
			leader("notifications", func(ctx context.Context) {
				n := first
				if first = nil; n == nil {
					var err error
					if n, err = notify.New(st, cfg.Notifications, dir, e.getenv, log); err != nil {
						log.Error("notifications: not started on this replica", "err", err)
						return
					}
				}
				notifierNow.Store(n)
				defer notifierNow.Store(nil)
				n.Run(ctx)
			})()
		}
	}()
	go func() {
		defer bg.Done()
		first := sinks
		leader("audit-sinks", func(ctx context.Context) {
			if len(cfg.Audit.Sinks) == 0 {
				<-ctx.Done() // nothing to deliver; held, not run again and again
				return
			}
			r := first
			if first = nil; r == nil {
				var err error
				if r, err = sink.New(st, cfg.Audit.Sinks, e.getenv, log); err != nil {
					log.Error("audit sinks: not started on this replica", "err", err)
					return
				}
			}
			sinksNow.Store(r)
			defer sinksNow.Store(nil)
			runSinks(ctx, r, m, b, cfg.Audit.BacklogAlert)
		})()
	}()
	go func() {
		defer bg.Done()
		leader("idle-checker", func(ctx context.Context) { b.RunIdleChecker(ctx, cfg.Reconcile.IdleInterval) })()
	}()
	go func() {
		defer bg.Done()
		// Every replica: the gateways' activity, for the idle checker.
		b.RunActivityFlusher(ctx)
	}()
	go func() {
		defer bg.Done()
		leader("lapser", func(ctx context.Context) {
			b.RunLapser(ctx, min(5*time.Second, cfg.Audit.RevocationOverdueAlert/2), cfg.Audit.RevocationOverdueAlert)
		})()
	}()
	go func() {
		defer bg.Done()
		leader("reconciler", func(ctx context.Context) { b.RunReconciler(ctx, *cfg.Reconcile.Interval) })()
	}()
	go func() {
		defer bg.Done()
		select { // the first check knows whether it alerts
		case <-rep.Attempted("target-alerts"):
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
		checkTargets(ctx, conns.all, m, b, cfg.Reconcile.HealthInterval, log, func() bool { return rep.Leads("target-alerts") })
	}()
	bg.Add(1)
	go func() {
		defer bg.Done()
		// Every replica checks the targets for its own mayfly_target_up;
		// the one holding this lease raises the alerts.
		leader("target-alerts", func(ctx context.Context) { <-ctx.Done() })()
	}()
	bg.Add(1)
	go func() {
		defer bg.Done()
		b.WatchOverdue(ctx, time.Second, broker.OverdueGrace, func(o broker.Overdue) { m.LeasesOverdue.Set(float64(o.Count)) })
	}()
	if slackApp != nil {
		// The Slack sender runs on one replica; Socket Mode on each (Slack
		// hands every interaction to one connection).
		bg.Add(1)
		go func() { defer bg.Done(); leader("slack", func(ctx context.Context) { slackApp.Run(ctx) })() }()
		if slackApp.SocketMode() {
			bg.Add(1)
			go func() { defer bg.Done(); slackApp.RunSocketMode(ctx) }()
		}
	}
	// A replica's krl_file follows the revocations made through the others
	// (or through processes sharing its state_dir), not only its own.
	for name, sc := range conns.ssh {
		bg.Add(1)
		go func() {
			defer bg.Done()
			sc.FollowRevocations(ctx, krlFollowEvery, func(err error) {
				log.Warn("ssh: cannot refresh the revocation list file", "target", name, "err", err)
			})
		}()
	}
	if scimDir != nil {
		// The identity provider's changes may reach another replica.
		bg.Add(1)
		go func() { defer bg.Done(); scimDir.follow(ctx, scimFollowEvery, log) }()
	}
	if creds.Sealing() {
		// Every replica follows the credentials stored by the others and
		// finishes rotations a crash interrupted; scheduled rotations
		// (rotate_every) run on one.
		bg.Add(2)
		go func() { defer bg.Done(); creds.Watch(ctx, credentialSyncEvery) }()
		go func() {
			defer bg.Done()
			leader("credential-rotation", func(ctx context.Context) { creds.RunRotations(ctx, time.Minute) })()
		}()
	}
	if cfg.Audit.Retention > 0 {
		bg.Add(1)
		go func() {
			defer bg.Done()
			leader("audit-retention", func(ctx context.Context) {
				retain(ctx, b, cfg.Audit.Retention, filepath.Join(cfg.StateDir, "audit-archive"), log)
			})()
		}()
	}

	tlsState, err := newServerTLS(cfg.TLS)
	if err != nil {
		cancel()
		<-schedDone
		return mayfly.Errorf(mayfly.EINVALID, "%v", err)
	}
	if tlsState == nil && !config.IsLoopback(cfg.Listen) {
		log.Warn(clearHTTPWarning(cfg.Listen))
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		cancel()
		<-schedDone
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "listen on %s: %v", cfg.Listen, err)
	}
	gwReplica := "" // the PostgreSQL gateway shares cancel keys through the store
	if shared != nil {
		gwReplica = rep.ID()
	}
	if err := startGateways(ctx, cfg, b, gwReplica, log, &bg); err != nil {
		ln.Close()
		cancel()
		<-schedDone
		return err
	}
	reload := func() (httpapi.ReloadResult, error) {
		if path == "" {
			return httpapi.ReloadResult{}, mayfly.Errorf(mayfly.EUNAVAILABLE, "no configuration file to reload")
		}
		nc, err := config.Load(path)
		if err == nil && tlsState != nil && nc.TLS.Enabled() {
			// Certificates rotate on reload; a pair that does not load
			// leaves the last good one serving.
			if err = tlsState.reload(nc.TLS); err != nil {
				err = mayfly.Errorf(mayfly.EINVALID, "%v", err)
			}
		}
		if err == nil {
			var nb *broker.Config
			if nb, err = brokerConfig(nc); err == nil {
				if n, err := b.Reconfigure(ctx, keepConnectedTargets(nb, conns.all, log)); err != nil {
					log.Error("configuration reload: ending removed users' leases", "err", err)
				} else if n > 0 {
					log.Info("configuration reload ended the leases of removed users", "leases", n)
				}
				auth.load(nc)
				dir.load(nc)
				if slackApp != nil {
					slackDir.load(nc)
					slackApp.SetChannels(nc.SlackChannels())
				}
				// What the server set up at start stays as it was.
				res := httpapi.ReloadResult{NeedsRestart: needsRestart(cfg, nc), Warnings: groupWarnings(nc, scimDir)}
				for _, w := range res.Warnings {
					log.Warn("configuration: "+w, "path", path)
				}
				if len(res.NeedsRestart) > 0 {
					log.Warn("configuration reloaded, except what needs a restart", "path", path, "needs_restart", res.NeedsRestart)
					return res, nil
				}
				log.Info("configuration reloaded", "path", path)
				return res, nil
			}
		}
		log.Error("configuration reload refused; keeping the last good one", "err", mayfly.ErrorMessageOrText(err))
		return httpapi.ReloadResult{}, err
	}
	readyCheck := func(ctx context.Context) error {
		select {
		case <-schedDone:
			return mayfly.Errorf(mayfly.EUNAVAILABLE, "scheduler stopped")
		default:
		}
		return st.Ping(ctx)
	}
	stopSSHGateway, err := startSSHGateway(cfg, b, conns, shared, log)
	if err != nil {
		cancel()
		<-schedDone
		return err
	}
	defer stopSSHGateway()
	var sshSvc httpapi.SSHService
	if conns.ca != nil {
		sshSvc = sshService{conns}
	}
	h := httpapi.NewServer(httpapi.Deps{
		Broker: b, Auth: auth, Logger: log, SSH: sshSvc, Reload: reload, SCIM: scimHandler, Login: login,
		ArchiveDir: filepath.Join(cfg.StateDir, "audit-archive"), Metrics: m, MetricsTokenSHA256: cfg.Metrics.TokenSHA256,
		RevokedKeysTokenSHA256: cfg.SSHCA.RevokedKeysTokenSHA256, Version: buildInfo().Version,
		Ready: readyCheck, ReplicaID: rep.ID(), Credentials: credentialService{creds},
		Cluster: func(ctx context.Context) (any, error) { return rep.Status(ctx) },
	})
	h = overdueReadyz(h, b, readyCheck, rep.ID())
	h = slackRoute(h, slackApp)
	// The web app at /app/ (and / redirecting to it) calls the API in-process.
	web, err := webapp.New(webapp.Options{API: h, Changed: b.Changed, Watching: b.Watching, SingleSignOn: login != nil, Logger: log})
	if err != nil {
		return fmt.Errorf("web app: %w", err)
	}
	h = web.Mount(h)
	rep.SetAddress(advertisedAddr(ln.Addr()))
	if err := rep.Beat(ctx); err != nil {
		log.Warn("cluster: first heartbeat", "replica", rep.ID(), "err", err)
	}
	bg.Add(1)
	go func() { defer bg.Done(); rep.RunHeartbeat(ctx, cfg.Cluster.HeartbeatEvery) }()
	if cfg.Store.Postgres != nil {
		// Other replicas' commits wake this one's audit streams, sinks and
		// notifications: as they commit (LISTEN/NOTIFY) while something
		// here holds the demand, within a second (a poll) otherwise.
		bg.Add(1)
		go func() {
			defer bg.Done()
			cluster.WatchAudit(ctx, st, &demand, nil, time.Second, log, b.ChangedElsewhere)
		}()
	}
	if addr := e.getenv("MAYFLY_PPROF_ADDR"); addr != "" {
		// Debugging aid: Go's profiler on a separate, explicitly chosen address.
		go http.ListenAndServe(addr, pprofMux())
	}
	srv := newHTTPServer(h, defaultHTTPTimeouts())
	srvErr := make(chan error, 1)
	go func() { srvErr <- serveHTTP(srv, ln, tlsState, log) }()
	log.Info("mayfly ready", "listen", ln.Addr().String(), "tls", tlsState != nil, "targets", len(cfg.Targets), "startup", time.Since(start).String())
	if ready != nil {
		ready(ln.Addr().String())
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			reload()
		case err := <-srvErr:
			cancel()
			<-schedDone
			return fmt.Errorf("http server: %w", err)
		case <-ctx.Done():
			shut, c2 := context.WithTimeout(context.Background(), 5*time.Second)
			srv.Shutdown(shut)
			c2()
			if e.onStop != nil {
				stopCtx, c3 := context.WithTimeout(context.Background(), 30*time.Second)
				e.onStop(stopCtx, b)
				c3()
			}
			<-schedDone
			if schedErr != nil && !errors.Is(schedErr, context.Canceled) {
				return schedErr
			}
			log.Info("mayfly stopped")
			return nil
		}
	}
}

// closeWithin runs closeAll and waits for it at most d; the process is on its
// way out, so what is left is dropped.
func closeWithin(closeAll func(), d time.Duration, log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		closeAll()
	}()
	select {
	case <-done:
	case <-time.After(d):
		log.Warn("connectors still closing at stop; leaving them", "waited", d.String())
	}
}

// overdueReadyz makes /readyz answer 200 with status "degraded" when the
// server is ready but leases are overdue (still active or revoking more
// than broker.OverdueGrace past their expiry): their accounts may still
// work, which monitors must see, yet the broker must stay in service so
// that people can see and end access while a target is down. Not ready
// (503) stays for the broker's own failures: a stopped scheduler, an
// unreachable store.
func overdueReadyz(h http.Handler, b *broker.Broker, ready func(context.Context) error, replica string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o := b.LastOverdue()
		if r.Method != http.MethodGet || r.URL.Path != "/readyz" || o.Count == 0 {
			h.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if ready(ctx) != nil {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"status": "degraded", "replica": replica, "leases_overdue": o.Count,
			"reason": fmt.Sprintf("%d leases are past their expiry and not yet revoked (the oldest expired %s ago); see mayfly_leases_overdue and mayfly leases",
				o.Count, time.Since(o.Oldest).Round(time.Second))})
	})
}

// advertisedAddr is the address other replicas and operators know this
// one by: the listening address, with the host name in place of an
// unspecified IP.
func advertisedAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// keepConnectedTargets drops targets added by a reload that have no
// connector yet (they need a restart) so requests for them fail clearly.
func keepConnectedTargets(bc *broker.Config, conns map[string]mayfly.Connector, log *slog.Logger) *broker.Config {
	for name := range bc.Targets {
		if _, ok := conns[name]; !ok {
			log.Warn("target added by reload needs a restart to be used", "target", name)
			delete(bc.Targets, name)
		}
	}
	return bc
}

// metricHooks feeds the broker's events into the metrics.
func metricHooks(m *metrics.Metrics) broker.Hooks {
	return broker.Hooks{
		Requested: func(decision string) { m.Requests.WithLabelValues(decision).Inc() },
		Decided: func(r *mayfly.Request) {
			m.RequestOutcomes.WithLabelValues(string(r.State)).Inc()
			if r.State == mayfly.RequestApproved && !r.DecidedAt.IsZero() {
				m.ApprovalWait.Observe(r.DecidedAt.Sub(r.CreatedAt).Seconds())
			}
		},
		Revoked: func(l *mayfly.Lease, lag time.Duration, err error) {
			if err != nil {
				m.RevocationFailures.WithLabelValues(l.Target).Inc()
				return
			}
			m.Revocations.WithLabelValues(l.Target, l.EndReason).Inc()
			if lag >= 0 {
				m.RevocationLag.Observe(lag.Seconds())
			}
		},
		Orphan: func(target, _ string) { m.Orphans.WithLabelValues(target).Inc() },
	}
}

// checkTargets checks every target's reachability each interval and
// publishes it as mayfly_target_up; while alerting reports true (one
// replica of those sharing the store), a target going down or coming back
// raises an alert.
func checkTargets(ctx context.Context, conns map[string]mayfly.Connector, m *metrics.Metrics, b *broker.Broker, every time.Duration, log *slog.Logger, alerting func() bool) {
	// alerted holds the targets this replica raised alert.target_unreachable
	// for and not yet alert.target_recovered; a replica that takes the
	// alerts over raises them for a target still down.
	alerted := map[string]bool{}
	check := func() {
		for name, c := range conns {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Check(cctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			v := 0.0
			if err == nil {
				v = 1
				if alerted[name] && alerting() {
					b.Alert(ctx, "alert.target_recovered", name, "", "Target "+name+" is reachable again",
						"Mayfly can reach "+name+" with its admin credential again.", "Nothing: pending revocations on it are retried as their backoff runs out (within scheduler.max_backoff).")
					alerted[name] = false
				}
			} else if !alerted[name] && alerting() {
				msg := broker.Scrub(mayfly.ErrorMessageOrText(err))
				b.Alert(ctx, "alert.target_unreachable", name, "", "Target "+name+" is unreachable",
					"Mayfly cannot reach "+name+" with its admin credential: "+msg,
					"New access to it fails and its revocations are retried until it answers. Check the target and the admin credential in the configuration; mayfly_target_up shows when it is back.")
				alerted[name] = true
			}
			m.TargetUp.WithLabelValues(name).Set(v)
		}
	}
	check()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}

// runSinks delivers the audit trail to the configured sinks and publishes
// their backlog.
func runSinks(ctx context.Context, r *sink.Runner, m *metrics.Metrics, b *broker.Broker, threshold int64) {
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		alerted := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for name, n := range r.Backlog() {
					m.SinkBacklog.WithLabelValues(name).Set(float64(n))
					if n > threshold && !alerted[name] {
						alerted[name] = true
						b.Alert(ctx, "alert.sink_backlog", "", "", fmt.Sprintf("Audit sink %s is %d events behind", name, n),
							fmt.Sprintf("The audit sink %s has %d events not yet delivered (threshold %d).", name, n, threshold),
							"Nothing is lost: delivery resumes from its cursor. Check that the sink's receiver is up and reachable; the server log names the error.")
					} else if n <= threshold/2 {
						alerted[name] = false
					}
				}
			}
		}
	}()
	r.Run(ctx)
}

// retain prunes the audit trail once a day to the retention period.
func retain(ctx context.Context, b *broker.Broker, keep time.Duration, archive string, log *slog.Logger) {
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		res, err := b.PruneAudit(ctx, broker.System, keep, archive)
		if err != nil && ctx.Err() == nil {
			log.Error("audit retention", "err", err)
		} else if res.Removed > 0 {
			log.Info("audit retention", "removed", res.Removed, "first_kept", res.FirstKept, "archive", res.Archive)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// directory answers the notifier's questions about users and requests.
type directory struct {
	mu      sync.RWMutex
	groups  map[string][]string
	emails  map[string]string
	members map[string][]string
	store   mayfly.Store
}

func (d *directory) load(cfg *config.Config) {
	g, em, mem := map[string][]string{}, map[string]string{}, map[string][]string{}
	for _, u := range cfg.Users {
		g[u.Name] = u.Groups
		em[u.Name] = u.Email
		for _, grp := range u.Groups {
			mem[grp] = append(mem[grp], u.Name)
		}
	}
	d.mu.Lock()
	d.groups, d.emails, d.members = g, em, mem
	d.mu.Unlock()
}

func (d *directory) Groups(user string) []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.groups[user]
}

func (d *directory) Email(user string) string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.emails[user]
}

func (d *directory) Members(group string) []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.members[group]
}

func (d *directory) RequestInfo(ctx context.Context, id string) (*mayfly.Request, error) {
	var r *mayfly.Request
	err := d.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = tx.GetRequest(id)
		return err
	})
	return r, err
}

func pprofMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
