package broker

import (
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mayflyhq/mayfly"
)

func TestBackoff(t *testing.T) {
	max := time.Minute
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 800 * time.Millisecond, time.Second},
		{2, 1600 * time.Millisecond, 2 * time.Second},
		{3, 3200 * time.Millisecond, 4 * time.Second},
		{7, 48 * time.Second, time.Minute},
		{100, 48 * time.Second, time.Minute},
	}
	for _, tt := range tests {
		for i := 0; i < 50; i++ {
			if got := Backoff(tt.attempt, max); got < tt.min || got > tt.max {
				t.Fatalf("Backoff(%d, %s) = %s; want within [%s, %s]", tt.attempt, max, got, tt.min, tt.max)
			}
		}
	}
}

func TestAccountName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z0-9_]+$`)
	tests := []struct {
		kind, user, prefix string
		limit              int
		wantPrefix         string
	}{
		{mayfly.KindPostgres, "alice", "mf_", 63, "mf_alice_"},
		{mayfly.KindPostgres, "Robert'); DROP TABLE students;--", "mf_", 63, "mf_robertdroptablestudents_"},
		{mayfly.KindPostgres, strings.Repeat("x", 200), "mf_", 63, "mf_xxx"},
		{mayfly.KindMySQL, strings.Repeat("y", 100), "mf_", 32, "mf_yyy"},
		{mayfly.KindPostgres, "ÄÖÜ", "mf_", 63, "mf_u_"},
		{mayfly.KindPostgres, "bob.smith", "acc_", 63, "acc_bobsmith_"},
	}
	for _, tt := range tests {
		tgt := mayfly.Target{Kind: tt.kind, Prefix: tt.prefix}
		a, b := AccountName(tgt, tt.user), AccountName(tgt, tt.user)
		if a == b {
			t.Errorf("AccountName(%q) twice = %q; want different random parts", tt.user, a)
		}
		if len(a) > tt.limit || !valid.MatchString(a) || !strings.HasPrefix(a, tt.wantPrefix) {
			t.Errorf("AccountName(%s, %q) = %q; want [a-z0-9_] within %d starting %q", tt.kind, tt.user, a, tt.limit, tt.wantPrefix)
		}
	}
}

func TestScrub(t *testing.T) {
	tests := []struct{ in, want string }{
		{`dial postgres://admin:s3cret@db:5432/x failed`, `dial postgres://admin:[REDACTED]@db:5432/x failed`},
		{`failed: password=hunter2 host=x`, `failed: password=[REDACTED] host=x`},
		{`nothing secret here`, `nothing secret here`},
		{"a\x00b\xffc\r\x1b[2Jd\u0085e\tf\r\ng", "a\ufffdb\ufffdc\ufffd[2Jd\ufffde\tf\ng"},
		{"stderr: \xfepassword=\xff\x00", "stderr: \ufffdpassword=[REDACTED]"},
	}
	for _, tt := range tests {
		if got := Scrub(tt.in); got != tt.want {
			t.Errorf("Scrub(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzScrub: whatever a target's error says, what is recorded is valid
// UTF-8 with no control character but tab and newline (PostgreSQL's text
// takes it, a terminal shows it as it is), scrubbing it again changes
// nothing, and a password= setting never survives.
func FuzzScrub(f *testing.F) {
	for _, s := range []string{"dial postgres://admin:s3cret@db/x", "password=hunter2", "a\x00b\xff\r\x1b[2J", "pwd: \xfe\xff", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Scrub(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Scrub(%q) = %q: not UTF-8", s, got)
		}
		for _, r := range got {
			if unicode.IsControl(r) && r != '\n' && r != '\t' {
				t.Fatalf("Scrub(%q) = %q: holds %U", s, got, r)
			}
		}
		if again := Scrub(got); again != got {
			t.Fatalf("Scrub(Scrub(%q)) = %q; want %q", s, again, got)
		}
		if strings.Contains(s, "password=hunter2") && strings.Contains(got, "hunter2") {
			t.Fatalf("Scrub(%q) = %q: the password survived", s, got)
		}
	})
}
