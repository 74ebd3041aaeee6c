package mayfly

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"90s", 90 * time.Second},
		{"30m", 30 * time.Minute},
		{"8h", 8 * time.Hour},
		{"1d", 24 * time.Hour},
		{"1.5d", 36 * time.Hour},
		{"2d12h", 60 * time.Hour},
		{"1d30m", 24*time.Hour + 30*time.Minute},
		{"-1d", -24 * time.Hour},
		{"0d", 0},
	} {
		got, err := ParseDuration(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "d", "1dd", "1d1d", "1x", "1e3d", "inf", "NaNd", "1d-1h", "--1d", "1 d", "99999999999999d", "1d2", "0x1d"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v; want an error", in, got)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"1d", "2d12h", "90s", "1.5d", "-1d", "d", "1e9d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		// Without days it is exactly time.ParseDuration.
		if want, werr := time.ParseDuration(s); werr == nil && want != d {
			t.Fatalf("ParseDuration(%q) = %v; time.ParseDuration says %v", s, d, want)
		}
	})
}
