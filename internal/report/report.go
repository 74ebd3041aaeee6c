// Package report builds the access review auditors ask for: every lease that
// overlapped a time window, who asked for it and why, who approved it, how
// long it lasted and how it ended, with totals, break-glass leases still
// awaiting review, and renderings as JSON, CSV, a text table and a
// self-contained HTML page.
//
// The package is pure: callers query the store and pass what they found in
// an Input; Build filters it again and computes the report.
package report

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Audit actions and data keys the report reads.
const (
	actionRequestCreate  = "request.create"
	actionRequestApprove = "request.approve"
	actionLeaseReview    = "lease.review"
	actionLeaseExtend    = "lease.extend"
	actionSessionStart   = "session.start"
	dataBreakGlass       = "break_glass"
	dataAuto             = "auto"
	dataPolicy           = "policy"
)

// maxDays bounds how many days the per-day totals span, so an unbounded
// window cannot make the report grow without limit.
const maxDays = 3660

// Input is what the report is built from. Leases should hold every lease
// that overlaps [From, To); Build filters them again by window, target and
// user, so a broader query is harmless.
type Input struct {
	// From and To bound the window, To excluded. A zero value leaves that
	// side open.
	From, To time.Time
	// Target and User, when set, keep only the leases on that target or
	// requested by that user.
	Target, User string
	Leases       []*mayfly.Lease
	// Requests holds the leases' requests by request ID.
	Requests map[string]*mayfly.Request
	// Events are the audit events of those leases and requests.
	Events []*mayfly.AuditEvent
	// Now is when the report is made: the generation time, and the end of
	// leases that are still live.
	Now time.Time
}

// Validate reports whether the window makes sense: an EINVALID error when
// To is not after From.
func (in Input) Validate() error {
	if !in.From.IsZero() && !in.To.IsZero() && !in.To.After(in.From) {
		return mayfly.Errorf(mayfly.EINVALID, "report window: --to (%s) must be after --from (%s)",
			in.To.UTC().Format(time.RFC3339), in.From.UTC().Format(time.RFC3339))
	}
	return nil
}

// Access is one lease in the report.
type Access struct {
	LeaseID   string    `json:"lease_id"`
	Requester string    `json:"requester"`
	Target    string    `json:"target"`
	Grant     string    `json:"grant"`
	Reason    string    `json:"reason"`
	Approvers []string  `json:"approvers"`
	StartedAt time.Time `json:"started_at"`
	// EndedAt is nil while the lease is live.
	EndedAt   *time.Time `json:"ended_at"`
	EndReason string     `json:"end_reason"`
	// DurationSeconds is how long the lease lasted, or has lasted so far
	// when it is live.
	DurationSeconds int64 `json:"duration_seconds"`
	BreakGlass      bool  `json:"break_glass"`
	// ReviewRequired is set on a break-glass lease that nobody has
	// reviewed yet.
	ReviewRequired bool   `json:"review_required"`
	Policy         string `json:"policy"`
	AutoApproved   bool   `json:"auto_approved"`
	// RevokeAttempts counts failed revocation attempts before the one
	// that succeeded (or the next retry, while revoking).
	RevokeAttempts int `json:"revoke_attempts"`
	// Extensions are the times the lease was lengthened, in order.
	Extensions []Extension `json:"extensions"`
	// Sessions are the IDs of the gateway sessions recorded under the
	// lease, in the order they started (`mayfly sessions show ID`).
	Sessions []string `json:"sessions"`
}

// Extension is one lengthening of a lease: approved by policy at once
// (AutoApproved), or through extension request RequestID by Approvers.
type Extension struct {
	At           time.Time `json:"at"`
	BySeconds    int64     `json:"by_seconds"`
	Policy       string    `json:"policy"`
	RequestID    string    `json:"request_id,omitempty"`
	Approvers    []string  `json:"approvers"`
	AutoApproved bool      `json:"auto_approved"`
	Reason       string    `json:"reason"`
}

// Live reports whether the lease had not ended when the report was made.
func (a Access) Live() bool { return a.EndedAt == nil }

// Duration returns DurationSeconds as a time.Duration.
func (a Access) Duration() time.Duration { return time.Duration(a.DurationSeconds) * time.Second }

// Longest names the longest lease in the report.
type Longest struct {
	LeaseID         string `json:"lease_id"`
	DurationSeconds int64  `json:"duration_seconds"`
}

// Bucket is one bar of the duration histogram: leases lasting at least
// MinSeconds and less than MaxSeconds (no upper bound when MaxSeconds is 0).
type Bucket struct {
	Label      string `json:"label"`
	MinSeconds int64  `json:"min_seconds"`
	MaxSeconds int64  `json:"max_seconds"`
	Count      int    `json:"count"`
}

// Totals summarise the leases of a report.
type Totals struct {
	Leases          int            `json:"leases"`
	LeasesPerTarget map[string]int `json:"leases_per_target"`
	// Live counts leases that had not ended when the report was made.
	Live int `json:"live"`
	// MedianDurationSeconds is the median lease duration (live leases
	// count with their duration so far); 0 without leases.
	MedianDurationSeconds float64 `json:"median_duration_seconds"`
	// AutoApprovedShare is the share of leases approved automatically by
	// policy, from 0 to 1.
	AutoApprovedShare float64 `json:"auto_approved_share"`
	// Longest is nil without leases.
	Longest *Longest `json:"longest"`
	// RevocationsWithRetries counts leases whose revocation failed at
	// least once.
	RevocationsWithRetries int `json:"revocations_with_retries"`
	BreakGlass             int `json:"break_glass"`
	BreakGlassUnreviewed   int `json:"break_glass_unreviewed"`
	// PerDay counts, for each UTC day (YYYY-MM-DD) of the window and each
	// target, the leases active at some point that day. Days without
	// leases are left out.
	PerDay            map[string]map[string]int `json:"per_day"`
	DurationHistogram []Bucket                  `json:"duration_histogram"`
}

// Report is an access review over a window.
type Report struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Target and User are the filters the report was built with.
	Target    string    `json:"target,omitempty"`
	User      string    `json:"user,omitempty"`
	Generated time.Time `json:"generated_at"`
	Leases    []Access  `json:"leases"`
	Totals    Totals    `json:"totals"`

	// days are the UTC days the per-day chart spans, in order.
	days []time.Time
}

// UnmarshalJSON decodes a report and restores the days its per-day
// chart spans, so a report read back from JSON renders as the original.
func (r *Report) UnmarshalJSON(b []byte) error {
	type plain Report
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	r.days = days(r.From, r.To, r.Leases, r.Generated)
	return nil
}

// histogram are the duration buckets, in order.
var histogram = []struct {
	label string
	min   time.Duration
	max   time.Duration // 0: no upper bound
}{
	{"< 15m", 0, 15 * time.Minute},
	{"15m–1h", 15 * time.Minute, time.Hour},
	{"1h–4h", time.Hour, 4 * time.Hour},
	{"4h–8h", 4 * time.Hour, 8 * time.Hour},
	{"8h–24h", 8 * time.Hour, 24 * time.Hour},
	{"1d–7d", 24 * time.Hour, 7 * 24 * time.Hour},
	{"≥ 7d", 7 * 24 * time.Hour, 0},
}

// requestFacts is what the audit trail says about one request.
type requestFacts struct {
	breakGlass bool
	auto       bool
	reason     string // from request.create, when the request is missing
	policy     string
	hasReason  bool
}

// Build filters the input's leases to the window and filters, joins them
// with their requests and audit events, and computes the totals.
func Build(in Input) Report {
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC()
	r := Report{
		From: utc(in.From), To: utc(in.To), Target: in.Target, User: in.User,
		Generated: now, Leases: []Access{},
	}

	reqs := map[string]*requestFacts{}
	reviewed := map[string]bool{}
	extensions := map[string][]Extension{}
	sessions := map[string][]string{}
	for _, e := range in.Events {
		if e == nil {
			continue
		}
		switch e.Action {
		case actionRequestCreate, actionRequestApprove:
			id := subjectID(e.RequestID, e.Subject, "request:")
			if id == "" {
				continue
			}
			f := reqs[id]
			if f == nil {
				f = &requestFacts{}
				reqs[id] = f
			}
			if e.Action == actionRequestCreate {
				f.breakGlass = f.breakGlass || e.Data[dataBreakGlass] == "true"
				f.reason, f.hasReason = e.Reason, true
				f.policy = e.Data[dataPolicy]
				// Automatic approvals are recorded with the request itself;
				// break-glass access is counted as such, not as automatic.
				if e.Data["decision"] == "auto" {
					f.auto = true
				}
			} else if e.Data[dataAuto] == "true" {
				f.auto = true
			}
		case actionLeaseReview:
			if id := subjectID(e.LeaseID, e.Subject, "lease:"); id != "" {
				reviewed[id] = true
			}
		case actionLeaseExtend:
			if id := subjectID(e.LeaseID, e.Subject, "lease:"); id != "" {
				extensions[id] = append(extensions[id], extension(e))
			}
		case actionSessionStart:
			if id := e.Data["session_id"]; id != "" && e.LeaseID != "" {
				sessions[e.LeaseID] = append(sessions[e.LeaseID], id)
			}
		}
	}

	seen := map[string]bool{}
	leases := in.Leases
	if in.Validate() != nil {
		leases = nil // an empty window holds no lease
	}
	for _, l := range leases {
		if l == nil || seen[l.ID] || !keep(in, l) {
			continue
		}
		seen[l.ID] = true
		a := access(l, in.Requests[l.RequestID], reqs[l.RequestID], reviewed[l.ID], now)
		if x := extensions[l.ID]; len(x) > 0 {
			sort.SliceStable(x, func(i, j int) bool { return x[i].At.Before(x[j].At) })
			a.Extensions = x
		}
		if x := sessions[l.ID]; len(x) > 0 {
			a.Sessions = x
		}
		r.Leases = append(r.Leases, a)
	}
	sort.SliceStable(r.Leases, func(i, j int) bool {
		a, b := r.Leases[i], r.Leases[j]
		if !a.StartedAt.Equal(b.StartedAt) {
			return a.StartedAt.Before(b.StartedAt)
		}
		return a.LeaseID < b.LeaseID
	})
	r.days = days(r.From, r.To, r.Leases, now)
	r.Totals = totals(r.Leases, r.days, r.From, r.To, now)
	return r
}

// keep reports whether l overlaps the window and matches the filters.
func keep(in Input, l *mayfly.Lease) bool {
	if in.Target != "" && l.Target != in.Target {
		return false
	}
	if in.User != "" && l.Requester != in.User {
		return false
	}
	if !in.To.IsZero() && !l.CreatedAt.Before(in.To) {
		return false
	}
	// A lease without an end time is still open.
	if !in.From.IsZero() && !l.EndedAt.IsZero() && !l.EndedAt.After(in.From) {
		return false
	}
	return true
}

// extension reads a lease.extend event: one with the extension request
// it applied ("request") was approved by people, one without by policy.
func extension(e *mayfly.AuditEvent) Extension {
	x := Extension{At: e.Time.UTC(), Policy: e.Data[dataPolicy], RequestID: e.Data["request"], Approvers: []string{},
		Reason: e.Reason}
	if d, err := time.ParseDuration(e.Data["by"]); err == nil {
		x.BySeconds = int64(d / time.Second)
	}
	if a := e.Data["approvers"]; a != "" {
		x.Approvers = strings.Split(a, ",")
	}
	x.AutoApproved = x.RequestID == ""
	return x
}

func access(l *mayfly.Lease, req *mayfly.Request, f *requestFacts, reviewed bool, now time.Time) Access {
	if f == nil {
		f = &requestFacts{}
	}
	a := Access{
		LeaseID: l.ID, Requester: l.Requester, Target: l.Target, Grant: l.Grant, Extensions: []Extension{}, Sessions: []string{},
		StartedAt: l.CreatedAt.UTC(), EndReason: l.EndReason, Approvers: []string{},
		BreakGlass: f.breakGlass, AutoApproved: f.auto, RevokeAttempts: l.RevokeAttempts,
		Reason: f.reason, Policy: f.policy,
	}
	if req != nil {
		a.Reason, a.Policy = req.Reason, req.Policy
		a.Approvers = append(a.Approvers, req.Approvers...)
		a.BreakGlass = a.BreakGlass || req.BreakGlass
	}
	a.ReviewRequired = a.BreakGlass && !reviewed
	end := now
	if !l.EndedAt.IsZero() {
		t := l.EndedAt.UTC()
		a.EndedAt, end = &t, t
	}
	if d := end.Sub(a.StartedAt); d > 0 {
		a.DurationSeconds = int64(d / time.Second)
	}
	return a
}

func totals(leases []Access, days []time.Time, from, to, now time.Time) Totals {
	t := Totals{
		Leases: len(leases), LeasesPerTarget: map[string]int{},
		PerDay: map[string]map[string]int{}, DurationHistogram: make([]Bucket, len(histogram)),
	}
	for i, h := range histogram {
		t.DurationHistogram[i] = Bucket{Label: h.label, MinSeconds: int64(h.min / time.Second), MaxSeconds: int64(h.max / time.Second)}
	}
	durations := make([]int64, 0, len(leases))
	auto := 0
	for _, a := range leases {
		t.LeasesPerTarget[a.Target]++
		durations = append(durations, a.DurationSeconds)
		if a.Live() {
			t.Live++
		}
		if a.AutoApproved {
			auto++
		}
		if a.RevokeAttempts > 0 {
			t.RevocationsWithRetries++
		}
		if a.BreakGlass {
			t.BreakGlass++
		}
		if a.ReviewRequired {
			t.BreakGlassUnreviewed++
		}
		if t.Longest == nil || a.DurationSeconds > t.Longest.DurationSeconds {
			t.Longest = &Longest{LeaseID: a.LeaseID, DurationSeconds: a.DurationSeconds}
		}
		for i, h := range histogram {
			d := a.Duration()
			if d >= h.min && (h.max == 0 || d < h.max) {
				t.DurationHistogram[i].Count++
				break
			}
		}
		countDays(t.PerDay, a, days, from, to, now)
	}
	if len(leases) > 0 {
		t.AutoApprovedShare = float64(auto) / float64(len(leases))
	}
	t.MedianDurationSeconds = median(durations)
	return t
}

// countDays counts a in perDay on every day of days it was active, within
// the window.
func countDays(perDay map[string]map[string]int, a Access, days []time.Time, from, to, now time.Time) {
	if len(days) == 0 {
		return
	}
	start, end := a.StartedAt, now
	if a.EndedAt != nil {
		end = *a.EndedAt
	}
	if !from.IsZero() && start.Before(from) {
		start = from
	}
	if !to.IsZero() && end.After(to) {
		end = to
	}
	if end.After(start) {
		end = end.Add(-time.Nanosecond) // the end instant itself is excluded
	} else {
		end = start
	}
	first, last := maxTime(day(start), days[0]), minTime(day(end), days[len(days)-1])
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		k := d.Format(time.DateOnly)
		if perDay[k] == nil {
			perDay[k] = map[string]int{}
		}
		perDay[k][a.Target]++
	}
}

// median returns the median of v (the mean of the two middle values for an
// even count), 0 for none. It sorts v.
func median(v []int64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	m := len(v) / 2
	if len(v)%2 == 1 {
		return float64(v[m])
	}
	return (float64(v[m-1]) + float64(v[m])) / 2
}

// days returns the UTC days the per-day totals span: those of the window,
// or, for an open side, those of the leases.
func days(from, to time.Time, leases []Access, now time.Time) []time.Time {
	first, last := from, to.Add(-time.Nanosecond)
	if from.IsZero() || to.IsZero() {
		if len(leases) == 0 {
			return nil
		}
		lo, hi := leases[0].StartedAt, leases[0].StartedAt
		for _, a := range leases {
			end := now
			if a.EndedAt != nil {
				end = *a.EndedAt
			}
			lo = minTime(lo, a.StartedAt)
			hi = maxTime(hi, end)
		}
		if from.IsZero() {
			first = lo
		}
		if to.IsZero() {
			last = hi
		}
	}
	first, last = day(first), day(last)
	if last.Before(first) {
		return nil
	}
	if last.Sub(first) > maxDays*24*time.Hour {
		first = last.AddDate(0, 0, -maxDays+1)
	}
	var out []time.Time
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		out = append(out, d)
	}
	return out
}

// ParseDate parses a report boundary: a date "2006-01-02" (midnight UTC) or
// an RFC 3339 time.
func ParseDate(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, mayfly.Errorf(mayfly.EINVALID, "invalid date %q: want YYYY-MM-DD or an RFC 3339 time such as 2006-01-02T15:04:05Z", s)
}

// subjectID returns id, or the ID in a subject such as "lease:ID".
func subjectID(id, subject, prefix string) string {
	if id != "" {
		return id
	}
	if s, ok := strings.CutPrefix(subject, prefix); ok {
		return s
	}
	return ""
}

func day(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
