package httpapi

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mayflyhq/mayfly"
)

// Lists of requests and leases come in pages: DefaultPageSize items unless
// ?limit= asks for another number (up to MaxPageSize; 0 is the default).
// When more may follow, the answer carries the NextCursorHeader header;
// passing its value as ?cursor= reads the next page. The body stays a JSON
// array, as it always was.
const (
	DefaultPageSize  = 100
	MaxPageSize      = 1000
	NextCursorHeader = "Mayfly-Next-Cursor"
)

// Audit lists keep their own default and maximum page sizes.
const (
	defaultAuditPage = 1000
	maxAuditPage     = 10000
)

// pageLimit reads ?limit=: def when absent or 0, at most max.
func pageLimit(s string, def, max int) (int, error) {
	n, err := intParam(s, 0)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return def, nil
	}
	return min(n, max), nil
}

// Cursors are opaque to clients: "t<unix ns>.<id>" for a (CreatedAt, ID)
// position ("t-" when there is no creation time) or "s<seq>" for an audit
// sequence number, in unpadded base64url.
func encodeCursor(c mayfly.PageCursor) string {
	t := "-"
	if !c.CreatedAt.IsZero() {
		t = strconv.FormatInt(c.CreatedAt.UnixNano(), 10)
	}
	return base64.RawURLEncoding.EncodeToString([]byte("t" + t + "." + c.ID))
}

func encodeSeqCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("s" + strconv.FormatInt(seq, 10)))
}

func badCursor(s string) error {
	return mayfly.Errorf(mayfly.EINVALID, "cursor %q is not one this server gave out; pass the %s header of the previous page", s, NextCursorHeader)
}

// decodeCursor reads a (CreatedAt, ID) cursor; "" is the start.
func decodeCursor(s string) (mayfly.PageCursor, error) {
	if s == "" {
		return mayfly.PageCursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return mayfly.PageCursor{}, badCursor(s)
	}
	rest, ok := strings.CutPrefix(string(b), "t")
	if !ok {
		return mayfly.PageCursor{}, badCursor(s)
	}
	ts, id, ok := strings.Cut(rest, ".")
	if !ok || id == "" || !utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl) {
		// Every id this server gives out is printable UTF-8.
		return mayfly.PageCursor{}, badCursor(s)
	}
	c := mayfly.PageCursor{ID: id}
	if ts != "-" {
		ns, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return mayfly.PageCursor{}, badCursor(s)
		}
		c.CreatedAt = time.Unix(0, ns).UTC()
	}
	return c, nil
}

// decodeSeqCursor reads an audit cursor; "" is 0, the start.
func decodeSeqCursor(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, badCursor(s)
	}
	rest, ok := strings.CutPrefix(string(b), "s")
	if !ok {
		return 0, badCursor(s)
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || n < 0 {
		return 0, badCursor(s)
	}
	return n, nil
}

// page trims items read with limit+1 to limit and, when there was more,
// sets the next-page header to the position of the last item kept.
func page[T any](w http.ResponseWriter, items []T, limit int, cursor func(T) string) []T {
	if len(items) <= limit {
		return items
	}
	items = items[:limit]
	w.Header().Set(NextCursorHeader, cursor(items[limit-1]))
	return items
}
