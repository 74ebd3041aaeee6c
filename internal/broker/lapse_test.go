package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// Requests run out of time: pending past pending_ttl, approved but not
// activated within activation_window; a lapsed request cannot be approved
// or activated.
func TestRequestsLapse(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := &fakeClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	set, err := policy.Compile([]policy.Policy{
		{Name: "auto", Groups: []string{"eng"}, Targets: []string{"pg"}, Grants: []string{"ro"}, MaxDuration: time.Hour, ActivationWindow: 10 * time.Minute},
		{Name: "approve", Groups: []string{"eng"}, Targets: []string{"pg"}, Grants: []string{"ro"}, MaxDuration: 8 * time.Hour, Approvals: 1, ApproverGroups: []string{"dba"}, PendingTTL: time.Hour},
	}, []policy.TargetInfo{{Name: "pg", Kind: "postgres", Grants: []string{"ro"}}})
	if err != nil {
		t.Fatal(err)
	}
	tgt := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: "mf_", Grants: map[string]mayfly.Grant{"ro": {Name: "ro"}}}
	b := New(&Config{Targets: map[string]mayfly.Target{"pg": tgt}, Policies: set}, Options{Store: st, Clock: clk})
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	bob := Caller{User: "bob", Groups: []string{"dba"}}

	pending, _, err := b.CreateRequest(ctx, alice, RequestInput{Target: "pg", Grant: "ro", Duration: 2 * time.Hour, Reason: "x"})
	if err != nil || pending.State != mayfly.RequestPending {
		t.Fatalf("2h request = %+v, %v; want pending", pending, err)
	}
	approved, _, err := b.CreateRequest(ctx, alice, RequestInput{Target: "pg", Grant: "ro", Duration: 30 * time.Minute, Reason: "x"})
	if err != nil || approved.State != mayfly.RequestApproved {
		t.Fatalf("30m request = %+v, %v; want approved", approved, err)
	}
	clk.t = clk.t.Add(61 * time.Minute)
	if _, err := b.Approve(ctx, bob, pending.ID, ""); mayfly.ErrorCode(err) != mayfly.ECONFLICT || !strings.Contains(err.Error(), "lapsed") {
		t.Errorf("approving a lapsed request = %v; want conflict naming the lapse", err)
	}
	if _, err := b.Activate(ctx, alice, approved.ID, ActivateOptions{}); mayfly.ErrorCode(err) != mayfly.ECONFLICT || !strings.Contains(err.Error(), "lapsed") {
		t.Errorf("activating past the activation window = %v; want conflict naming the lapse", err)
	}
	n, err := b.LapseRequests(ctx)
	if err != nil || n != 2 {
		t.Fatalf("LapseRequests = %d, %v; want 2", n, err)
	}
	for _, id := range []string{pending.ID, approved.ID} {
		r, err := b.GetRequest(ctx, alice, id)
		if err != nil || r.State != mayfly.RequestLapsed {
			t.Errorf("request %s = %+v, %v; want lapsed", id, r, err)
		}
	}
	if _, err := b.Approve(ctx, bob, pending.ID, ""); mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Errorf("approving a lapsed request after the sweep = %v; want conflict", err)
	}
}

// TestChunk checks how due leases are cut into batches: a few spread over
// the workers, a burst into batches of minChunk to maxChunk leases of one
// target each, every lease exactly once.
func TestChunk(t *testing.T) {
	mk := func(n int, target string) []*mayfly.Lease {
		ls := make([]*mayfly.Lease, n)
		for i := range ls {
			ls[i] = &mayfly.Lease{ID: fmt.Sprintf("%s%d", target, i), Target: target}
		}
		return ls
	}
	tests := []struct {
		name  string
		ls    []*mayfly.Lease
		sizes []int
	}{
		{"one", mk(1, "a"), []int{1}},
		{"a few spread over the workers", mk(40, "a"), []int{3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 1}},
		{"just under a burst", mk(255, "a"), append(slices.Repeat([]int{16}, 15), 15)},
		{"a burst", mk(500, "a"), []int{128, 128, 128, 116}},
		{"a large burst", mk(8000, "a"), append(slices.Repeat([]int{256}, 31), 64)},
		{"two targets", append(mk(300, "a"), mk(2, "b")...), []int{128, 128, 44, 1, 1}},
	}
	for _, tt := range tests {
		got := chunk(tt.ls, 16)
		var sizes []int
		seen := map[string]bool{}
		for _, c := range got {
			sizes = append(sizes, len(c))
			for _, l := range c {
				if l.Target != c[0].Target {
					t.Errorf("%s: a batch mixes targets %s and %s", tt.name, c[0].Target, l.Target)
				}
				if seen[l.ID] {
					t.Errorf("%s: lease %s in two batches", tt.name, l.ID)
				}
				seen[l.ID] = true
			}
		}
		if len(seen) != len(tt.ls) {
			t.Errorf("%s: %d leases in batches; want %d", tt.name, len(seen), len(tt.ls))
		}
		if !slices.Equal(sizes, tt.sizes) {
			t.Errorf("%s: batch sizes %v; want %v", tt.name, sizes, tt.sizes)
		}
	}
}

// chunk groups leases by target into batches of batchSize, as the
// scheduler's queues cut them, so that a test can see the sizes.
func chunk(ls []*mayfly.Lease, workers int) [][]*mayfly.Lease {
	byTarget := map[string][]*mayfly.Lease{}
	var order []string
	for _, l := range ls {
		if _, ok := byTarget[l.Target]; !ok {
			order = append(order, l.Target)
		}
		byTarget[l.Target] = append(byTarget[l.Target], l)
	}
	var out [][]*mayfly.Lease
	for _, t := range order {
		g := byTarget[t]
		size := batchSize(len(g), workers)
		for len(g) > 0 {
			n := min(size, len(g))
			out = append(out, g[:n])
			g = g[n:]
		}
	}
	return out
}
