package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/faillog"
)

// SchedulerOptions tune the revocation scheduler.
type SchedulerOptions struct {
	// Concurrency is how many revocation attempts run at once over all
	// targets (default 16). A target with no attempt running may always
	// start one, so no number of slow targets starves another.
	Concurrency int
	// PerTarget bounds the attempts running at once on one target
	// (default 4, at most Concurrency): a target that hangs holds no more.
	PerTarget int
	// BatchSize is how many due leases one pass claims (default 500).
	BatchSize int
	// MaxSleep bounds one sleep (default 30s). A lease made by another
	// replica is not announced to this one: it is found by the first pass
	// after its deadline, so on a store replicas share this bounds how late
	// the leases of a replica that died are revoked (SharedMaxSleep).
	MaxSleep time.Duration
	// AttemptTimeout bounds one revocation attempt (default 30s); a batch
	// revoked in one call gets twice as long. An attempt that runs out of
	// time or cannot connect marks its target down.
	AttemptTimeout time.Duration
	// ShutdownGrace is how long a stop waits for attempts in flight
	// before cancelling them (default 1s). RunScheduler returns at most
	// about a second after that, even when a target hangs.
	ShutdownGrace time.Duration
	// Holder names this scheduler in its claims of due leases (the
	// replica's id; a random one by default). Schedulers of replicas
	// sharing one store never attempt the same lease at once.
	Holder string
	// ClaimFor is how long a claim of a due lease lasts. An outcome
	// recorded clears it, and the claims of a scheduler that died lapse
	// after ClaimFor, when another replica takes those leases over. On a
	// store that renews claims (mayfly.ClaimRenewer) the default is
	// DefaultClaimFor and the scheduler renews the claims of the leases
	// it has in flight every ClaimFor/3, however long their attempts
	// take; on another store it is twice AttemptTimeout, and at least a
	// minute, renewed only by the passes that read those leases again.
	ClaimFor time.Duration
}

// DefaultClaimFor is the term of a claim of a due lease on a store that
// renews claims: a replica killed while revoking leaves them to another
// within this term (and one poll of the scheduler, a quarter second).
const DefaultClaimFor = 3 * time.Second

// SharedMaxSleep is the longest sleep of a scheduler on a store replicas
// share (PostgreSQL). Each replica wakes its own scheduler for the leases
// it makes; a lease made by a replica that died before its deadline is
// found by another replica's next pass, at most this long after it. Such a
// pass of an idle replica costs two indexed reads.
const SharedMaxSleep = time.Second

var dueStates = []mayfly.LeaseState{mayfly.LeaseActive, mayfly.LeaseRevoking, mayfly.LeaseProvisioning}

type outcome struct {
	lease *mayfly.Lease
	err   error
}

// Recover runs once at start-up, before the scheduler: leases left in
// provisioning by a crash are undone (their credential was never shown or
// may be incomplete), and leases being revoked are made due now. It reads
// only leases in those two states.
func (b *Broker) Recover(ctx context.Context) (int, error) {
	n := 0
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		n = 0 // the store may run this again
		ls, err := tx.ListLeases(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseRevoking}})
		if err != nil {
			return err
		}
		now := b.clock.Now().UTC()
		for _, l := range ls {
			l.DueAt = now
			if l.State == mayfly.LeaseProvisioning {
				l.State, l.EndReason = mayfly.LeaseRevoking, mayfly.EndFailed
				if err := b.audit(tx, System, "lease.recover", nil, l, "provisioning interrupted; undoing", map[string]string{"username": l.Username}); err != nil {
					return err
				}
			}
			if err := tx.UpdateLease(l); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// RunScheduler revokes due leases until ctx is done: it reads due leases
// in batches with an indexed query, hands them to per-target lanes that
// revoke them concurrently (batched per target where the connector can),
// records the outcomes in batched transactions, and sleeps until the
// nearest deadline. Leases in flight are tracked in memory; nothing is
// written before the target is touched, so a crash leaves them due and they
// are picked up again at start-up. Failed revocations become due again
// after a capped, jittered backoff and are retried forever.
//
// Each target has its own lane: at most PerTarget attempts run on it at
// once, so a target that hangs holds only its own share of the workers. A
// target whose attempt runs out of time or cannot connect is marked down
// for a backoff of its own; while it is down its due leases are recorded as
// failed attempts without touching it (each backs off as any failure does),
// and then one attempt at a time probes it until it answers.
//
// When ctx ends, RunScheduler stops taking work, waits ShutdownGrace for
// attempts in flight, then cancels them and returns about a second later at
// most. The failures of cancelled attempts are not recorded: those leases
// stay due and are retried at the next start.
func (b *Broker) RunScheduler(ctx context.Context, o SchedulerOptions) error {
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.PerTarget <= 0 {
		o.PerTarget = 4
	}
	o.PerTarget = min(o.PerTarget, o.Concurrency)
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.MaxSleep <= 0 {
		o.MaxSleep = 30 * time.Second
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 30 * time.Second
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = time.Second
	}
	if o.Holder == "" {
		o.Holder = NewID("sched_")
	}
	renews := false
	_ = b.store.View(ctx, func(tx mayfly.Tx) error {
		_, renews = tx.(mayfly.ClaimRenewer)
		return nil
	})
	if o.ClaimFor <= 0 {
		o.ClaimFor = max(2*o.AttemptTimeout, time.Minute)
		if renews {
			o.ClaimFor = DefaultClaimFor
		}
	}
	var mu sync.Mutex
	inflight := map[string]bool{}
	// finished remembers, for a lease whose outcome was recorded, the
	// epoch at which it left inflight. A read that began before that saw
	// the lease still due: it must not be taken as a fresh due lease and
	// revoked again.
	var epoch uint64
	finished := map[string]uint64{}
	results := make(chan outcome, o.Concurrency*4)
	abandon := make(chan struct{})
	actx, cancelAttempts := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAttempts()
	// onTarget holds the leases in flight whose attempt on the target has
	// not ended yet: only their claims are renewed. A lease whose outcome
	// waits to be recorded keeps the claim it has (o.ClaimFor); should
	// recording take longer, another replica may revoke it again, which
	// is idempotent, and its outcome is recorded once. Renewing those too
	// locked thousands of rows during a burst, and the recording of
	// outcomes waited on them.
	onTarget := map[string]bool{}
	ln := &lanes{b: b, o: o, ctx: actx, results: results, abandon: abandon, byTarget: map[string]*lane{},
		attempted: func(batch []*mayfly.Lease) {
			mu.Lock()
			for _, l := range batch {
				delete(onTarget, l.ID)
			}
			mu.Unlock()
		}}
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		b.commitOutcomes(results, abandon, func(ids []string) {
			mu.Lock()
			epoch++
			for _, id := range ids {
				delete(inflight, id)
				delete(onTarget, id)
				finished[id] = epoch
			}
			mu.Unlock()
		})
	}()
	defer func() {
		// After the lanes stopped: the claims of leases whose outcome was
		// not recorded are released, so that this replica restarted, or
		// another, revokes them at once.
		mu.Lock()
		ids := slices.Collect(maps.Keys(inflight))
		mu.Unlock()
		if len(ids) == 0 {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err := b.store.Update(rctx, func(tx mayfly.Tx) error {
			if r, ok := tx.(mayfly.ClaimReleaser); ok {
				return r.ReleaseClaims(o.Holder, ids)
			}
			return nil
		})
		if err != nil {
			b.log.Warn("scheduler: releasing claims at stop; they lapse by themselves", "leases", len(ids), "claim_for", o.ClaimFor.String(), "err", err)
		}
	}()
	if renews {
		// Deferred before ln.stop, so it runs after it: the claims of
		// attempts still finishing at stop stay renewed.
		rctx, stopRenewing := context.WithCancel(context.WithoutCancel(ctx))
		renewDone := make(chan struct{})
		defer func() { stopRenewing(); <-renewDone }()
		go func() {
			defer close(renewDone)
			b.renewClaims(rctx, o, func() []string {
				mu.Lock()
				defer mu.Unlock()
				return slices.Collect(maps.Keys(onTarget))
			})
		}()
	}
	defer ln.stop(cancelAttempts, committerDone)

	timer := mayfly.NewTimer(b.clock, 0)
	defer timer.Stop()
	// While more are due than one pass takes, each pass reads on from where
	// the previous one stopped (cursor), rather than reading the leases
	// still in flight again. A lease made due behind the cursor meanwhile
	// is read by the first pass from the start, once the backlog is read.
	var cursor mayfly.DueCursor
	// A store that is down fails every pass, a second apart.
	dueFail := faillog.New(b.log, b.clock, "scheduler: due leases")
	nextFail := faillog.New(b.log, b.clock, "scheduler: next deadline")
	for {
		b.nextWake.Store(0)
		limit := o.BatchSize
		if cursor == (mayfly.DueCursor{}) {
			mu.Lock()
			limit += len(inflight)
			mu.Unlock()
		}
		now := b.clock.Now().UTC()
		mu.Lock()
		readAt := epoch
		mu.Unlock()
		var due []*mayfly.Lease
		err := b.store.Update(ctx, func(tx mayfly.Tx) error {
			var err error
			due, err = tx.ClaimDue(now, dueStates, o.Holder, now.Add(o.ClaimFor), cursor, limit)
			return err
		})
		if err != nil {
			// The claims were not committed: another replica may hold
			// these leases now.
			due = nil
			if ctx.Err() == nil {
				dueFail.Fail(err)
			}
		} else {
			dueFail.OK()
		}
		var fresh []*mayfly.Lease
		mu.Lock()
		for _, l := range due {
			if done, ok := finished[l.ID]; ok && done > readAt {
				continue // recorded after this read began: stale
			}
			if !inflight[l.ID] {
				inflight[l.ID], onTarget[l.ID] = true, true
				fresh = append(fresh, l)
			}
		}
		for id, done := range finished {
			if done <= readAt {
				delete(finished, id) // this read saw its outcome
			}
		}
		mu.Unlock()
		for _, l := range fresh {
			switch {
			case l.State == mayfly.LeaseProvisioning:
				l.EndReason = mayfly.EndFailed
			case l.State == mayfly.LeaseActive && now.Before(l.ExpiresAt):
				// Due before its expiry: a session-bound lease whose
				// client stopped sending heartbeats.
				l.EndReason = mayfly.EndSessionLost
			case l.State == mayfly.LeaseActive:
				l.EndReason = mayfly.EndExpired
			}
		}
		ln.add(fresh)
		if len(due) == limit && err == nil {
			cursor = mayfly.DueCursorOf(due[len(due)-1])
			continue // more are due
		}
		cursor = mayfly.DueCursor{}
		sleep := o.MaxSleep
		var next time.Time
		var ok bool
		err = b.store.View(ctx, func(tx mayfly.Tx) error {
			next, ok, err = tx.NextDue(dueStates)
			return err
		})
		if err == nil {
			nextFail.OK()
		}
		if err != nil && ctx.Err() == nil {
			nextFail.Fail(err)
			sleep = time.Second
		} else if ok {
			if d := next.Sub(b.clock.Now()); d < sleep {
				sleep = max(d, 0)
			}
		}
		mu.Lock()
		busy := len(inflight)
		mu.Unlock()
		if sleep <= 0 && (busy > 0 || len(due) == 0) && !next.After(now) {
			// The earliest due leases are in flight here or claimed by
			// another replica (their completion wakes us, or their claims
			// lapse): sleep until the first deadline after them, so that
			// leases held by a slow target are not read again and again.
			// A deadline that passed after this pass read (next > now) is
			// read again at once instead.
			sleep = min(b.untilNextFutureDue(ctx, now), busyPoll)
		}
		b.nextWake.Store(b.clock.Now().Add(sleep).UnixNano())
		timer.Reset(sleep)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C():
		case <-b.wake:
			timer.Stop()
		}
	}
}

// renewClaims extends the claims of the leases in flight every
// o.ClaimFor/3 until ctx ends. A renewal that fails is retried at the next
// tick; should the claims lapse meanwhile, another replica may attempt
// those leases too: revocation on the target is idempotent, and recording
// an outcome reads the lease locked, so only the first outcome counts.
func (b *Broker) renewClaims(ctx context.Context, o SchedulerOptions, inflight func() []string) {
	t := mayfly.NewTicker(b.clock, o.ClaimFor/3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		ids := inflight()
		if len(ids) == 0 {
			continue
		}
		slices.Sort(ids) // rows locked in one order by every replica
		until := b.clock.Now().UTC().Add(o.ClaimFor)
		err := b.store.Update(ctx, func(tx mayfly.Tx) error {
			_, err := tx.(mayfly.ClaimRenewer).RenewClaims(o.Holder, ids, until)
			return err
		})
		if err != nil && ctx.Err() == nil {
			b.log.Warn("scheduler: renewing claims", "leases", len(ids), "err", err)
		}
	}
}

// busyPoll bounds the scheduler's sleep while leases are in flight, as a
// safety net should a wake-up be missed.
const busyPoll = 250 * time.Millisecond

// untilNextFutureDue returns how long until the earliest deadline after
// read, the time due leases were last read, or busyPoll when there is none
// within busyPoll of now (or the store fails). The window ends busyPoll
// after now, not after read: a pass over many due leases may take a good
// part of busyPoll, and a deadline just past read+busyPoll would then be
// slept through by up to busyPoll.
func (b *Broker) untilNextFutureDue(ctx context.Context, read time.Time) time.Duration {
	var next []*mayfly.Lease
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		next, err = tx.DueLeases(b.clock.Now().Add(busyPoll), dueStates, mayfly.DueCursor{DueAt: read.Add(time.Nanosecond)}, 1)
		return err
	})
	if err != nil || len(next) == 0 {
		return busyPoll
	}
	return max(next[0].DueAt.Sub(b.clock.Now()), 0)
}

// commitOutcomes records revocation outcomes, many per transaction, until
// results is closed, or abandon is closed (then it records what is already
// handed over and returns).
func (b *Broker) commitOutcomes(results <-chan outcome, abandon <-chan struct{}, done func(ids []string)) {
	const maxBatch = 256
	for {
		var first outcome
		select {
		case r, ok := <-results:
			if !ok {
				return
			}
			first = r
		case <-abandon:
			select {
			case r := <-results:
				first = r
			default:
				return
			}
		}
		batch := []outcome{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-results:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		// In lease order: transactions that lock the same leases (another
		// batch, the claims' renewal) then wait for each other instead of
		// deadlocking.
		sort.Slice(batch, func(i, j int) bool { return batch[i].lease.ID < batch[j].lease.ID })
		var after []func()
		err := b.store.Update(context.Background(), func(tx mayfly.Tx) error {
			after = after[:0] // a transaction run again starts afresh
			return b.recordRevocations(tx, batch, &after)
		})
		if err == nil {
			runAll(after)
		}
		if err != nil {
			// The leases stay due and are revoked again; the target side is
			// idempotent.
			b.log.Error("scheduler: record revocations", "count", len(batch), "err", err)
		}
		ids := make([]string, len(batch))
		var retry time.Time
		for i, r := range batch {
			ids[i] = r.lease.ID
			if r.err != nil && (retry.IsZero() || r.lease.DueAt.Before(retry)) {
				retry = r.lease.DueAt
			}
		}
		done(ids)
		// The scheduler is woken only when this moves a deadline before
		// its wake-up: waking it after every commit of a burst would have
		// it read every lease in flight again each time.
		switch {
		case err != nil:
			b.poke()
		case !retry.IsZero():
			b.pokeAt(retry)
		}
		b.committed()
	}
}

// Bounds on how many leases of one target one worker revokes at once. A
// target revokes a few large batches faster than many small ones at once
// (PostgreSQL: 10,000 roles in 0.22 – 0.28 s as batches of 128 – 256 on 4
// connections, 0.47 s as batches of 32 on 16), so a burst is cut into
// batches of at least minChunk, spread over the workers only beyond that.
const (
	minChunk = 128
	maxChunk = 256
)

// batchSize is how many of n queued leases of one target go to one of
// workers attempts: a few leases go to one attempt each, a burst becomes
// batches of minChunk to maxChunk leases.
func batchSize(n, workers int) int {
	size := (n + workers - 1) / workers
	if n >= 2*minChunk {
		size = max(size, minChunk)
	}
	return min(max(size, 1), maxChunk)
}

// revokeBatch revokes leases of one target, in one batched call when the
// connector supports it, each attempt bounded by timeout (twice that for a
// batch). down is the error of an attempt that found the target not
// answering (see unreachable); the leases after it in a batch revoked one
// by one are not attempted and get errNotAttempted. Once ctx is cancelled
// no further lease is attempted, and those leases get no outcome.
func (b *Broker) revokeBatch(ctx context.Context, batch []*mayfly.Lease, timeout time.Duration) (out []outcome, down error) {
	out = make([]outcome, 0, len(batch))
	conn := b.connectors[batch[0].Target]
	if br, ok := conn.(mayfly.BatchRevoker); ok && len(batch) > 1 {
		reqs := make([]mayfly.RevokeRequest, len(batch))
		for i, l := range batch {
			reqs[i] = mayfly.RevokeRequest{LeaseID: l.ID, Username: l.Username, ExpiresAt: l.ExpiresAt}
		}
		rctx, cancel := context.WithTimeout(ctx, 2*timeout)
		defer cancel()
		for _, l := range batch {
			b.awaitCommit(rctx, l.ID) // see holdRevocations
		}
		errs := br.RevokeBatch(rctx, reqs)
		for i, l := range batch {
			out = append(out, outcome{l, errs[i]})
			if down == nil && unreachable(rctx, errs[i]) {
				down = errs[i]
			}
		}
		return out, down
	}
	for i, l := range batch {
		if ctx.Err() != nil {
			break
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		err := b.revokeOnTarget(actx, l)
		isDown := unreachable(actx, err)
		cancel()
		out = append(out, outcome{l, err})
		if isDown {
			for _, rest := range batch[i+1:] {
				out = append(out, outcome{rest, errNotAttempted(rest.Target, Scrub(err.Error()))})
			}
			return out, err
		}
	}
	return out, nil
}

// unreachable reports whether err, from an attempt run with actx, says the
// target is not answering: the attempt ran out of time, or a connection
// could not be made or broke. A cancelled attempt (a stop) is not.
func unreachable(actx context.Context, err error) bool {
	if err == nil || errors.Is(actx.Err(), context.Canceled) {
		return false
	}
	if errors.Is(actx.Err(), context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// errNotAttempted is recorded for a lease whose target was found not
// answering, without touching the target.
func errNotAttempted(target, cause string) error {
	return fmt.Errorf("not attempted: target %s is not answering (%s); retrying with backoff", target, cause)
}

// lanes run revocation attempts per target: each target's due leases wait
// in its own queue and at most PerTarget attempts run on it at once; all
// targets share Concurrency attempts, except that a target with none
// running may always start one. Outcomes go to results.
type lanes struct {
	b       *Broker
	o       SchedulerOptions
	ctx     context.Context // parent of every attempt; cancelled to stop
	results chan outcome
	abandon chan struct{} // closed when the committer is no longer waited for
	wg      sync.WaitGroup
	// attempted is told of a batch's leases once its attempt on the target
	// has ended, before their outcomes are handed over.
	attempted func([]*mayfly.Lease)

	mu       sync.Mutex
	byTarget map[string]*lane
	order    []string // target names, sorted
	next     int      // where the next round-robin round starts
	running  int
	closed   bool
}

// lane is one target's queue and health.
type lane struct {
	queue   []*mayfly.Lease
	running int
	// failures counts consecutive attempts that found the target not
	// answering; while it is not zero one attempt at a time probes it.
	failures  int
	downUntil time.Time
	lastErr   string
}

func (p *lanes) lane(target string) *lane {
	l, ok := p.byTarget[target]
	if !ok {
		l = &lane{}
		p.byTarget[target] = l
		p.order = append(p.order, target)
		sort.Strings(p.order)
	}
	return l
}

// add queues due leases on their targets' lanes and starts what it can.
func (p *lanes) add(ls []*mayfly.Lease) {
	if len(ls) == 0 {
		return
	}
	p.mu.Lock()
	for _, l := range ls {
		q := p.lane(l.Target)
		q.queue = append(q.queue, l)
	}
	p.mu.Unlock()
	p.pump()
}

// pump records the queued leases of targets that are down as failed
// attempts (they back off without holding a worker) and starts attempts,
// one batch per target per round, while slots are free.
func (p *lanes) pump() {
	now := p.b.clock.Now()
	var skipped []outcome
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	for _, name := range p.order {
		q := p.byTarget[name]
		if len(q.queue) > 0 && now.Before(q.downUntil) {
			err := errNotAttempted(name, q.lastErr)
			for _, l := range q.queue {
				skipped = append(skipped, outcome{l, err})
			}
			q.queue = nil
		}
	}
	for started := true; started; {
		started = false
		for i := range p.order {
			name := p.order[(p.next+i)%len(p.order)]
			q := p.byTarget[name]
			limit := p.o.PerTarget
			if q.failures > 0 {
				limit = 1
			}
			if len(q.queue) == 0 || q.running >= limit || (p.running >= p.o.Concurrency && q.running > 0) {
				continue
			}
			n := batchSize(len(q.queue), limit)
			batch := q.queue[:n:n]
			q.queue = q.queue[n:]
			q.running++
			p.running++
			p.wg.Add(1)
			go p.attempt(name, batch)
			started = true
		}
		p.next++
	}
	p.mu.Unlock()
	p.send(skipped)
}

// attempt revokes one batch of a target's leases, updates the target's
// health and hands the outcomes over.
func (p *lanes) attempt(target string, batch []*mayfly.Lease) {
	defer p.wg.Done()
	out, down := p.b.revokeBatch(p.ctx, batch, p.o.AttemptTimeout)
	p.attempted(batch)
	stopping := p.ctx.Err() != nil
	now := p.b.clock.Now()
	p.mu.Lock()
	q := p.byTarget[target]
	q.running--
	p.running--
	switch {
	case stopping:
	case down != nil:
		q.failures++
		delay := Backoff(q.failures, p.b.maxBackoff)
		q.downUntil, q.lastErr = now.Add(delay), Scrub(down.Error())
		if q.failures == 1 {
			p.b.log.Warn("scheduler: target not answering; backing off its revocations", "target", target, "retry_in", delay.String(), "err", q.lastErr)
		}
	case q.failures > 0:
		p.b.log.Info("scheduler: target answering again", "target", target)
		q.failures, q.downUntil = 0, time.Time{}
	}
	if !stopping {
		p.b.setTargetDown(target, q.failures > 0, q.lastErr)
	}
	p.mu.Unlock()
	if stopping {
		// A failure caused by the stop is not recorded: the lease stays
		// due and is retried at the next start.
		kept := out[:0]
		for _, o := range out {
			if o.err == nil {
				kept = append(kept, o)
			}
		}
		out = kept
	}
	p.send(out)
	p.pump()
}

// send hands outcomes to the committer, unless the scheduler gave up
// waiting for it.
func (p *lanes) send(out []outcome) {
	for _, o := range out {
		select {
		case p.results <- o:
		case <-p.abandon:
			return
		}
	}
}

// stop ends the lanes: queued leases are dropped (they stay due), attempts
// in flight get ShutdownGrace to finish and are then cancelled; after one
// more second those still running (a connector ignoring its context) are
// abandoned. It returns once the committer has recorded what it was given.
func (p *lanes) stop(cancel context.CancelFunc, committerDone <-chan struct{}) {
	p.mu.Lock()
	p.closed = true
	for _, q := range p.byTarget {
		q.queue = nil
	}
	p.mu.Unlock()
	idle := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(idle)
	}()
	t := time.NewTimer(p.o.ShutdownGrace)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		cancel()
		t.Reset(time.Second)
		select {
		case <-idle:
		case <-t.C:
			p.b.log.Warn("scheduler: revocation attempts still running at stop; their leases stay due")
			close(p.abandon)
			<-committerDone
			return
		}
	}
	close(p.results)
	<-committerDone
}
