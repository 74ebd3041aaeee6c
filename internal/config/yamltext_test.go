package config

import (
	"strings"
	"testing"
	"time"
)

func TestDaysInDurations(t *testing.T) {
	text := strings.Replace(issueExample, "max_duration: 8h", "max_duration: 2d12h, max_total_duration: \"3d\"", 1) +
		"scheduler: {max_backoff: 1d}\n"
	c, err := Parse([]byte(text), "mayfly.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got, want := c.Policies[1].MaxDuration, 60*time.Hour; got != want {
		t.Errorf("max_duration 2d12h = %v; want %v", got, want)
	}
	if got, want := c.Policies[1].MaxTotalDuration, 72*time.Hour; got != want {
		t.Errorf("max_total_duration \"3d\" = %v; want %v", got, want)
	}
	if got, want := c.Scheduler.MaxBackoff, 24*time.Hour; got != want {
		t.Errorf("scheduler.max_backoff 1d = %v; want %v", got, want)
	}
	// A name that looks like a day count is not a duration: left alone.
	if _, err := Parse([]byte(strings.ReplaceAll(issueExample, "eng-read-long", "x1d")), "mayfly.yaml"); err != nil {
		t.Errorf("a policy named x1d: %v", err)
	}
}

// TestErrorsInTheFilesWords checks that decoding errors name the line and
// key and say what is wanted, without Go type names.
func TestErrorsInTheFilesWords(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"duration", "max_duration: 1h", "max_duration: 1x", `f.yaml:15: max_duration: want a duration such as 90s, 30m, 8h, 1d or 1d12h, got "1x"`},
		{"number", "approvals: 1", "approvals: many", `f.yaml:16: approvals: want a whole number, got "many"`},
		{"unknown key", "kind: postgres", "kind: postgres\n    labels2: {}", `f.yaml:11: unknown key "labels2" in a target`},
		{"list", "groups: [eng]", "groups: {a: b}", `groups: want a list, got a mapping`},
		{"targets as a mapping", "targets:\n  - name: local-pg", "targets:\n  local-pg:\n    name: local-pg", `f.yaml:9: targets: want a list, got a mapping (key: value)`},
		{"a list for a mapping", "grants:\n      readonly: {roles: [pg_read_all_data]}", "grants: [readonly]", `grants: want a mapping (key: value), got a list`},
		{"a mapping for a string", "kind: postgres", "kind: {a: b}", `kind: want a string, got a mapping (key: value)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(issueExample, tc.from, tc.to, 1)), "f.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v; want %q", err, tc.want)
			}
			for _, goName := range []string{"time.Duration", "mayfly.", "config.", "[]string", "!!"} {
				if strings.Contains(err.Error(), goName) {
					t.Errorf("error %q shows the Go name %q", err, goName)
				}
			}
		})
	}
}
