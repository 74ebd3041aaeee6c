package main

import (
	"fmt"
	"net/url"
	"strconv"

	"github.com/mayflyhq/mayfly/internal/httpapi"
)

// pageFlags are the paging flags of a list command.
type pageFlags struct {
	limit  *int
	cursor *string
	all    *bool
}

// addPageFlags adds --cursor and --all, and --limit unless the command
// already takes it as a filter (audit).
func addPageFlags(f *flags, withLimit bool) pageFlags {
	var p pageFlags
	if withLimit {
		p.limit = f.Int("limit", 0, fmt.Sprintf("items per page (default %d, at most %d)", httpapi.DefaultPageSize, httpapi.MaxPageSize))
	}
	p.cursor = f.String("cursor", "", "start at this page (the cursor printed after the previous one)")
	p.all = f.Bool("all", false, "read every page")
	return p
}

// listPages reads the list at path: one page, or every page with --all.
// When more pages follow one, it says on stderr how to read on, so that
// stdout keeps its shape (a table, or one JSON array).
func listPages[T any](e *env, c *httpapi.Client, name, path string, q url.Values, p pageFlags) ([]T, error) {
	if p.limit != nil && *p.limit != 0 {
		if *p.limit < 0 {
			return nil, usageErr("%s: --limit must be positive", name)
		}
		q.Set("limit", strconv.Itoa(*p.limit))
	}
	cursor := *p.cursor
	var all []T
	for {
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page []T
		next, err := c.ListPage(e.ctx, path, q, &page)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		if !*p.all {
			fmt.Fprintf(e.stderr, "more %s: run again with --cursor %s (or --all for every page)\n", name, next)
			return all, nil
		}
		cursor = next
	}
}
