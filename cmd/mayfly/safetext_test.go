package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSafeText(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain text, ünïcode", "plain text, ünïcode"},
		{"a\x1b[2Kb", `a\x1b[2Kb`},
		{"line\rforged", `line\rforged`},
		{"bell\a", `bell\a`},
		{"two\nlines\ttab", `two\nlines\ttab`},
		{"del\x7f c1\u009b", `del\x7f c1\u009b`},
		{"bad\xffbyte", `bad\xffbyte`},
	} {
		if got := safeText(tt.in); got != tt.want {
			t.Errorf("safeText(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// Every cell of a table is escaped: a value cannot move the cursor or
// start a new row.
func TestTableEscapes(t *testing.T) {
	var out bytes.Buffer
	e := &env{stdout: &out}
	e.table("ID\tREASON", [][]string{{"req_1", "INC-1\r\x1b[2Kreq_2\tforged\n"}})
	got := out.String()
	if strings.ContainsAny(got, "\r\x1b") || strings.Count(got, "\n") != 2 {
		t.Errorf("table = %q; want 2 lines and no control characters", got)
	}
}
