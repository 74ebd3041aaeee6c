package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayflyhq/mayfly"
)

// CursorKey returns the setting under which the sink named name keeps the
// sequence number of the last event it confirmed.
func CursorKey(name string) string { return "audit_sink_cursor:" + name }

// deliverer sends a batch of events to one destination and returns nil
// only once the destination has confirmed all of them.
type deliverer interface {
	deliver(ctx context.Context, events []*mayfly.AuditEvent) error
	close() error
}

// Runner delivers the audit trail to every configured sink, each from its
// own durable cursor, in its own goroutine.
type Runner struct {
	store  mayfly.Store
	logger *slog.Logger
	sinks  []*worker

	// poll is how often each sink looks for new events when nobody calls
	// Notify; minBackoff and maxBackoff bound the wait after a failure.
	poll       time.Duration
	minBackoff time.Duration
	maxBackoff time.Duration

	running atomic.Bool
}

// worker is the state of one sink.
type worker struct {
	name  string
	key   string
	batch int
	out   deliverer
	wake  chan struct{}

	loaded atomic.Bool
	cursor atomic.Int64 // last confirmed seq
	head   atomic.Int64 // highest seq seen in the store
}

// New returns a Runner for cfgs, which must pass Validate. getenv resolves
// webhook secrets (SecretEnv); a named variable that is unset or empty is
// an error. Nothing is opened or dialled until Run.
func New(store mayfly.Store, cfgs []Config, getenv func(string) string, logger *slog.Logger) (*Runner, error) {
	if err := Validate(cfgs); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{
		store:      store,
		logger:     logger,
		poll:       time.Second,
		minBackoff: time.Second,
		maxBackoff: time.Minute,
	}
	for _, c := range cfgs {
		c = c.withDefaults()
		var out deliverer
		switch c.Type {
		case TypeFile:
			out = newFileSink(c)
		case TypeSyslog:
			s, err := newSyslogSink(c)
			if err != nil {
				return nil, err
			}
			out = s
		case TypeWebhook:
			var secret []byte
			if c.SecretEnv != "" {
				v := getenv(c.SecretEnv)
				if v == "" {
					return nil, mayfly.Errorf(mayfly.EINVALID, "audit sink %q: environment variable %s (secret_env) is not set", c.Name, c.SecretEnv)
				}
				secret = []byte(v)
			}
			out = newWebhookSink(c, secret)
		}
		r.sinks = append(r.sinks, &worker{
			name:  c.Name,
			key:   CursorKey(c.Name),
			batch: c.BatchSize,
			out:   out,
			wake:  make(chan struct{}, 1),
		})
	}
	return r, nil
}

// Notify tells every sink that new events were committed. It never blocks;
// call it after each transaction that appended audit events.
func (r *Runner) Notify() {
	for _, w := range r.sinks {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// Backlog returns, per sink name, how many events are in the store but not
// yet confirmed by the sink, as of the sink's last look at the store (at
// least every poll interval while it is healthy). A sink that has not read
// its cursor yet reports 0.
func (r *Runner) Backlog() map[string]int64 {
	m := make(map[string]int64, len(r.sinks))
	for _, w := range r.sinks {
		var n int64
		if w.loaded.Load() {
			n = max(w.head.Load()-w.cursor.Load(), 0)
		}
		m[w.name] = n
	}
	return m
}

// Run delivers events until ctx is done, then closes every sink and
// returns nil (or what closing them failed with). It runs one goroutine per sink; a sink that fails is retried
// with capped exponential backoff, from its cursor, without affecting the
// others. Run may be called once.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("audit sinks: run called twice")
	}
	var wg sync.WaitGroup
	for _, w := range r.sinks {
		wg.Go(func() { r.loop(ctx, w) })
	}
	wg.Wait()
	var errs []error
	for _, w := range r.sinks {
		if err := w.out.close(); err != nil {
			errs = append(errs, fmt.Errorf("close audit sink %s: %w", w.name, err))
		}
	}
	return errors.Join(errs...)
}

// loop is the goroutine of one sink.
func (r *Runner) loop(ctx context.Context, w *worker) {
	ticker := time.NewTicker(r.poll)
	defer ticker.Stop()
	failures := 0
	for ctx.Err() == nil {
		err := r.drain(ctx, w)
		if err != nil && ctx.Err() == nil {
			failures++
			wait := backoff(r.minBackoff, r.maxBackoff, failures)
			r.logger.Warn("audit sink delivery failed; will retry",
				"sink", w.name, "cursor", w.cursor.Load(), "failures", failures, "retry_in", wait.String(), "err", err)
			// Wake-ups during the backoff are kept for afterwards: a
			// busy broker must not hammer a sink that is down.
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			continue
		}
		if failures > 0 {
			r.logger.Info("audit sink delivering again", "sink", w.name, "cursor", w.cursor.Load(), "failures", failures)
			failures = 0
		}
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-ticker.C:
		}
	}
}

// drain delivers batches from the cursor until the sink has caught up with
// the store.
func (r *Runner) drain(ctx context.Context, w *worker) error {
	if !w.loaded.Load() {
		if err := r.loadCursor(ctx, w); err != nil {
			return err
		}
	}
	for ctx.Err() == nil {
		var events []*mayfly.AuditEvent
		err := r.store.View(ctx, func(tx mayfly.Tx) error {
			var err error
			events, err = tx.ListAudit(mayfly.AuditFilter{AfterSeq: w.cursor.Load(), Limit: w.batch})
			if err != nil || len(events) < w.batch {
				return err
			}
			// A full batch: find the end of the trail for Backlog (one
			// read when the last known end is still the end).
			head, err := lastSeq(tx, max(w.head.Load(), events[len(events)-1].Seq))
			if err != nil {
				return err
			}
			w.head.Store(head)
			return nil
		})
		if err != nil {
			return fmt.Errorf("read audit events after %d: %w", w.cursor.Load(), err)
		}
		if len(events) == 0 {
			w.head.Store(max(w.head.Load(), w.cursor.Load()))
			return nil
		}
		last := events[len(events)-1].Seq
		if len(events) < w.batch {
			w.head.Store(max(w.head.Load(), last))
		}
		// A delivery under way when ctx ends (the runner stopping, or its
		// replica losing the lead) is finished, not cut off: cut off, the
		// receiver may have the batch without the cursor moving past it,
		// and the next run would send it again. Each sink bounds it too.
		dctx, cancel := mayfly.Finishing(ctx)
		err = w.out.deliver(dctx, events)
		cancel()
		if err != nil {
			return fmt.Errorf("deliver events %d to %d: %w", events[0].Seq, last, err)
		}
		// The sink has the batch: record it even when shutting down, so
		// a restart does not send it again. If saving fails, the batch is
		// delivered again (at least once).
		if err := r.saveCursor(ctx, w, last); err != nil {
			return err
		}
		w.cursor.Store(last)
		if len(events) < w.batch {
			return nil
		}
	}
	return ctx.Err()
}

// saveCursor stores the cursor of w, with a bounded wait that does not end
// with ctx.
func (r *Runner) saveCursor(ctx context.Context, w *worker, seq int64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.store.Update(ctx, func(tx mayfly.Tx) error {
		return tx.PutSetting(w.key, strconv.FormatInt(seq, 10))
	}); err != nil {
		return fmt.Errorf("save cursor %d: %w", seq, err)
	}
	return nil
}

// loadCursor reads the sink's cursor from the store; unset means 0.
func (r *Runner) loadCursor(ctx context.Context, w *worker) error {
	var v string
	err := r.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		v, err = tx.GetSetting(w.key)
		return err
	})
	var cursor int64
	switch {
	case mayfly.ErrorCode(err) == mayfly.ENOTFOUND:
	case err != nil:
		return fmt.Errorf("read cursor: %w", err)
	default:
		cursor, err = strconv.ParseInt(v, 10, 64)
		if err != nil || cursor < 0 {
			return fmt.Errorf("setting %s holds %q, not a sequence number", w.key, v)
		}
	}
	w.cursor.Store(cursor)
	w.head.Store(max(w.head.Load(), cursor))
	w.loaded.Store(true)
	return nil
}

// lastSeq returns the sequence number of the last event, given one that
// exists (known): one indexed single-row read when known is the last, else
// an exponential then binary search.
func lastSeq(tx mayfly.Tx, known int64) (int64, error) {
	// after returns the first seq after x, or 0 when there is none.
	after := func(x int64) (int64, error) {
		ev, err := tx.ListAudit(mayfly.AuditFilter{AfterSeq: x, Limit: 1})
		if err != nil || len(ev) == 0 {
			return 0, err
		}
		return ev[0].Seq, nil
	}
	lo, err := after(known) // an event exists at lo
	if err != nil || lo == 0 {
		return known, err
	}
	var hi int64 // no event after hi, once set
	for step := int64(1024); hi == 0; step *= 2 {
		s, err := after(lo + step - 1)
		if err != nil {
			return 0, err
		}
		if s == 0 {
			hi = lo + step - 1
		} else {
			lo = s
		}
	}
	for {
		s, err := after(lo)
		if err != nil || s == 0 {
			return lo, err
		}
		mid := s + (hi-s)/2
		m, err := after(mid)
		if err != nil {
			return 0, err
		}
		if m == 0 {
			lo, hi = s, mid
		} else {
			lo = m
		}
	}
}

// backoff returns the wait after the n-th consecutive failure: min doubled
// n-1 times, capped at max.
func backoff(minWait, maxWait time.Duration, n int) time.Duration {
	d := minWait
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
}
