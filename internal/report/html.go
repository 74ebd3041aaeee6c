package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"time"
)

//go:embed report.html.tmpl
var htmlSource string

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"f1": func(v float64) string { return fmt.Sprintf("%.1f", v) },
}).Parse(htmlSource))

// palette colours the targets in the charts, in the order of their names.
// Red is kept for what needs attention (break-glass awaiting review).
var palette = []string{
	"#2563eb", "#0d9488", "#f59e0b", "#7c3aed", "#db2777",
	"#65a30d", "#0891b2", "#ea580c", "#475569", "#a16207",
}

// histogramColor fills the bars of the duration histogram.
const histogramColor = "#4f46e5"

// WriteHTML writes the report as one self-contained HTML page: inline CSS
// and SVG charts, no external fonts, scripts or images. Everything from
// user input is escaped.
func (r Report) WriteHTML(w io.Writer) error {
	if err := htmlTemplate.Execute(w, r.htmlView()); err != nil {
		return fmt.Errorf("write report html: %w", err)
	}
	return nil
}

type htmlView struct {
	Window     string
	Filters    string
	Generated  string
	Cards      []card
	Unreviewed int
	Legend     []swatch
	Daily      chart
	Histogram  chart
	Targets    []targetRow
	Review     []row
	Rows       []row
}

type card struct {
	Label, Value, Note string
	Alert              bool
}

type swatch struct{ Name, Color string }

type targetRow struct {
	Name, Color string
	Leases      int
	Share       string
	Width       float64 // of the share bar, in percent
}

type row struct {
	Access
	Started, Ended       stamp
	Duration, ApprovedBy string
	// Extended lists the lease's extensions, "" for none.
	Extended string
}

// stamp is a time shown as a date over a time of day.
type stamp struct{ Date, Clock string }

func newStamp(t time.Time) stamp {
	return stamp{t.Format(time.DateOnly), t.Format("15:04")}
}

// chart is the geometry of an SVG bar chart, in view-box units.
type chart struct {
	Width, Height float64
	Left, Bottom  float64 // plot area: x of the y axis, y of the x axis
	Right         float64
	Bars          []bar
	Grid          []tick
	Labels        []tick
	Empty         bool
}

type bar struct {
	X, Y, W, H float64
	Fill       string
	Title      string
	Value      string // drawn above the bar when set
}

type tick struct {
	X, Y float64
	Text string
}

func (r Report) htmlView() htmlView {
	t := r.Totals
	v := htmlView{
		Window:     r.window(),
		Filters:    r.filters(),
		Generated:  r.Generated.Format("2006-01-02 15:04:05") + " UTC",
		Unreviewed: t.BreakGlassUnreviewed,
	}
	longest, longestNote := "–", ""
	if t.Longest != nil {
		longest = humanDuration(time.Duration(t.Longest.DurationSeconds) * time.Second)
		longestNote = t.Longest.LeaseID
	}
	v.Cards = []card{
		{Label: "Leases", Value: fmt.Sprint(t.Leases), Note: fmt.Sprintf("%d live · %d targets", t.Live, len(t.LeasesPerTarget))},
		{Label: "Median duration", Value: humanDuration(time.Duration(t.MedianDurationSeconds * float64(time.Second)))},
		{Label: "Auto-approved", Value: percent(t.AutoApprovedShare), Note: "approved by policy, no person"},
		{Label: "Longest lease", Value: longest, Note: longestNote},
		{Label: "Revocations with retries", Value: fmt.Sprint(t.RevocationsWithRetries), Note: "revocation failed at least once"},
		{Label: "Break-glass awaiting review", Value: fmt.Sprint(t.BreakGlassUnreviewed),
			Note: fmt.Sprintf("of %d break-glass leases", t.BreakGlass), Alert: t.BreakGlassUnreviewed > 0},
	}

	colors := map[string]string{}
	for i, name := range sortedKeys(t.LeasesPerTarget) {
		c := palette[i%len(palette)]
		colors[name] = c
		v.Legend = append(v.Legend, swatch{name, c})
		n := t.LeasesPerTarget[name]
		v.Targets = append(v.Targets, targetRow{Name: name, Color: c, Leases: n,
			Share: percent(float64(n) / float64(t.Leases)), Width: 100 * float64(n) / float64(t.Leases)})
	}
	v.Daily = r.dailyChart(colors)
	v.Histogram = histogramChart(t.DurationHistogram)

	for _, a := range r.Leases {
		x := row{Access: a, Started: newStamp(a.StartedAt),
			Duration: humanDuration(a.Duration()), ApprovedBy: approvedBy(a, ", "), Extended: extensionsText(a.Extensions, "; ")}
		if a.EndedAt != nil {
			x.Ended = newStamp(*a.EndedAt)
		}
		if a.ReviewRequired {
			v.Review = append(v.Review, x)
		}
		v.Rows = append(v.Rows, x)
	}
	return v
}

// dailyChart stacks, for each day, the leases active on each target.
func (r Report) dailyChart(colors map[string]string) chart {
	c := chart{Width: 1120, Height: 280, Left: 48, Right: 1108, Bottom: 240}
	if len(r.days) == 0 || len(r.Totals.PerDay) == 0 {
		c.Empty = true
		return c
	}
	most := 0
	for _, byTarget := range r.Totals.PerDay {
		n := 0
		for _, k := range byTarget {
			n += k
		}
		most = max(most, n)
	}
	top := 12.0
	scale, ticks := axis(most)
	plotH := c.Bottom - top
	for _, t := range ticks {
		y := c.Bottom - plotH*float64(t)/float64(scale)
		c.Grid = append(c.Grid, tick{X: c.Left - 8, Y: y, Text: fmt.Sprint(t)})
	}
	slot := (c.Right - c.Left) / float64(len(r.days))
	w := math.Max(1, slot*0.72)
	every := int(math.Ceil(float64(len(r.days)) / 14))
	targets := sortedKeys(colors)
	for i, d := range r.days {
		x := c.Left + slot*float64(i) + (slot-w)/2
		key := d.Format(time.DateOnly)
		y := c.Bottom
		for _, name := range targets {
			n := r.Totals.PerDay[key][name]
			if n == 0 {
				continue
			}
			h := plotH * float64(n) / float64(scale)
			y -= h
			c.Bars = append(c.Bars, bar{X: x, Y: y, W: w, H: h, Fill: colors[name],
				Title: fmt.Sprintf("%s · %s: %d", key, name, n)})
		}
		if i%every == 0 {
			c.Labels = append(c.Labels, tick{X: c.Left + slot*(float64(i)+0.5), Y: c.Bottom + 18, Text: d.Format("Jan 2")})
		}
	}
	return c
}

// histogramChart draws one bar per duration bucket, with its count.
func histogramChart(buckets []Bucket) chart {
	c := chart{Width: 560, Height: 280, Left: 40, Right: 548, Bottom: 240}
	most := 0
	for _, b := range buckets {
		most = max(most, b.Count)
	}
	if most == 0 {
		c.Empty = true
		return c
	}
	top := 24.0
	scale, ticks := axis(most)
	plotH := c.Bottom - top
	for _, t := range ticks {
		c.Grid = append(c.Grid, tick{X: c.Left - 8, Y: c.Bottom - plotH*float64(t)/float64(scale), Text: fmt.Sprint(t)})
	}
	slot := (c.Right - c.Left) / float64(len(buckets))
	w := slot * 0.7
	for i, b := range buckets {
		x := c.Left + slot*float64(i) + (slot-w)/2
		h := plotH * float64(b.Count) / float64(scale)
		c.Bars = append(c.Bars, bar{X: x, Y: c.Bottom - h, W: w, H: h, Fill: histogramColor,
			Title: fmt.Sprintf("%s: %d", b.Label, b.Count), Value: fmt.Sprint(b.Count)})
		c.Labels = append(c.Labels, tick{X: x + w/2, Y: c.Bottom + 18, Text: b.Label})
	}
	return c
}

// axis returns a round maximum for a y axis showing values up to most, and
// the ticks to label on it.
func axis(most int) (int, []int) {
	if most < 1 {
		most = 1
	}
	step := 1
	for mag := 1; ; mag *= 10 {
		found := false
		for _, m := range []int{1, 2, 5} {
			if most <= 5*m*mag {
				step, found = m*mag, true
				break
			}
		}
		if found {
			break
		}
	}
	top := (most + step - 1) / step * step
	var ticks []int
	for v := 0; v <= top; v += step {
		ticks = append(ticks, v)
	}
	return top, ticks
}
