package main

import (
	"context"
	"net/url"
	"testing"

	"github.com/mayflyhq/mayfly/internal/httpapi"
)

// TestListRequestsLimitCountsVisible checks that a limit on GET
// /v1/requests counts the requests the caller may see, not the ones the
// store read before filtering.
func TestListRequestsLimitCountsVisible(t *testing.T) {
	w := startWorld(t, worldOpts{})
	for range 3 { // approved at once: only alice and admins see them
		w.ok("alice", nil, "request", "local-pg/readonly", "--for", "5m", "--reason", "INC-7 auto", "-o", "json")
	}
	var pending []string
	for range 2 { // waiting for a dba: bob may decide them
		var r reqOut
		w.ok("alice", &r, "request", "local-pg/readonly", "--for", "2h", "--reason", "INC-7 long", "-o", "json")
		pending = append(pending, r.ID)
	}
	bob := httpapi.NewClient("http://"+w.addr, w.tokens["bob"])
	for _, tt := range []struct {
		limit string
		want  []string
	}{{"2", pending}, {"1", pending[:1]}, {"0", pending}} {
		var got []httpapi.RequestView
		if err := bob.Do(context.Background(), "GET", "/v1/requests", url.Values{"limit": {tt.limit}}, nil, &got); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range got {
			ids = append(ids, r.ID)
		}
		if len(ids) != len(tt.want) || (len(ids) > 0 && ids[0] != tt.want[0]) {
			t.Errorf("bob's requests with limit %s = %v; want %v", tt.limit, ids, tt.want)
		}
	}
}
