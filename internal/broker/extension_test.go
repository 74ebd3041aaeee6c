package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// extender is a connector that only moves expiries, failing with err.
type extender struct {
	mayfly.Connector
	err   error
	calls int
}

func (x *extender) Extend(ctx context.Context, req mayfly.ExtendRequest) error {
	x.calls++
	return x.err
}

// extensionWorld is a broker with an active lease of alice's on pg and a
// pending extension of it, which needs one dba approval.
func extensionWorld(t *testing.T) (*Broker, *extender, mayfly.Store, *mayfly.Lease, *mayfly.Request) {
	t.Helper()
	ctx := context.Background()
	st := openSQLite(t)
	clk := &fakeClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	set, err := policy.Compile([]policy.Policy{
		{Name: "approve", Groups: []string{"eng"}, Targets: []string{"pg"}, Grants: []string{"ro"}, MaxDuration: 8 * time.Hour,
			Approvals: 1, ApproverGroups: []string{"dba"}},
	}, []policy.TargetInfo{{Name: "pg", Kind: "postgres", Grants: []string{"ro"}}})
	if err != nil {
		t.Fatal(err)
	}
	tgt := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: "mf_", Grants: map[string]mayfly.Grant{"ro": {Name: "ro"}}}
	x := &extender{}
	b := New(&Config{Targets: map[string]mayfly.Target{"pg": tgt}, Policies: set},
		Options{Store: st, Clock: clk, Connectors: map[string]mayfly.Connector{"pg": x}})
	now := clk.t
	l := &mayfly.Lease{ID: "lease_1", RequestID: "req_0", Requester: "alice", Target: "pg", Grant: "ro", Username: "mf_alice_x",
		State: mayfly.LeaseActive, CreatedAt: now, ExpiresAt: now.Add(time.Hour), DueAt: now.Add(time.Hour)}
	r := &mayfly.Request{ID: "req_ext", Requester: "alice", Target: "pg", Grant: "ro", Reason: "more", Duration: 2 * time.Hour,
		State: mayfly.RequestPending, Policy: "approve", CreatedAt: now, ExtendsLease: l.ID, ApprovalsRequired: 1,
		ApproverGroups: []string{"dba"}, Steps: []mayfly.ApprovalStep{{Approvals: 1, ApproverGroups: []string{"dba"}}}}
	err = st.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.CreateLease(l); err != nil {
			return err
		}
		return tx.CreateRequest(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	return b, x, st, l, r
}

func readBoth(t *testing.T, st mayfly.Store, leaseID, reqID string) (*mayfly.Lease, *mayfly.Request) {
	t.Helper()
	var l *mayfly.Lease
	var r *mayfly.Request
	err := st.View(context.Background(), func(tx mayfly.Tx) error {
		var err error
		if l, err = tx.GetLease(leaseID); err != nil {
			return err
		}
		r, err = tx.GetRequest(reqID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return l, r
}

var bob = Caller{User: "bob", Groups: []string{"dba"}}

func TestApproveExtensionApplies(t *testing.T) {
	b, x, st, l, r := extensionWorld(t)
	got, err := b.Approve(context.Background(), bob, r.ID, "fine")
	if err != nil || got.State != mayfly.RequestApproved || got.LeaseID != l.ID {
		t.Fatalf("Approve = %+v, %v; want approved, linked to %s", got, err, l.ID)
	}
	after, _ := readBoth(t, st, l.ID, r.ID)
	if want := l.ExpiresAt.Add(2 * time.Hour); !after.ExpiresAt.Equal(want) || x.calls != 1 {
		t.Errorf("lease expires %s after %d target calls; want %s after 1", after.ExpiresAt, x.calls, want)
	}
}

// When the target cannot move the expiry, the approval is not recorded.
func TestApproveExtensionTargetFails(t *testing.T) {
	b, x, st, l, r := extensionWorld(t)
	x.err = errors.New("connection refused")
	if _, err := b.Approve(context.Background(), bob, r.ID, "fine"); mayfly.ErrorCode(err) != mayfly.EUNAVAILABLE {
		t.Fatalf("Approve with the target down = %v; want unavailable", err)
	}
	after, req := readBoth(t, st, l.ID, r.ID)
	if req.State != mayfly.RequestPending || len(req.Approvers) != 0 || !after.ExpiresAt.Equal(l.ExpiresAt) {
		t.Errorf("after a failed approval: request %s approvers %v, lease expires %s; want pending, none, unchanged",
			req.State, req.Approvers, after.ExpiresAt)
	}
}

// Approving the extension of a lease that is no longer active fails with
// a conflict and ends the extension request; it is never approved.
func TestApproveExtensionOfEndedLease(t *testing.T) {
	b, x, st, l, r := extensionWorld(t)
	err := st.Update(context.Background(), func(tx mayfly.Tx) error {
		cur, err := tx.GetLease(l.ID)
		if err != nil {
			return err
		}
		cur.State, cur.EndReason, cur.EndedAt = mayfly.LeaseRevoked, mayfly.EndRevoked, b.clock.Now()
		return tx.UpdateLease(cur)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Approve(context.Background(), bob, r.ID, "fine"); mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Fatalf("Approve of the extension of a revoked lease = %v; want conflict", err)
	}
	_, req := readBoth(t, st, l.ID, r.ID)
	if req.State != mayfly.RequestCancelled || req.DecisionReason == "" || x.calls != 0 {
		t.Errorf("extension request = %s (%q), %d target calls; want cancelled with a reason, none", req.State, req.DecisionReason, x.calls)
	}
}

// endExtensions cancels the pending extension requests of one lease only.
func TestEndExtensions(t *testing.T) {
	b, _, st, l, r := extensionWorld(t)
	other := *r
	other.ID, other.ExtendsLease = "req_other", "lease_2"
	err := st.Update(context.Background(), func(tx mayfly.Tx) error {
		if err := tx.CreateRequest(&other); err != nil {
			return err
		}
		return b.endExtensions(tx, System, l.ID, "lease ended (expired)")
	})
	if err != nil {
		t.Fatal(err)
	}
	_, got := readBoth(t, st, l.ID, r.ID)
	if got.State != mayfly.RequestCancelled || got.DecisionReason != "lease ended (expired)" {
		t.Errorf("extension of the ended lease = %s (%q); want cancelled with the reason", got.State, got.DecisionReason)
	}
	_, got = readBoth(t, st, l.ID, other.ID)
	if got.State != mayfly.RequestPending {
		t.Errorf("extension of another lease = %s; want pending", got.State)
	}
}
