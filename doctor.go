package mayfly

import "context"

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

// Diagnoser is a Connector that can say what its target lacks for the
// grants of t (privileges of its admin account, server settings, clock).
type Diagnoser interface {
	Diagnose(ctx context.Context, t Target) []Finding
}
