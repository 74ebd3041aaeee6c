package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report json: %w", err)
	}
	return nil
}

// csvHeader names the CSV columns, the same names as the JSON fields.
var csvHeader = []string{
	"lease_id", "requester", "target", "grant", "reason", "approvers", "started_at", "ended_at",
	"end_reason", "duration_seconds", "break_glass", "review_required", "policy", "auto_approved",
	"revoke_attempts", "extensions",
}

// WriteCSV writes one row per lease after a header row (RFC 4180). Times are
// RFC 3339 in UTC; ended_at is empty while the lease is live; approvers are
// separated by semicolons. Text cells a spreadsheet would read as a formula
// are prefixed with a single quote.
func (r Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return fmt.Errorf("write report csv: %w", err)
	}
	for _, a := range r.Leases {
		ended := ""
		if a.EndedAt != nil {
			ended = a.EndedAt.Format(time.RFC3339)
		}
		row := []string{
			cell(a.LeaseID), cell(a.Requester), cell(a.Target), cell(a.Grant), cell(a.Reason),
			cell(strings.Join(a.Approvers, ";")), a.StartedAt.Format(time.RFC3339), ended,
			cell(a.EndReason), strconv.FormatInt(a.DurationSeconds, 10), strconv.FormatBool(a.BreakGlass),
			strconv.FormatBool(a.ReviewRequired), cell(a.Policy), strconv.FormatBool(a.AutoApproved),
			strconv.Itoa(a.RevokeAttempts), cell(extensionsText(a.Extensions, ";")),
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("write report csv: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write report csv: %w", err)
	}
	return nil
}

// cell neutralises a text cell that a spreadsheet would evaluate as a
// formula (or a DDE command) by prefixing it with a single quote.
func cell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r', '\n', '|':
		return "'" + s
	}
	// Full-width look-alikes some spreadsheets also accept.
	if r, _ := utf8.DecodeRuneInString(s); r == '＝' || r == '＋' || r == '－' || r == '＠' {
		return "'" + s
	}
	return s
}

// maxReason is how many characters of a reason the text table shows.
const maxReason = 48

// WriteTable writes the leases as an aligned text table followed by the
// totals, for a terminal.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LEASE\tREQUESTER\tTARGET\tGRANT\tSTARTED\tENDED\tDURATION\tEND\tAPPROVED BY\tFLAGS\tREASON")
	for _, a := range r.Leases {
		ended, end := "live", a.EndReason
		if a.EndedAt != nil {
			ended = a.EndedAt.Format(tableTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			text(a.LeaseID, 0), text(a.Requester, 0), text(a.Target, 0), text(a.Grant, 0),
			a.StartedAt.Format(tableTime), ended, humanDuration(a.Duration()), dash(text(end, 0)),
			dash(text(approvedBy(a, ","), 0)), dash(strings.Join(flags(a), ",")), dash(text(a.Reason, maxReason)))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report table: %w", err)
	}

	t := r.Totals
	var b strings.Builder
	fmt.Fprintf(&b, "\nWindow: %s\n", r.window())
	if f := r.filters(); f != "" {
		fmt.Fprintf(&b, "Filters: %s\n", text(f, 0))
	}
	fmt.Fprintf(&b, "Leases: %d (%d live)\n", t.Leases, t.Live)
	if len(t.LeasesPerTarget) > 0 {
		var parts []string
		for _, k := range sortedKeys(t.LeasesPerTarget) {
			parts = append(parts, fmt.Sprintf("%s %d", text(k, 0), t.LeasesPerTarget[k]))
		}
		fmt.Fprintf(&b, "Per target: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "Median duration: %s\n", humanDuration(time.Duration(t.MedianDurationSeconds*float64(time.Second))))
	fmt.Fprintf(&b, "Auto-approved: %s\n", percent(t.AutoApprovedShare))
	if t.Longest != nil {
		fmt.Fprintf(&b, "Longest: %s (%s)\n", text(t.Longest.LeaseID, 0), humanDuration(time.Duration(t.Longest.DurationSeconds)*time.Second))
	}
	fmt.Fprintf(&b, "Revocations with retries: %d\n", t.RevocationsWithRetries)
	fmt.Fprintf(&b, "Break-glass: %d, awaiting review: %d\n", t.BreakGlass, t.BreakGlassUnreviewed)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write report table: %w", err)
	}
	return nil
}

const tableTime = "2006-01-02 15:04"

// text makes user input safe for a terminal: control characters (which
// could move the cursor or break the table) become spaces, and the result
// is cut to limit characters when limit > 0.
func text(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r) {
			return ' '
		}
		return r
	}, s)
	if limit > 0 {
		if rs := []rune(s); len(rs) > limit {
			s = string(rs[:limit-1]) + "…"
		}
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// approvedBy says who approved a lease's request.
func approvedBy(a Access, sep string) string {
	if a.AutoApproved && len(a.Approvers) == 0 {
		return "auto"
	}
	if a.BreakGlass && len(a.Approvers) == 0 {
		return "break-glass"
	}
	return strings.Join(a.Approvers, sep)
}

// flags are short markers for what an auditor should notice on a lease.
func flags(a Access) []string {
	var f []string
	if a.BreakGlass {
		f = append(f, "break-glass")
	}
	if a.ReviewRequired {
		f = append(f, "REVIEW")
	}
	if a.AutoApproved {
		f = append(f, "auto")
	}
	if a.RevokeAttempts > 0 {
		f = append(f, fmt.Sprintf("retries=%d", a.RevokeAttempts))
	}
	if n := len(a.Extensions); n > 0 {
		f = append(f, fmt.Sprintf("extended=%d", n))
	}
	return f
}

// extensionsText lists a lease's extensions: "+2h by bob,carol", "+20m
// auto".
func extensionsText(xs []Extension, sep string) string {
	var parts []string
	for _, x := range xs {
		who := "auto"
		if !x.AutoApproved {
			who = "by " + strings.Join(x.Approvers, ",")
		}
		parts = append(parts, "+"+humanDuration(time.Duration(x.BySeconds)*time.Second)+" "+who)
	}
	return strings.Join(parts, sep)
}

// humanDuration formats d compactly: "45s", "12m", "1h30m", "2d3h".
func humanDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int64(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int64(d/time.Minute))
	case d < 24*time.Hour:
		h, m := int64(d/time.Hour), int64(d%time.Hour/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%02dm", h, m)
	default:
		dd, h := int64(d/(24*time.Hour)), int64(d%(24*time.Hour)/time.Hour)
		if h == 0 {
			return fmt.Sprintf("%dd", dd)
		}
		return fmt.Sprintf("%dd%dh", dd, h)
	}
}

func percent(share float64) string {
	return strconv.FormatFloat(share*100, 'f', 0, 64) + "%"
}

// window describes the report's window in words.
func (r Report) window() string {
	from, to := "the beginning", "now"
	if !r.From.IsZero() {
		from = r.From.Format(tableTime) + " UTC"
	}
	if !r.To.IsZero() {
		to = r.To.Format(tableTime) + " UTC"
	}
	return "from " + from + " to " + to + " (end excluded)"
}

func (r Report) filters() string {
	var f []string
	if r.Target != "" {
		f = append(f, "target "+r.Target)
	}
	if r.User != "" {
		f = append(f, "user "+r.User)
	}
	return strings.Join(f, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
