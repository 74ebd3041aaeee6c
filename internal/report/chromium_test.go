package report

import (
	"context"
	"flag"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

var keepShot = flag.String("screenshot", "", "also write the rendered report and its screenshot under this directory")

// TestHTMLRendersInChromium renders a report in headless Chromium and checks
// the screenshot: right size, not blank, and the chart bars drawn in their
// colours.
func TestHTMLRendersInChromium(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Unavailable(t, "chromium (scripts/chromium.sh installs it)", err)
	}
	dir := t.TempDir()
	if *keepShot != "" {
		dir = *keepShot
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	in := sampleInput()
	r := Build(in)
	page := filepath.Join(dir, "report.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteHTML(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	const width, height = 1280, 1600
	shot := filepath.Join(dir, "shot.png")
	profile := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--hide-scrollbars", "--user-data-dir="+profile, "--screenshot="+shot,
		"--window-size="+strconv.Itoa(width)+","+strconv.Itoa(height), "file://"+page)
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}

	pf, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer pf.Close()
	img, err := png.Decode(pf)
	if err != nil {
		t.Fatalf("decode screenshot: %v", err)
	}
	if got, want := img.Bounds().Size(), image.Pt(width, height); got != want {
		t.Errorf("screenshot size = %v; want %v", got, want)
	}

	counts := colorCounts(img)
	if got, want := len(counts), 200; got < want {
		t.Errorf("screenshot has %d distinct colours; want at least %d (is it blank?)", got, want)
	}
	// The bars of both charts are drawn in their colours, covering about
	// the area the chart geometry gives them. The legend and the share
	// bars use the same colours but cover far less.
	v := r.htmlView()
	area := map[string]float64{}
	for _, ch := range []struct {
		c        chart
		minWidth float64 // the chart is drawn at least this many pixels wide
	}{{v.Daily, 1000}, {v.Histogram, 480}} {
		scale := ch.minWidth / ch.c.Width
		for _, b := range ch.c.Bars {
			area[b.Fill] += b.W * b.H * scale * scale
		}
	}
	if got, want := len(area), len(r.Totals.LeasesPerTarget)+1; got != want {
		t.Fatalf("charts use %d colours; want %d (one per target and the histogram)", got, want)
	}
	for hex, a := range area {
		if got, min := near(counts, parseHex(t, hex)), int(a*0.8); got < min {
			t.Errorf("bars in %s: %d pixels; want at least %d", hex, got, min)
		}
	}
	// The highlight of break-glass leases awaiting review is drawn.
	if got, min := near(counts, parseHex(t, "#fef2f2")), 5000; got < min {
		t.Errorf("review highlight (#fef2f2): %d pixels; want at least %d", got, min)
	}
	// Most of the page is the light background, not a black or white void.
	if got, total := near(counts, parseHex(t, "#f8fafc")), width*height; got < total/10 || got > total*95/100 {
		t.Errorf("background covers %d of %d pixels; want between 10%% and 95%%", got, total)
	}
}

type rgb struct{ r, g, b uint8 }

func colorCounts(img image.Image) map[rgb]int {
	counts := map[rgb]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			counts[rgb{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8)}]++
		}
	}
	return counts
}

// near counts the pixels within a small distance of c, allowing for colour
// management rounding.
func near(counts map[rgb]int, c rgb) int {
	n := 0
	for k, v := range counts {
		if diff(k.r, c.r) <= 3 && diff(k.g, c.g) <= 3 && diff(k.b, c.b) <= 3 {
			n += v
		}
	}
	return n
}

func diff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

func parseHex(t *testing.T, s string) rgb {
	t.Helper()
	var c rgb
	if _, err := fmt.Sscanf(s, "#%02x%02x%02x", &c.r, &c.g, &c.b); err != nil {
		t.Fatalf("parse colour %q: %v", s, err)
	}
	return c
}

// sampleInput is a month of realistic activity on four targets, with a
// break-glass lease awaiting review and one reviewed.
func sampleInput() Input {
	from := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 0, 14)
	f := newFixture(from, to, to.Add(-3*time.Hour))
	targets := []string{"pg-prod", "mysql-billing", "redis-cache", "ssh-bastion"}
	grants := []string{"readonly", "deploy", "readonly", "oncall"}
	users := []string{"alice", "bob", "carol", "dmitri", "erin", "farah"}
	reasons := []string{
		"INC-4812 slow checkout queries",
		"CHG-221 deploy schema migration",
		"investigate cache evictions",
		"quarterly data export for finance",
		`customer ticket #5531: "missing invoice", check billing rows`,
	}
	n := 0
	for d := range 14 {
		per := 2 + (d*5)%7
		for k := range per {
			i := n
			n++
			tg := (i*i + d + k/3) % len(targets)
			dur := time.Duration(5+(i*37)%400) * time.Minute
			if i%11 == 0 {
				dur = time.Duration(9+i%30) * time.Hour
			}
			s := spec{
				id: fmt.Sprintf("lse_%04x", 0x3a00+i), user: users[i%len(users)], target: targets[tg], grant: grants[tg],
				reason: reasons[i%len(reasons)], start: from.AddDate(0, 0, d).Add(time.Duration(8*60+(i*53)%600) * time.Minute),
				dur: dur, auto: tg == 2, retries: map[bool]int{true: 2}[i%19 == 0],
			}
			if !s.auto {
				s.approvers = []string{users[(i+1)%len(users)]}
			}
			if s.start.Add(dur).After(f.in.Now) {
				s.dur = 0
			}
			f.add(s)
		}
	}
	f.add(spec{id: "lse_bg01", user: "erin", target: "pg-prod", grant: "dba", breakGlass: true,
		reason: "SEV1: primary out of disk <script>alert(1)</script>", start: from.AddDate(0, 0, 9).Add(2 * time.Hour),
		dur: 95 * time.Minute, endReason: "done"})
	f.add(spec{id: "lse_bg02", user: "farah", target: "ssh-bastion", grant: "oncall", breakGlass: true, reviewed: true,
		reason: "SEV2: bastion cert rotation failed", start: from.AddDate(0, 0, 4).Add(23 * time.Hour), dur: 40 * time.Minute})
	return f.in
}
