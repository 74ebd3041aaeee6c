package mayfly

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// DurationSyntax says what ParseDuration accepts, for error messages.
const DurationSyntax = "a duration such as 90s, 30m, 8h, 1d or 1d12h"

// ParseDuration parses a duration as time.ParseDuration does, and also
// accepts days ("d", 24 hours) as its leading unit: "1d", "1.5d", "2d12h".
func ParseDuration(s string) (time.Duration, error) {
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	neg := strings.HasPrefix(days, "-")
	days = strings.TrimPrefix(strings.TrimPrefix(days, "-"), "+")
	if days == "" || strings.ContainsAny(days, "+-eEinfINFxX_") || strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
		return 0, errors.New("time: invalid duration " + strconv.Quote(s))
	}
	n, err := strconv.ParseFloat(days, 64)
	if err != nil || n > float64(1<<63-1)/float64(24*time.Hour) {
		return 0, errors.New("time: invalid duration " + strconv.Quote(s))
	}
	d := time.Duration(n * float64(24*time.Hour))
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, errors.New("time: invalid duration " + strconv.Quote(s))
		}
		if d > 1<<63-1-r {
			return 0, errors.New("time: invalid duration " + strconv.Quote(s))
		}
		d += r
	}
	if neg {
		d = -d
	}
	return d, nil
}
