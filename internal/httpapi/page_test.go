package httpapi

import (
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mayflyhq/mayfly"
)

// FuzzDecodeCursor: whatever a client passes as ?cursor=, decoding never
// panics; what it accepts names a printable id and encodes back to a
// cursor that decodes the same. Hostile ids (NUL, bytes that are not
// UTF-8) are refused here, with the cursor error, before a store sees them.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(encodeCursor(mayfly.PageCursor{CreatedAt: time.Unix(1, 5), ID: "req_abc"}))
	f.Add(encodeCursor(mayfly.PageCursor{ID: "lse_x"}))
	f.Add(encodeCursor(mayfly.PageCursor{ID: "a\x00b"}))
	f.Add(encodeCursor(mayfly.PageCursor{ID: "a\xffb"}))
	f.Add(encodeSeqCursor(42))
	f.Add("!!")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeCursor(s)
		if err != nil {
			if mayfly.ErrorCode(err) != mayfly.EINVALID {
				t.Fatalf("decodeCursor(%q) = %v; want invalid input", s, err)
			}
			return
		}
		if s == "" {
			return
		}
		if !utf8.ValidString(c.ID) || strings.ContainsFunc(c.ID, unicode.IsControl) {
			t.Fatalf("decodeCursor(%q) accepted the id %q", s, c.ID)
		}
		again, err := decodeCursor(encodeCursor(c))
		if err != nil || !again.CreatedAt.Equal(c.CreatedAt) || again.ID != c.ID {
			t.Fatalf("decodeCursor(%q) = %+v; encoded and decoded again = %+v, %v", s, c, again, err)
		}
	})
}
