package faillog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/clocktest"
)

// TestRepeat: a call failing every second for three minutes is logged when
// it starts and about once a minute, not 180 times; its end is logged once
// with how many failures it had; a new failure starts over.
func TestRepeat(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	var out bytes.Buffer
	r := New(slog.New(slog.NewTextHandler(&out, nil)), clk, "scheduler: due leases", "replica", "A")
	lines := func() []string {
		s := strings.TrimSpace(out.String())
		out.Reset()
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	r.OK()
	if got := lines(); got != nil {
		t.Fatalf("a success with no failure before logged %q", got)
	}
	down := errors.New("store unreachable")
	for range 180 {
		r.Fail(down)
		clk.Advance(time.Second)
	}
	got := lines()
	if len(got) != 3 {
		t.Fatalf("180 failures a second apart logged %d lines; want 3 (the start, then once a minute):\n%s", len(got), strings.Join(got, "\n"))
	}
	for _, want := range []string{"level=ERROR", `msg="scheduler: due leases"`, "replica=A", `err="store unreachable"`} {
		if !strings.Contains(got[0], want) {
			t.Errorf("first line %q; want %s", got[0], want)
		}
	}
	if !strings.Contains(got[1], "failures=61") || !strings.Contains(got[1], "failing_for=1m0s") {
		t.Errorf("second line %q; want failures=61 failing_for=1m0s", got[1])
	}
	r.OK()
	r.OK()
	got = lines()
	if len(got) != 1 || !strings.Contains(got[0], "level=INFO") || !strings.Contains(got[0], `msg="scheduler: due leases: working again"`) ||
		!strings.Contains(got[0], "failures=180") || !strings.Contains(got[0], "failed_for=3m0s") {
		t.Fatalf("after the failure ended: %q; want one INFO line with failures=180 failed_for=3m0s", got)
	}
	r.Fail(down)
	if got := lines(); len(got) != 1 || strings.Contains(got[0], "failures=") {
		t.Fatalf("a new failure logged %q; want one line, as a start", got)
	}
}
