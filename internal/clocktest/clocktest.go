// Package clocktest provides a fake mayfly.TickerClock for tests: time
// moves only when the test says so, and tickers fire as it passes their
// deadlines, so periodic work runs without sleeping.
package clocktest

import (
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Fake is a manual clock. The zero value is not usable; use New.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*ticker
	timers  []*timer
	added   chan struct{}
	armed   chan struct{}
}

// New returns a fake clock at now.
func New(now time.Time) *Fake {
	return &Fake{now: now, added: make(chan struct{}, 64), armed: make(chan struct{}, 1)}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Set moves the clock to t without firing tickers (for tests that only
// read the time).
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

// Advance moves the clock forward by d and fires every ticker whose next
// tick is now due, once (a ticker drops the ticks its reader has missed,
// like time.Ticker).
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	now := f.now
	live := f.tickers[:0]
	for _, t := range f.tickers {
		if t.stopped {
			continue
		}
		live = append(live, t)
		if now.Before(t.next) {
			continue
		}
		for !now.Before(t.next) {
			t.next = t.next.Add(t.period)
		}
		select {
		case t.c <- now:
		default:
		}
	}
	f.tickers = live
	for _, t := range f.timers {
		if t.active && !now.Before(t.when) {
			t.fire(now)
		}
	}
	f.mu.Unlock()
}

// WaitArmed blocks until some timer of the clock is armed with a deadline
// after the clock's time: the loop under test is asleep, waiting for time
// to pass. It returns that deadline, or the zero time when no timer is
// armed within 10 seconds of real time (the loop sleeps on another clock,
// or not at all).
func (f *Fake) WaitArmed() time.Time {
	giveUp := time.After(10 * time.Second)
	for {
		f.mu.Lock()
		for _, t := range f.timers {
			if t.active && t.when.After(f.now) {
				when := t.when
				f.mu.Unlock()
				return when
			}
		}
		f.mu.Unlock()
		select {
		case <-f.armed:
		case <-giveUp:
			return time.Time{}
		}
	}
}

// NewTimer returns a timer that fires once Advance reaches its deadline (at
// once when d <= 0).
func (f *Fake) NewTimer(d time.Duration) mayfly.Timer {
	t := &timer{f: f, c: make(chan time.Time, 1)}
	f.mu.Lock()
	f.timers = append(f.timers, t)
	f.mu.Unlock()
	t.Reset(d)
	return t
}

type timer struct {
	f      *Fake
	c      chan time.Time
	when   time.Time
	active bool
}

// fire delivers now and disarms the timer; f.mu is held.
func (t *timer) fire(now time.Time) {
	t.active = false
	select {
	case t.c <- now:
	default:
	}
}

func (t *timer) C() <-chan time.Time { return t.c }

// Stop disarms the timer and drops a value not yet received, as
// time.Timer does since Go 1.23.
func (t *timer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	was := t.active
	t.active = false
	select {
	case <-t.c:
	default:
	}
	return was
}

func (t *timer) Reset(d time.Duration) bool {
	t.f.mu.Lock()
	was := t.active
	select {
	case <-t.c:
	default:
	}
	t.when, t.active = t.f.now.Add(d), true
	if d <= 0 {
		t.fire(t.f.now)
	}
	t.f.mu.Unlock()
	select {
	case t.f.armed <- struct{}{}:
	default:
	}
	return was
}

// WaitTickers blocks until at least n tickers were made on the clock, so
// a test advances time only once the loop under test is listening.
func (f *Fake) WaitTickers(n int) {
	for {
		f.mu.Lock()
		have := len(f.tickers)
		f.mu.Unlock()
		if have >= n {
			return
		}
		<-f.added
	}
}

// NewTicker returns a ticker that fires as Advance passes each period.
func (f *Fake) NewTicker(d time.Duration) mayfly.Ticker {
	if d <= 0 {
		panic("clocktest: non-positive ticker period")
	}
	f.mu.Lock()
	t := &ticker{f: f, c: make(chan time.Time, 1), period: d, next: f.now.Add(d)}
	f.tickers = append(f.tickers, t)
	f.mu.Unlock()
	select {
	case f.added <- struct{}{}:
	default:
	}
	return t
}

type ticker struct {
	f       *Fake
	c       chan time.Time
	period  time.Duration
	next    time.Time
	stopped bool
}

func (t *ticker) C() <-chan time.Time { return t.c }

func (t *ticker) Stop() {
	t.f.mu.Lock()
	t.stopped = true
	t.f.mu.Unlock()
}
