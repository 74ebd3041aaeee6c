package report

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

var (
	day0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	day1 = day0.AddDate(0, 0, 1)
)

// fixture builds leases, requests and events from compact lease specs.
type fixture struct {
	in Input
}

type spec struct {
	id, user, target, grant, reason string
	start                           time.Time
	dur                             time.Duration // 0: still live
	approvers                       []string
	auto, breakGlass, reviewed      bool
	retries                         int
	endReason                       string
}

func newFixture(from, to, now time.Time, specs ...spec) *fixture {
	f := &fixture{in: Input{From: from, To: to, Now: now, Requests: map[string]*mayfly.Request{}}}
	for _, s := range specs {
		f.add(s)
	}
	return f
}

func (f *fixture) add(s spec) {
	reqID := "req_" + s.id
	if s.grant == "" {
		s.grant = "readonly"
	}
	l := &mayfly.Lease{ID: s.id, RequestID: reqID, Requester: s.user, Target: s.target, Grant: s.grant,
		Username: "mf_" + s.user, CreatedAt: s.start, ExpiresAt: s.start.Add(time.Hour), RevokeAttempts: s.retries,
		State: mayfly.LeaseActive}
	if s.dur > 0 {
		l.State, l.EndedAt, l.EndReason = mayfly.LeaseRevoked, s.start.Add(s.dur), s.endReason
		if l.EndReason == "" {
			l.EndReason = mayfly.EndExpired
		}
	}
	f.in.Leases = append(f.in.Leases, l)
	f.in.Requests[reqID] = &mayfly.Request{ID: reqID, Requester: s.user, Target: s.target, Grant: s.grant,
		Reason: s.reason, Policy: "pol-" + s.target, Approvers: s.approvers, CreatedAt: s.start.Add(-time.Minute),
		State: mayfly.RequestApproved, LeaseID: s.id}
	create := &mayfly.AuditEvent{Action: "request.create", Subject: "request:" + reqID, RequestID: reqID,
		Reason: s.reason, Data: map[string]string{"policy": "pol-" + s.target}}
	if s.breakGlass {
		create.Data["break_glass"] = "true"
	}
	approve := &mayfly.AuditEvent{Action: "request.approve", Subject: "request:" + reqID, RequestID: reqID}
	if s.auto {
		approve.Data = map[string]string{"auto": "true"}
	}
	f.in.Events = append(f.in.Events, create, approve)
	if s.reviewed {
		f.in.Events = append(f.in.Events, &mayfly.AuditEvent{Action: "lease.review", Subject: "lease:" + s.id,
			LeaseID: s.id, RequestID: reqID, Actor: "auditor"})
	}
}

func ids(r Report) []string {
	out := []string{}
	for _, a := range r.Leases {
		out = append(out, a.LeaseID)
	}
	return out
}

func TestBuildFilters(t *testing.T) {
	h := time.Hour
	f := newFixture(day0, day1, day1.Add(h),
		spec{id: "before", user: "ann", target: "pg", start: day0.Add(-3 * h), dur: h},                // ended before the window
		spec{id: "endsAtFrom", user: "ann", target: "pg", start: day0.Add(-h), dur: h},                // ends exactly at From
		spec{id: "straddleFrom", user: "bob", target: "pg", start: day0.Add(-h), dur: 2 * h},          // overlaps the start
		spec{id: "inside", user: "ann", target: "redis", start: day0.Add(5 * h), dur: h},              // inside
		spec{id: "straddleTo", user: "bob", target: "redis", start: day1.Add(-h), dur: 2 * h},         // overlaps the end
		spec{id: "startsAtTo", user: "ann", target: "pg", start: day1, dur: h},                        // starts at To
		spec{id: "liveOld", user: "cat", target: "mysql", start: day0.Add(-48 * h)},                   // live since before
		spec{id: "liveAfter", user: "cat", target: "mysql", start: day1.Add(30 * time.Minute)},        // live, after
		spec{id: "inside2", user: "cat", target: "pg", start: day0.Add(2 * h), dur: 10 * time.Minute}, // inside
	)
	// A duplicate and a nil lease are ignored.
	f.in.Leases = append(f.in.Leases, f.in.Leases[3], nil)

	tests := []struct {
		name         string
		target, user string
		from, to     time.Time
		want         []string
	}{
		{"window", "", "", day0, day1, []string{"liveOld", "straddleFrom", "inside2", "inside", "straddleTo"}},
		{"target", "pg", "", day0, day1, []string{"straddleFrom", "inside2"}},
		{"user", "", "ann", day0, day1, []string{"inside"}},
		{"target and user", "redis", "bob", day0, day1, []string{"straddleTo"}},
		{"no match", "redis", "cat", day0, day1, []string{}},
		{"open start", "pg", "", time.Time{}, day1, []string{"before", "endsAtFrom", "straddleFrom", "inside2"}},
		{"open end", "mysql", "", day0, time.Time{}, []string{"liveOld", "liveAfter"}},
		{"to before from", "", "", day1, day0, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := f.in
			in.Target, in.User, in.From, in.To = tt.target, tt.user, tt.from, tt.to
			r := Build(in)
			if got := ids(r); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("leases = %v; want %v", got, tt.want)
			}
			if got, want := r.Totals.Leases, len(tt.want); got != want {
				t.Errorf("Totals.Leases = %d; want %d", got, want)
			}
		})
	}
}

func TestBuildRow(t *testing.T) {
	now := day1.Add(2 * time.Hour)
	f := newFixture(day0, day1, now,
		spec{id: "l1", user: "ann", target: "pg", grant: "dba", reason: "INC-1 fix index", start: day0.Add(time.Hour),
			dur: 90 * time.Minute, approvers: []string{"bob", "cat"}, retries: 2, endReason: mayfly.EndDone},
		spec{id: "l2", user: "dan", target: "pg", reason: "outage", start: day0.Add(3 * time.Hour), breakGlass: true},
		spec{id: "l3", user: "eve", target: "pg", reason: "cache", start: day0.Add(4 * time.Hour), dur: time.Minute,
			auto: true, breakGlass: true, reviewed: true},
	)
	r := Build(f.in)
	if len(r.Leases) != 3 {
		t.Fatalf("got %d leases; want 3", len(r.Leases))
	}
	l1End := day0.Add(150 * time.Minute)
	want := []Access{
		{LeaseID: "l1", Requester: "ann", Target: "pg", Grant: "dba", Reason: "INC-1 fix index", Approvers: []string{"bob", "cat"},
			StartedAt: day0.Add(time.Hour), EndedAt: &l1End, EndReason: "done", DurationSeconds: 5400, Policy: "pol-pg", RevokeAttempts: 2,
			Extensions: []Extension{}, Sessions: []string{}},
		{LeaseID: "l2", Requester: "dan", Target: "pg", Grant: "readonly", Reason: "outage", Approvers: []string{},
			StartedAt: day0.Add(3 * time.Hour), DurationSeconds: int64((now.Sub(day0.Add(3 * time.Hour))) / time.Second),
			BreakGlass: true, ReviewRequired: true, Policy: "pol-pg", Extensions: []Extension{}, Sessions: []string{}},
		{LeaseID: "l3", Requester: "eve", Target: "pg", Grant: "readonly", Reason: "cache", Approvers: []string{},
			StartedAt: day0.Add(4 * time.Hour), EndedAt: ptr(day0.Add(4*time.Hour + time.Minute)), EndReason: "expired",
			DurationSeconds: 60, BreakGlass: true, Policy: "pol-pg", AutoApproved: true, Extensions: []Extension{}, Sessions: []string{}},
	}
	for i := range want {
		if got := r.Leases[i]; !reflect.DeepEqual(got, want[i]) {
			t.Errorf("lease %d =\n%+v; want\n%+v", i, got, want[i])
		}
	}
	if got, want := r.Generated, now; !got.Equal(want) {
		t.Errorf("Generated = %v; want %v", got, want)
	}
}

// A request missing from the input still gets its reason, policy and flags
// from the audit trail.
func TestBuildRequestFromEvents(t *testing.T) {
	f := newFixture(day0, day1, day1, spec{id: "l1", user: "ann", target: "pg", reason: "from events",
		start: day0, dur: time.Hour, breakGlass: true, auto: true})
	f.in.Requests = nil
	// Events that only carry a subject are matched too.
	for _, e := range f.in.Events {
		e.RequestID = ""
	}
	a := Build(f.in).Leases[0]
	if got, want := a.Reason, "from events"; got != want {
		t.Errorf("Reason = %q; want %q", got, want)
	}
	if got, want := a.Policy, "pol-pg"; got != want {
		t.Errorf("Policy = %q; want %q", got, want)
	}
	if !a.BreakGlass || !a.ReviewRequired || !a.AutoApproved {
		t.Errorf("BreakGlass, ReviewRequired, AutoApproved = %v, %v, %v; want all true", a.BreakGlass, a.ReviewRequired, a.AutoApproved)
	}
}

func ptr[T any](v T) *T { return &v }

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []int64
		want float64
	}{
		{nil, 0},
		{[]int64{7}, 7},
		{[]int64{9, 1, 5}, 5},
		{[]int64{4, 1, 3, 2}, 2.5},
		{[]int64{10, 20}, 15},
		{[]int64{3, 3, 1, 100, 100, 3}, 3},
	}
	for _, tt := range tests {
		if got := median(append([]int64(nil), tt.in...)); got != tt.want {
			t.Errorf("median(%v) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func TestTotals(t *testing.T) {
	m := time.Minute
	tests := []struct {
		name         string
		specs        []spec
		median       float64
		share        float64
		longest      *Longest
		retries      int
		glass        int
		unreviewed   int
		perTarget    map[string]int
		live         int
		histogramSum int
	}{
		{name: "none", perTarget: map[string]int{}},
		{
			name: "odd count",
			specs: []spec{
				{id: "a", user: "u", target: "pg", start: day0, dur: 10 * m, auto: true},
				{id: "b", user: "u", target: "pg", start: day0.Add(m), dur: 30 * m, retries: 1},
				{id: "c", user: "u", target: "redis", start: day0.Add(2 * m), dur: 20 * m, breakGlass: true},
			},
			median: 1200, share: 1.0 / 3, longest: &Longest{"b", 1800}, retries: 1, glass: 1, unreviewed: 1,
			perTarget: map[string]int{"pg": 2, "redis": 1}, histogramSum: 3,
		},
		{
			name: "even count",
			specs: []spec{
				{id: "a", user: "u", target: "pg", start: day0, dur: 10 * m, auto: true},
				{id: "b", user: "u", target: "pg", start: day0.Add(m), dur: 40 * m, auto: true},
				{id: "c", user: "u", target: "pg", start: day0.Add(2 * m), dur: 20 * m, breakGlass: true, reviewed: true},
				{id: "d", user: "u", target: "pg", start: day0.Add(3 * m), dur: 5 * m, retries: 4, auto: true},
			},
			median: 900, share: 0.75, longest: &Longest{"b", 2400}, retries: 1, glass: 1, unreviewed: 0,
			perTarget: map[string]int{"pg": 4}, histogramSum: 4,
		},
		{
			name: "live lease counts so far",
			specs: []spec{
				{id: "a", user: "u", target: "pg", start: day0, dur: 10 * m},
				{id: "live", user: "u", target: "pg", start: day1.Add(-2 * time.Hour)},
			},
			// now is day1 + 1h: the live lease has lasted 3h.
			median: (600 + 10800) / 2.0, longest: &Longest{"live", 10800}, perTarget: map[string]int{"pg": 2},
			live: 1, histogramSum: 2,
		},
		{
			name: "tie keeps the first",
			specs: []spec{
				{id: "x", user: "u", target: "pg", start: day0, dur: time.Hour},
				{id: "y", user: "u", target: "pg", start: day0.Add(m), dur: time.Hour},
			},
			median: 3600, longest: &Longest{"x", 3600}, perTarget: map[string]int{"pg": 2}, histogramSum: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Build(newFixture(day0, day1, day1.Add(time.Hour), tt.specs...).in)
			got := r.Totals
			if got.MedianDurationSeconds != tt.median {
				t.Errorf("median = %v; want %v", got.MedianDurationSeconds, tt.median)
			}
			if diff := got.AutoApprovedShare - tt.share; diff > 1e-9 || diff < -1e-9 {
				t.Errorf("auto-approved share = %v; want %v", got.AutoApprovedShare, tt.share)
			}
			if !reflect.DeepEqual(got.Longest, tt.longest) {
				t.Errorf("longest = %+v; want %+v", got.Longest, tt.longest)
			}
			if got.RevocationsWithRetries != tt.retries {
				t.Errorf("revocations with retries = %d; want %d", got.RevocationsWithRetries, tt.retries)
			}
			if got.BreakGlass != tt.glass || got.BreakGlassUnreviewed != tt.unreviewed {
				t.Errorf("break-glass, unreviewed = %d, %d; want %d, %d", got.BreakGlass, got.BreakGlassUnreviewed, tt.glass, tt.unreviewed)
			}
			if !reflect.DeepEqual(got.LeasesPerTarget, tt.perTarget) {
				t.Errorf("leases per target = %v; want %v", got.LeasesPerTarget, tt.perTarget)
			}
			if got.Live != tt.live {
				t.Errorf("live = %d; want %d", got.Live, tt.live)
			}
			sum := 0
			for _, b := range got.DurationHistogram {
				sum += b.Count
			}
			if sum != tt.histogramSum {
				t.Errorf("histogram counts sum to %d; want %d", sum, tt.histogramSum)
			}
		})
	}
}

func TestHistogramBuckets(t *testing.T) {
	tests := []struct {
		dur  time.Duration
		want string
	}{
		{time.Second, "< 15m"},
		{15*time.Minute - time.Second, "< 15m"},
		{15 * time.Minute, "15m–1h"},
		{time.Hour, "1h–4h"},
		{5 * time.Hour, "4h–8h"},
		{23 * time.Hour, "8h–24h"},
		{24 * time.Hour, "1d–7d"},
		{30 * 24 * time.Hour, "≥ 7d"},
	}
	for _, tt := range tests {
		r := Build(newFixture(time.Time{}, time.Time{}, day0.AddDate(0, 2, 0),
			spec{id: "a", user: "u", target: "pg", start: day0, dur: tt.dur}).in)
		var got []string
		for _, b := range r.Totals.DurationHistogram {
			if b.Count > 0 {
				got = append(got, b.Label)
			}
		}
		if len(got) != 1 || got[0] != tt.want {
			t.Errorf("duration %v falls in %v; want [%s]", tt.dur, got, tt.want)
		}
	}
}

func TestPerDay(t *testing.T) {
	h := time.Hour
	from, to := day0, day0.AddDate(0, 0, 3) // three days
	r := Build(newFixture(from, to, to.Add(48*h),
		spec{id: "a", user: "u", target: "pg", start: day0.Add(-5 * h), dur: 7 * h},              // day 0 only
		spec{id: "b", user: "u", target: "pg", start: day0.Add(20 * h), dur: 28 * h},             // days 0 and 1, ends at midnight of day 2
		spec{id: "c", user: "u", target: "redis", start: day0.Add(26 * h), dur: 10 * h},          // day 1 only
		spec{id: "d", user: "u", target: "redis", start: day0.Add(50 * h)},                       // live: day 2, not beyond the window
		spec{id: "e", user: "u", target: "redis", start: day0.Add(71 * h), dur: 0 * time.Second}, // live
	).in)
	want := map[string]map[string]int{
		"2025-03-01": {"pg": 2},
		"2025-03-02": {"pg": 1, "redis": 1},
		"2025-03-03": {"redis": 2},
	}
	if got := r.Totals.PerDay; !reflect.DeepEqual(got, want) {
		t.Errorf("per day = %v; want %v", got, want)
	}
	if got, want := len(r.days), 3; got != want {
		t.Errorf("chart spans %d days; want %d", got, want)
	}
}

func TestParseDate(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2025-03-01", day0},
		{" 2025-03-01 ", day0},
		{"2025-03-01T12:30:00Z", day0.Add(12*time.Hour + 30*time.Minute)},
		{"2025-03-01T12:30:00+02:00", day0.Add(10*time.Hour + 30*time.Minute)},
		{"2025-03-01T12:30:00.5Z", day0.Add(12*time.Hour + 30*time.Minute + 500*time.Millisecond)},
	}
	for _, tt := range tests {
		got, err := ParseDate(tt.in)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("ParseDate(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "yesterday", "2025-13-01", "2025-03-01 12:00", "01/03/2025", "2025-03-01T12:00"} {
		_, err := ParseDate(in)
		if got, want := mayfly.ErrorCode(err), mayfly.EINVALID; got != want {
			t.Errorf("ParseDate(%q) error code = %q (%v); want %q", in, got, err, want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		from, to time.Time
		want     string
	}{
		{day0, day1, ""},
		{time.Time{}, day1, ""},
		{day0, time.Time{}, ""},
		{day1, day0, mayfly.EINVALID},
		{day0, day0, mayfly.EINVALID},
	}
	for _, tt := range tests {
		err := Input{From: tt.from, To: tt.to}.Validate()
		if got := mayfly.ErrorCode(err); got != tt.want {
			t.Errorf("Validate(%v, %v) code = %q; want %q", tt.from, tt.to, got, tt.want)
		}
		var me *mayfly.Error
		if err != nil && !errors.As(err, &me) {
			t.Errorf("Validate error %v is not a *mayfly.Error", err)
		}
	}
}

// manyLeases makes n leases over 30 days on four targets.
func manyLeases(n int) Input {
	f := newFixture(day0, day0.AddDate(0, 0, 30), day0.AddDate(0, 0, 31))
	targets := []string{"pg-prod", "mysql-billing", "redis-cache", "ssh-bastion"}
	for i := range n {
		dur := time.Duration(1+(i*7919)%(36*60)) * time.Minute
		if i%17 == 0 {
			dur = 0
		}
		f.add(spec{id: fmt.Sprintf("lse_%05d", i), user: fmt.Sprintf("user%d", i%23), target: targets[i%len(targets)],
			reason: fmt.Sprintf("INC-%d investigate", 1000+i), start: day0.Add(time.Duration(i*(30*24*60)/n) * time.Minute),
			dur: dur, approvers: []string{"lead"}, auto: i%3 == 0, breakGlass: i%41 == 0, reviewed: i%82 == 0, retries: i % 5 / 4})
	}
	return f.in
}

// TestBuildLinksSessions: each lease lists the gateway sessions recorded
// under it (session.start events), in order, and only its own.
func TestBuildLinksSessions(t *testing.T) {
	f := newFixture(day0, day1, day1,
		spec{id: "l1", user: "alice", target: "db", start: day0.Add(time.Hour), dur: time.Hour},
		spec{id: "l2", user: "bob", target: "db", start: day0.Add(2 * time.Hour), dur: time.Hour})
	for _, e := range []struct{ lease, session string }{{"l1", "ses_a"}, {"l2", "ses_b"}, {"l1", "ses_c"}, {"", "ses_orphan"}} {
		f.in.Events = append(f.in.Events, &mayfly.AuditEvent{Action: "session.start", Subject: "session:" + e.session,
			LeaseID: e.lease, Data: map[string]string{"session_id": e.session}})
	}
	r := Build(f.in)
	got := map[string][]string{}
	for _, l := range r.Leases {
		got[l.LeaseID] = l.Sessions
	}
	want := map[string][]string{"l1": {"ses_a", "ses_c"}, "l2": {"ses_b"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sessions by lease = %v; want %v", got, want)
	}
}
