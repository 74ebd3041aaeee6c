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
	// whole: without --limit or --cursor the command reads every page,
	// as it printed the whole list before lists came in pages.
	whole bool
}

// addPageFlags adds --cursor and --all, and --limit unless the command
// already takes it as a filter (audit, which prints one page unless
// --all). The other lists print every page unless --limit or --cursor
// asks for one.
func addPageFlags(f *flags, withLimit bool) pageFlags {
	p := pageFlags{whole: withLimit}
	if withLimit {
		p.limit = f.Int("limit", 0, fmt.Sprintf("print one page of this many (at most %d) instead of every page", httpapi.MaxPageSize))
	}
	p.cursor = f.String("cursor", "", "print the page at this cursor (printed on stderr after the previous page)")
	p.all = f.Bool("all", false, "read every page")
	return p
}

// listPages reads the list at path: one page, or every page. When it
// stops with more pages to read, it says on stderr how to read on, so that
// stdout keeps its shape (a table, or one JSON array).
func listPages[T any](e *env, c *httpapi.Client, name, path string, q url.Values, p pageFlags) ([]T, error) {
	every := *p.all || (p.whole && *p.limit == 0 && *p.cursor == "")
	if p.limit != nil && *p.limit != 0 {
		if *p.limit < 0 {
			return nil, usageErr("%s: --limit must be positive", name)
		}
		q.Set("limit", strconv.Itoa(*p.limit))
	} else if every && q.Get("limit") == "" {
		// Fewer round trips; each page is still bounded.
		q.Set("limit", strconv.Itoa(httpapi.MaxPageSize))
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
		if !every {
			fmt.Fprintf(e.stderr, "more %s: run again with --cursor %s (or --all for every page)\n", name, next)
			return all, nil
		}
		cursor = next
	}
}
