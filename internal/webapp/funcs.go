package webapp

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"join":  strings.Join,
	"deref": func(p *int) int { return *p },
	// sessionID is the session an audit subject names ("session:ID").
	"sessionID": func(subject string) string { return strings.TrimPrefix(subject, "session:") },
	"hasPrefix": strings.HasPrefix,
	"secs":      func(s float64) string { return (time.Duration(s) * time.Second).String() },
	"pct":       func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
	"steps": func(steps []policy.Step) string {
		if len(steps) == 0 {
			return "automatic"
		}
		var parts []string
		for i, s := range steps {
			parts = append(parts, fmt.Sprintf("step %d: %d from %s", i+1, s.Approvals, strings.Join(s.ApproverGroups, ", ")))
		}
		return strings.Join(parts, "; then ")
	},
	"stepOf": func(r *mayfly.Request) string {
		if len(r.Steps) > 1 {
			return fmt.Sprintf("step %d of %d: %d of %d approvals from %s", r.Step+1, len(r.Steps), r.StepApprovals, r.ApprovalsRequired, strings.Join(r.ApproverGroups, ", "))
		}
		return fmt.Sprintf("%d of %d approvals from %s", r.StepApprovals, r.ApprovalsRequired, strings.Join(r.ApproverGroups, ", "))
	},
	"live": func(s mayfly.LeaseState) bool {
		return s == mayfly.LeaseProvisioning || s == mayfly.LeaseActive || s == mayfly.LeaseRevoking
	},
}
