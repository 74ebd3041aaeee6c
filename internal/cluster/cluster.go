// Package cluster coordinates the server processes (replicas) that share
// one store: each has a random id made at start and records heartbeats in
// the store, and the work that must run on one replica at a time (the
// reconciler, audit sinks, notifications, the idle checker, the lapser)
// runs only while its replica holds that work's leader lease in the store.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/faillog"
)

// Defaults of a replica.
const (
	// LeaderTTL is how long a leader lease lasts unless renewed; it is
	// renewed every LeaderTTL/3, so the work moves to another replica
	// within LeaderTTL + LeaderTTL/3 of its holder's death, and within
	// LeaderTTL/3 when its holder stops cleanly (it releases its leases).
	LeaderTTL = 10 * time.Second
	// HeartbeatEvery is how often a replica records that it is alive.
	HeartbeatEvery = 5 * time.Second
	// forgetAfter is how long a replica that stopped heartbeating stays
	// listed.
	forgetAfter = time.Hour
)

// Replica is this server process among those sharing the store.
type Replica struct {
	store mayfly.Store
	clock mayfly.Clock
	log   *slog.Logger
	info  mayfly.Replica

	mu        sync.Mutex
	leading   map[string]bool          // the work this replica runs now
	attempted map[string]chan struct{} // closed after a work's first leader-lease attempt
}

// NewID returns a new random replica id.
func NewID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return "rep_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// New returns the replica id, serving at address with version, on st.
func New(st mayfly.Store, clk mayfly.Clock, log *slog.Logger, id, address, version string) *Replica {
	if clk == nil {
		clk = mayfly.SystemClock{}
	}
	if log == nil {
		log = slog.Default()
	}
	return &Replica{store: st, clock: clk, log: log,
		info: mayfly.Replica{ID: id, Address: address, Version: version, StartedAt: clk.Now().UTC()}, leading: map[string]bool{}, attempted: map[string]chan struct{}{}}
}

// ID is the replica's id.
func (r *Replica) ID() string { return r.info.ID }

// Leads reports whether this replica runs the work name now, under
// RunWhileLeader.
func (r *Replica) Leads(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leading[name]
}

// Attempted returns a channel closed once RunWhileLeader made its first
// attempt to take the leader lease name (and started the work if it took
// it), so that what depends on Leads(name) may wait for it.
func (r *Replica) Attempted(name string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.attempted[name]
	if !ok {
		c = make(chan struct{})
		r.attempted[name] = c
	}
	return c
}

func (r *Replica) setLeading(name string, on bool) {
	r.mu.Lock()
	r.leading[name] = on
	r.mu.Unlock()
}

// Beat records one heartbeat.
func (r *Replica) Beat(ctx context.Context) error {
	info := r.info
	info.LastSeen = r.clock.Now().UTC()
	return r.store.Update(ctx, func(tx mayfly.Tx) error { return tx.Heartbeat(&info) })
}

// RunHeartbeat records a heartbeat at once and then every every until ctx
// ends, forgets the replicas silent for an hour, and removes this
// replica's record when it stops.
func (r *Replica) RunHeartbeat(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = HeartbeatEvery
	}
	t := mayfly.NewTicker(r.clock, every)
	defer t.Stop()
	fail := faillog.New(r.log, r.clock, "cluster: heartbeat", "replica", r.info.ID)
	for {
		if err := r.Beat(ctx); err != nil && ctx.Err() == nil {
			fail.Fail(err)
		} else if err == nil {
			fail.OK()
			r.forget(ctx)
		}
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := r.store.Update(sctx, func(tx mayfly.Tx) error { return tx.DeleteReplica(r.info.ID) }); err != nil {
				r.log.Warn("cluster: removing this replica's record at stop", "replica", r.info.ID, "err", err)
			}
			return
		case <-t.C():
		}
	}
}

// forget removes the records of replicas silent for forgetAfter.
func (r *Replica) forget(ctx context.Context) {
	cut := r.clock.Now().Add(-forgetAfter)
	err := r.store.Update(ctx, func(tx mayfly.Tx) error {
		rs, err := tx.ListReplicas()
		if err != nil {
			return err
		}
		for _, x := range rs {
			if x.LastSeen.Before(cut) {
				if err := tx.DeleteReplica(x.ID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		r.log.Warn("cluster: forgetting silent replicas", "err", err)
	}
}

// RunWhileLeader runs fn while this replica holds the leader lease name,
// until ctx ends. It tries to take the lease at once and then every ttl/3,
// renewing it while held. When the lease is lost (another replica has it,
// or the store does not answer, so it may lapse) fn's context is cancelled
// and RunWhileLeader waits for fn to return before trying again. When fn
// returns by itself while the lease is held, it is run again at the next
// renewal. When ctx ends, fn is cancelled and waited for, and the lease is
// released so another replica takes the work over at once.
func (r *Replica) RunWhileLeader(ctx context.Context, name string, ttl time.Duration, fn func(ctx context.Context) error) {
	if ttl <= 0 {
		ttl = LeaderTTL
	}
	t := mayfly.NewTicker(r.clock, ttl/3)
	defer t.Stop()
	var w *work // the run of fn while this replica leads, or nil
	leading := false
	fail := faillog.New(r.log, r.clock, "cluster: leader lease", "work", name, "replica", r.info.ID)
	first := true
	for {
		var held bool
		err := r.store.Update(ctx, func(tx mayfly.Tx) error {
			var err error
			held, err = tx.AcquireLeader(name, r.info.ID, r.clock.Now().UTC(), ttl)
			return err
		})
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			fail.Fail(err)
		} else {
			fail.OK()
		}
		switch {
		case held && w != nil && w.returned():
			w = nil // fn returned by itself: run it again
		case !held && w != nil:
			r.log.Info("cluster: leader lease lost; stopping the work here", "work", name, "replica", r.info.ID)
			r.setLeading(name, false)
			w.stop()
			w = nil
		}
		if held && w == nil {
			if !leading {
				r.log.Info("cluster: this replica leads the work", "work", name, "replica", r.info.ID)
			}
			w = start(ctx, name, fn, r.log)
			r.setLeading(name, true)
		}
		leading = held
		if first {
			first = false
			r.mu.Lock()
			c, ok := r.attempted[name]
			if !ok {
				c = make(chan struct{})
				r.attempted[name] = c
			}
			r.mu.Unlock()
			close(c)
		}
		select {
		case <-ctx.Done():
		case <-t.C():
			continue
		}
		break
	}
	if w == nil {
		return
	}
	r.setLeading(name, false)
	w.stop()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.store.Update(sctx, func(tx mayfly.Tx) error { return tx.ReleaseLeader(name, r.info.ID) }); err != nil {
		r.log.Warn("cluster: releasing the leader lease at stop", "work", name, "err", err)
	}
}

// work is one run of a leader's fn.
type work struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func start(ctx context.Context, name string, fn func(ctx context.Context) error, log *slog.Logger) *work {
	fctx, cancel := context.WithCancel(ctx)
	w := &work{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		if err := fn(fctx); err != nil && fctx.Err() == nil {
			log.Error("cluster: work stopped", "work", name, "err", err)
		}
	}()
	return w
}

// returned reports whether fn has returned (and then releases w).
func (w *work) returned() bool {
	select {
	case <-w.done:
		w.cancel()
		return true
	default:
		return false
	}
}

// stop cancels fn and waits for it to return.
func (w *work) stop() {
	w.cancel()
	<-w.done
}

// Status is what GET /v1/cluster shows: the replicas sharing the store,
// each with the work it leads.
type Status struct {
	// Self is the id of the replica that answered.
	Self     string          `json:"self"`
	Replicas []ReplicaStatus `json:"replicas"`
}

// ReplicaStatus is one replica in a Status.
type ReplicaStatus struct {
	mayfly.Replica
	// Alive is false when the replica has not recorded a heartbeat for
	// three heartbeat intervals.
	Alive bool `json:"alive"`
	// Leads lists the work whose leader lease the replica holds.
	Leads []string `json:"leads"`
}

// Status reads the replicas and the leader leases from the store.
func (r *Replica) Status(ctx context.Context) (Status, error) {
	var rs []*mayfly.Replica
	var ls []*mayfly.Leader
	err := r.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		if rs, err = tx.ListReplicas(); err != nil {
			return err
		}
		ls, err = tx.ListLeaders()
		return err
	})
	if err != nil {
		return Status{}, err
	}
	now := r.clock.Now()
	st := Status{Self: r.info.ID, Replicas: []ReplicaStatus{}}
	for _, x := range rs {
		rs := ReplicaStatus{Replica: *x, Alive: now.Sub(x.LastSeen) < 3*HeartbeatEvery, Leads: []string{}}
		for _, l := range ls {
			if l.Holder == x.ID && l.Until.After(now) {
				rs.Leads = append(rs.Leads, l.Name)
			}
		}
		slices.Sort(rs.Leads)
		st.Replicas = append(st.Replicas, rs)
	}
	return st, nil
}

// SetAddress sets the address the heartbeats record; call it before
// RunHeartbeat.
func (r *Replica) SetAddress(addr string) { r.info.Address = addr }

// OthersAlive returns the ids of the replicas other than self that
// recorded a heartbeat within three heartbeat intervals of now.
func OthersAlive(ctx context.Context, st mayfly.Store, now time.Time, self string) ([]string, error) {
	var rs []*mayfly.Replica
	err := st.View(ctx, func(tx mayfly.Tx) error {
		var err error
		rs, err = tx.ListReplicas()
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rs {
		if r.ID != self && now.Sub(r.LastSeen) < 3*HeartbeatEvery {
			out = append(out, r.ID)
		}
	}
	return out, nil
}

// AuditListener is a store that tells of the audit events committed
// through any replica as they commit (the PostgreSQL store, with
// LISTEN/NOTIFY). ListenAudit runs until ctx ends, calls appended with the
// sequence number of the newest event of each commit, and appended(0)
// each time it (re)starts listening, as notifications may have been
// missed before; errors (a lost connection, reopened with backoff) go to
// onErr.
type AuditListener interface {
	ListenAudit(ctx context.Context, appended func(seq int64), onErr func(error))
}

// SafetyPoll is how often WatchAudit still reads the newest audit event
// while it listens to the store's notifications, in case one is lost.
const SafetyPoll = 10 * time.Second

// DemandLinger is how long WatchAudit keeps listening after the last
// holder of its Demand let go, so that views opened and closed in turn
// do not open a connection each.
const DemandLinger = 30 * time.Second

// Demand counts what on this replica needs to hear of other replicas'
// commits as they happen: live views while they are open (audit
// streams, the web app's live updates) and work that reacts to them
// (the gateways closing revoked leases' connections; the senders of
// notifications, audit sinks and Slack messages). On PostgreSQL every
// commit wakes each listening replica, and its listening connection's
// server process, for its notification; a replica whose views nobody
// watches would spend that CPU, on the database's machine too, for
// nothing. The zero value holds nothing.
type Demand struct {
	mu      sync.Mutex
	n       int
	changed chan struct{} // closed at the next change of n; nil until asked for
}

// Hold records one more holder until release is called; a second call
// of release does nothing.
func (d *Demand) Hold() (release func()) {
	d.add(1)
	var once sync.Once
	return func() { once.Do(func() { d.add(-1) }) }
}

func (d *Demand) add(k int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n += k
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
}

// state says whether anything holds d, and returns a channel closed at
// the next change.
func (d *Demand) state() (held bool, changed <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.changed == nil {
		d.changed = make(chan struct{})
	}
	return d.n > 0, d.changed
}

// WatchAudit calls changed each time the sequence number of the newest
// audit event moves, until ctx ends: other replicas' commits then wake
// this one's live views (audit streams, sinks, notifications), as its
// own commits do at once. It reads the newest event every every. When st
// is an AuditListener and demand is nil or held, it also listens to the
// store's notifications, which wake it within milliseconds of a commit,
// and reads the newest event only every SafetyPoll besides; it stops
// listening DemandLinger after the demand's last holder let go.
func WatchAudit(ctx context.Context, st mayfly.Store, demand *Demand, clk mayfly.Clock, every time.Duration, log *slog.Logger, changed func()) {
	if clk == nil {
		clk = mayfly.SystemClock{}
	}
	if log == nil {
		log = slog.Default()
	}
	if demand == nil {
		demand = &Demand{}
		defer demand.Hold()()
	}
	var mu sync.Mutex
	last := int64(-1) // the newest sequence number seen
	// Wake-ups, coalesced: the head moved; read the head now.
	moved, repoll := make(chan struct{}, 1), make(chan struct{}, 1)
	signal := func(c chan struct{}) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	listen := func(seq int64) {
		if seq == 0 {
			signal(repoll)
			return
		}
		mu.Lock()
		newer := seq > last
		if newer {
			last = seq
		}
		mu.Unlock()
		if newer {
			signal(moved)
		}
	}
	l, canListen := st.(AuditListener)
	// While listening: how to stop, and a channel closed once stopped.
	var stopListening context.CancelFunc
	var stopped chan struct{}
	startListening := func() {
		lctx, cancel := context.WithCancel(ctx)
		stopListening, stopped = cancel, make(chan struct{})
		go func(done chan struct{}) {
			defer close(done)
			l.ListenAudit(lctx, listen, func(err error) {
				log.Warn("cluster: audit notifications interrupted; listening again", "err", err)
			})
		}(stopped)
	}
	defer func() {
		if stopListening != nil {
			stopListening()
			<-stopped
		}
	}()
	t := mayfly.NewTicker(clk, every)
	defer t.Stop()
	var lastPoll, unheldSince time.Time
	poll := func() {
		lastPoll = clk.Now()
		var head int64
		err := st.View(ctx, func(tx mayfly.Tx) error {
			es, err := tx.ListAudit(mayfly.AuditFilter{Newest: true, Limit: 1})
			if len(es) > 0 {
				head = es[0].Seq
			}
			return err
		})
		if err != nil {
			return
		}
		mu.Lock()
		differs := last >= 0 && head != last
		if head > last || differs {
			last = head
		}
		mu.Unlock()
		if differs {
			changed()
		}
	}
	poll()
	for {
		held, demandChanged := demand.state()
		switch {
		case !canListen:
		case held && stopListening == nil:
			startListening() // it reads the head once it listens
		case held:
			unheldSince = time.Time{}
		case stopListening != nil && unheldSince.IsZero():
			unheldSince = clk.Now()
		case stopListening != nil && clk.Now().Sub(unheldSince) >= DemandLinger:
			stopListening()
			<-stopped
			stopListening, unheldSince = nil, time.Time{}
		}
		select {
		case <-ctx.Done():
			return
		case <-demandChanged:
		case <-moved:
			changed()
		case <-repoll:
			poll()
		case <-t.C():
			if stopListening == nil || clk.Now().Sub(lastPoll) >= SafetyPoll {
				poll()
			}
		}
	}
}

// Follow runs refresh every interval until ctx ends: for what a replica
// keeps outside the store (in memory, in a file) and other replicas change
// through it. onErr hears of a failed refresh, and of nothing more until
// one has succeeded again.
func Follow(ctx context.Context, every time.Duration, refresh func(context.Context) error, onErr func(error)) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := refresh(ctx)
		if err != nil && ctx.Err() == nil && !failing && onErr != nil {
			onErr(err)
		}
		failing = err != nil
	}
}
