package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// testRequestPages walks the requests in pages from a cursor: every
// request comes exactly once, in (CreatedAt, ID) order, including requests
// created at the same instant.
func testRequestPages(t *testing.T, s mayfly.Store) {
	var want []string
	update(t, s, func(tx mayfly.Tx) error {
		for i := range 47 {
			r := &mayfly.Request{ID: fmt.Sprintf("r%02d", 46-i), Requester: "alice", Target: "t", Grant: "g",
				State: mayfly.RequestPending, CreatedAt: base.Add(time.Duration(i/3) * time.Second)}
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx mayfly.Tx) error {
		all, err := tx.ListRequests(mayfly.RequestFilter{})
		want = requestIDs(all)
		return err
	})
	for _, size := range []int{1, 5, 10, 47, 100} {
		var got []string
		var after mayfly.PageCursor
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatalf("page size %d: more than 100 pages", size)
			}
			var page []*mayfly.Request
			view(t, s, func(tx mayfly.Tx) error {
				var err error
				page, err = tx.ListRequests(mayfly.RequestFilter{After: after, Limit: size})
				return err
			})
			got = append(got, requestIDs(page)...)
			if len(page) < size {
				break
			}
			last := page[len(page)-1]
			after = mayfly.PageCursor{CreatedAt: last.CreatedAt, ID: last.ID}
		}
		if !slices.Equal(got, want) {
			t.Errorf("requests in pages of %d = %v; want %v", size, got, want)
		}
	}
}

// testLeasePages walks the leases in pages from a cursor, with and without
// a requester.
func testLeasePages(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error {
		for i := range 31 {
			l := &mayfly.Lease{ID: fmt.Sprintf("l%02d", i), RequestID: "r", Requester: []string{"alice", "bob"}[i%2],
				Target: "t", Grant: "g", State: mayfly.LeaseRevoked, CreatedAt: base.Add(time.Duration(i%4) * time.Minute)}
			if err := tx.CreateLease(l); err != nil {
				return err
			}
		}
		return nil
	})
	for _, requester := range []string{"", "bob"} {
		var want []string
		view(t, s, func(tx mayfly.Tx) error {
			all, err := tx.ListLeases(mayfly.LeaseFilter{Requester: requester})
			want = leaseIDs(all)
			return err
		})
		var got []string
		var after mayfly.PageCursor
		for pages := 0; pages < 100; pages++ {
			var page []*mayfly.Lease
			view(t, s, func(tx mayfly.Tx) error {
				var err error
				page, err = tx.ListLeases(mayfly.LeaseFilter{Requester: requester, After: after, Limit: 4})
				return err
			})
			got = append(got, leaseIDs(page)...)
			if len(page) < 4 {
				break
			}
			after = mayfly.PageCursor{CreatedAt: page[len(page)-1].CreatedAt, ID: page[len(page)-1].ID}
		}
		if !slices.Equal(got, want) {
			t.Errorf("leases of %q in pages of 4 = %v; want %v", requester, got, want)
		}
	}
}

// testRequestViewer checks the Viewer filter: a non-admin's own requests,
// those they approved and those of their approver groups, with the limit
// counted after that filter.
func testRequestViewer(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error {
		for i := range 300 {
			r := &mayfly.Request{ID: fmt.Sprintf("other-%03d", i), Requester: "carol", Target: "t", Grant: "g",
				State: mayfly.RequestPending, ApprovalsRequired: 1, ApproverGroups: []string{"dba"}, CreatedAt: base}
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
		}
		for _, r := range []*mayfly.Request{
			{ID: "zz-own", Requester: "alice"},
			{ID: "zz-approved", Requester: "carol", Approvers: []string{"alice"}},
			{ID: "zz-group", Requester: "carol", ApprovalsRequired: 1, ApproverGroups: []string{"ops"}},
			{ID: "zz-step", Requester: "carol", Steps: []mayfly.ApprovalStep{{Approvals: 1, ApproverGroups: []string{"dba"}}, {Approvals: 1, ApproverGroups: []string{"ops"}}}},
		} {
			r.Target, r.Grant, r.State, r.CreatedAt = "t", "g", mayfly.RequestPending, base.Add(time.Second)
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
		}
		return nil
	})
	for _, tt := range []struct {
		groups []string
		want   []string
	}{
		{nil, []string{"zz-approved", "zz-own"}},
		{[]string{"ops"}, []string{"zz-approved", "zz-group", "zz-own", "zz-step"}},
		{[]string{"web", "ops"}, []string{"zz-approved", "zz-group", "zz-own", "zz-step"}},
	} {
		view(t, s, func(tx mayfly.Tx) error {
			rs, err := tx.ListRequests(mayfly.RequestFilter{Viewer: "alice", ViewerGroups: tt.groups, Limit: 10})
			if err != nil {
				return err
			}
			if got := requestIDs(rs); !slices.Equal(got, tt.want) {
				t.Errorf("ListRequests(Viewer alice, groups %v, Limit 10) = %v; want %v", tt.groups, got, tt.want)
			}
			return nil
		})
	}
	view(t, s, func(tx mayfly.Tx) error {
		rs, err := tx.ListRequests(mayfly.RequestFilter{Viewer: "bob", ViewerGroups: []string{"dba"}, Limit: 10})
		if err != nil {
			return err
		}
		if len(rs) != 10 {
			t.Errorf("ListRequests(Viewer bob in dba, Limit 10) = %d requests; want 10", len(rs))
		}
		return nil
	})
}

// testAuditInvolving checks the Involving filter (a user's own actions and
// the events of their requests), with the limit counted after it, and the
// newest-first order.
func testAuditInvolving(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error {
		if err := tx.CreateRequest(&mayfly.Request{ID: "mine", Requester: "alice", Target: "t", Grant: "g",
			State: mayfly.RequestPending, CreatedAt: base}); err != nil {
			return err
		}
		var es []*mayfly.AuditEvent
		es = append(es, &mayfly.AuditEvent{Time: base, Actor: "alice", Action: "request.create", RequestID: "mine"})
		for i := range 200 {
			es = append(es, &mayfly.AuditEvent{Time: base, Actor: "carol", Action: "request.create", RequestID: fmt.Sprintf("c%d", i)})
		}
		es = append(es, &mayfly.AuditEvent{Time: base, Actor: "bob", Action: "request.approve", RequestID: "mine"},
			&mayfly.AuditEvent{Time: base, Actor: "alice", Action: "lease.done"})
		for _, e := range es {
			if err := tx.AppendAudit(e); err != nil {
				return err
			}
		}
		return nil
	})
	got := listAudit(t, s, mayfly.AuditFilter{Involving: "alice", Limit: 5})
	var seqs []int64
	for _, e := range got {
		seqs = append(seqs, e.Seq)
	}
	if want := []int64{1, 202, 203}; !slices.Equal(seqs, want) {
		t.Errorf("ListAudit(Involving alice, Limit 5) seqs = %v; want %v", seqs, want)
	}
	got = listAudit(t, s, mayfly.AuditFilter{Newest: true, Limit: 2})
	seqs = nil
	for _, e := range got {
		seqs = append(seqs, e.Seq)
	}
	if want := []int64{203, 202}; !slices.Equal(seqs, want) {
		t.Errorf("ListAudit(Newest, Limit 2) seqs = %v; want %v", seqs, want)
	}
}

// testCountLeasesFollowsStates checks the counts by state as leases move
// from state to state.
func testCountLeasesFollowsStates(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error {
		for i := range 5 {
			if err := tx.CreateLease(&mayfly.Lease{ID: fmt.Sprintf("l%d", i), Target: "t", Grant: "g", State: mayfly.LeaseActive, CreatedAt: base}); err != nil {
				return err
			}
		}
		for i := range 3 {
			l, err := tx.GetLease(fmt.Sprintf("l%d", i))
			if err != nil {
				return err
			}
			for _, st := range []mayfly.LeaseState{mayfly.LeaseRevoking, mayfly.LeaseRevoking, mayfly.LeaseRevoked}[:1+i] {
				l.State = st
				if err := tx.UpdateLease(l); err != nil {
					return err
				}
			}
		}
		return nil
	})
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.CountLeases()
		if err != nil {
			return err
		}
		want := map[mayfly.LeaseState]int{mayfly.LeaseActive: 2, mayfly.LeaseRevoking: 2, mayfly.LeaseRevoked: 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("CountLeases() = %v; want %v", got, want)
		}
		return nil
	})
}
