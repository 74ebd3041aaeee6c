// Package faillog logs a failure that repeats, such as a loop's call to a
// store that is down: when it starts, about once a minute while it lasts
// (with how many times it failed), and when it ends. A replica whose store
// is unreachable otherwise logs each of its loops' failures every second.
package faillog

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Every is how often a failure that lasts is logged again.
const Every = time.Minute

// Repeat is one repeating call's failures. The zero value is not usable;
// make one with New.
type Repeat struct {
	log   *slog.Logger
	clock mayfly.Clock
	msg   string
	args  []any

	mu     sync.Mutex
	n      int       // failures since the failure began
	since  time.Time // when it began; zero while the call succeeds
	logged time.Time // when it was last logged
}

// New returns a Repeat that logs msg with args (key, value pairs) to log.
// A nil clock is the system clock.
func New(log *slog.Logger, clock mayfly.Clock, msg string, args ...any) *Repeat {
	if clock == nil {
		clock = mayfly.SystemClock{}
	}
	// Clipped: each log call appends its own attributes to a copy.
	return &Repeat{log: log, clock: clock, msg: msg, args: slices.Clip(args)}
}

// Fail records a failure with err: logged at once when the call had
// succeeded before, then at most once every Every while it keeps failing.
func (r *Repeat) Fail(err error) {
	now := r.clock.Now()
	r.mu.Lock()
	r.n++
	first := r.since.IsZero()
	if first {
		r.since = now
	}
	due := first || now.Sub(r.logged) >= Every
	if due {
		r.logged = now
	}
	n, since := r.n, r.since
	r.mu.Unlock()
	switch {
	case first:
		r.log.Error(r.msg, append(r.args, "err", err)...)
	case due:
		r.log.Error(r.msg, append(r.args, "err", err, "failures", n, "failing_for", now.Sub(since).Round(time.Second).String())...)
	}
}

// OK records a success: a failure that was under way is logged as over.
func (r *Repeat) OK() {
	now := r.clock.Now()
	r.mu.Lock()
	n, since := r.n, r.since
	r.n, r.since = 0, time.Time{}
	r.mu.Unlock()
	if n > 0 {
		r.log.Info(r.msg+": working again", append(r.args, "failures", n, "failed_for", now.Sub(since).Round(time.Second).String())...)
	}
}
