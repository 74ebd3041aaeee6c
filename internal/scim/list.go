package scim

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// page is the requested window of a list (RFC 7644 section 3.4.2.4).
type page struct {
	start int // 1-based
	count int
}

func parsePage(q url.Values) (page, error) {
	p := page{start: 1, count: maxResults}
	if s := q.Get("startIndex"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return page{}, badRequest("invalidValue", "startIndex must be an integer")
		}
		p.start = max(n, 1)
	}
	if s := q.Get("count"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return page{}, badRequest("invalidValue", "count must be an integer")
		}
		p.count = min(max(n, 0), maxResults)
	}
	return p, nil
}

// writeList writes a ListResponse with the page of res.
func writeList(w http.ResponseWriter, q url.Values, p page, res []map[string]any) {
	total := len(res)
	lo := min(p.start-1, total)
	hi := min(lo+p.count, total)
	items := make([]any, 0, hi-lo)
	for _, m := range res[lo:hi] {
		items = append(items, project(m, q))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"schemas":      []any{schemaList},
		"totalResults": total,
		"startIndex":   p.start,
		"itemsPerPage": len(items),
		"Resources":    items,
	})
}

// project applies the "attributes" and "excludedAttributes" query
// parameters to top-level attributes; "schemas" and "id" always stay.
func project(m map[string]any, q url.Values) map[string]any {
	attrs, excluded := names(q.Get("attributes")), names(q.Get("excludedAttributes"))
	if len(attrs) == 0 && len(excluded) == 0 {
		return m
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		lk := strings.ToLower(k)
		keep := k == "schemas" || k == "id" ||
			len(attrs) > 0 && attrs[lk] ||
			len(attrs) == 0 && !excluded[lk]
		if keep {
			out[k] = v
		}
	}
	return out
}

// names parses a comma-separated attribute list into lowercase top-level
// attribute names.
func names(s string) map[string]bool {
	if s == "" {
		return nil
	}
	out := map[string]bool{}
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if p, err := parseAttrPath(a); err == nil {
			out[strings.ToLower(p.Name)] = true
		}
	}
	return out
}
