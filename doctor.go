package mayfly

import (
	"context"
	"fmt"
	"time"
)

// Finding statuses.
const (
	FindingOK   = "ok"
	FindingWarn = "warn"
	FindingFail = "fail"
)

// Finding is one thing `mayfly doctor` checked: what, how it stands, and
// when it is not ok, what to do about it.
type Finding struct {
	Target string `json:"target,omitempty"`
	Check  string `json:"check"`
	// Status is "ok", "warn" (works, with a risk to know) or "fail"
	// (something Mayfly needs is missing).
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// ClockFinding reports the difference between a target's clock and
// Mayfly's: ok within max, a warning beyond (expiry the target enforces
// itself is off by as much).
func ClockFinding(target string, skew, max time.Duration) Finding {
	if skew < 0 {
		skew = -skew
	}
	f := Finding{Target: target, Check: "clock", Status: FindingOK, Detail: fmt.Sprintf("within %s of Mayfly's", skew.Round(time.Millisecond))}
	if skew > max {
		f.Status = FindingWarn
		f.Detail = fmt.Sprintf("%s away from Mayfly's: expiry the target enforces itself is off by as much", skew.Round(time.Millisecond))
		f.Fix = "run NTP (chrony, systemd-timesyncd) on both machines"
	}
	return f
}

// MaxClockSkew is how far a target's clock may be from Mayfly's before
// doctor warns.
const MaxClockSkew = 2 * time.Second

// Findings builds the findings of one target.
type Findings struct {
	Target string
	List   []Finding
}

// Add appends a finding of the target.
func (fs *Findings) Add(check, status, detail, fix string) {
	fs.List = append(fs.List, Finding{Target: fs.Target, Check: check, Status: status, Detail: detail, Fix: fix})
}

// Diagnoser is a Connector that can say what its target lacks for the
// grants of t (privileges of its admin account, server settings, clock).
type Diagnoser interface {
	Diagnose(ctx context.Context, t Target) []Finding
}

// Diagnose returns c's findings for target t: its own when c is a
// Diagnoser, otherwise whether its Check passes.
func Diagnose(ctx context.Context, c Connector, t Target) []Finding {
	if d, ok := c.(Diagnoser); ok {
		return d.Diagnose(ctx, t)
	}
	if err := c.Check(ctx); err != nil {
		return []Finding{{Target: t.Name, Check: "health", Status: FindingFail, Detail: ErrorMessageOrText(err)}}
	}
	return []Finding{{Target: t.Name, Check: "health", Status: FindingOK, Detail: "the target's check passes"}}
}
