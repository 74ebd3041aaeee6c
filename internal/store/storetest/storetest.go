// Package storetest is the conformance suite every mayfly.Store
// implementation must pass. A store's tests call Run with a function that
// opens a new, empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Run runs the suite. open returns a new, empty store; the suite closes it.
func Run(t *testing.T, open func(t *testing.T) mayfly.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s mayfly.Store)
	}{
		{"RequestRoundTrip", testRequestRoundTrip},
		{"RequestErrors", testRequestErrors},
		{"ListRequests", testListRequests},
		{"LeaseRoundTrip", testLeaseRoundTrip},
		{"LeaseErrors", testLeaseErrors},
		{"UpdateLeaseFrom", testUpdateLeaseFrom},
		{"WriteIntent", testWriteIntent},
		{"WriteIntentUnless", testWriteIntentUnless},
		{"ListLeases", testListLeases},
		{"DueLeases", testDueLeases},
		{"NextDue", testNextDue},
		{"CountLeases", testCountLeases},
		{"CountLeasesFollowsStates", testCountLeasesFollowsStates},
		{"RequestPages", testRequestPages},
		{"LeasePages", testLeasePages},
		{"RequestViewer", testRequestViewer},
		{"AuditInvolving", testAuditInvolving},
		{"AuditChain", testAuditChain},
		{"AuditRoundTrip", testAuditRoundTrip},
		{"ListAudit", testListAudit},
		{"Rollback", testRollback},
		{"CancelledContext", testCancelledContext},
		{"ViewIsReadOnly", testViewIsReadOnly},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"CancelAmongConcurrentUpdates", testCancelAmongConcurrentUpdates},
		{"Settings", testSettings},
		{"UserStatus", testUserStatus},
		{"Tokens", testTokens},
		{"LeaderLeases", testLeaderLeases},
		{"ClaimDue", testClaimDue},
		{"Replicas", testReplicas},
		{"ChatMessages", testChatMessages},
		{"Nonces", testNonces},
		{"Sessions", testSessions},
		{"SessionEvents", testSessionEvents},
		{"AppendSessionsEvents", testAppendSessionsEvents},
		{"ConcurrentSessionAppends", testConcurrentSessionAppends},
		{"LoginStates", testLoginStates},
		{"LeaseActivity", testLeaseActivity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tt.fn(t, s)
		})
	}
}

// base is a time with nanoseconds, in a zone other than UTC.
var base = time.Date(2031, 3, 4, 5, 6, 7, 123456789, time.FixedZone("UTC+5:30", 5*3600+1800))

func update(t *testing.T, s mayfly.Store, fn func(tx mayfly.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t *testing.T, s mayfly.Store, fn func(tx mayfly.Tx) error) {
	t.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := mayfly.ErrorCode(err); got != code {
		t.Errorf("%s: error %v has code %q; want %q", what, err, got, code)
	}
}

// utc returns t in UTC, keeping the zero time zero.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

func checkUTC(t *testing.T, what string, tm time.Time) {
	t.Helper()
	if !tm.IsZero() && tm.Location() != time.UTC {
		t.Errorf("%s: time %v is in %v; want UTC", what, tm, tm.Location())
	}
}

// normRequest returns r in the form the store returns it: times in UTC
// and empty lists nil.
func normRequest(r *mayfly.Request) *mayfly.Request {
	c := *r
	c.CreatedAt, c.DecidedAt = utc(c.CreatedAt), utc(c.DecidedAt)
	if len(c.ApproverGroups) == 0 {
		c.ApproverGroups = nil
	}
	if len(c.Approvers) == 0 {
		c.Approvers = nil
	}
	if len(c.Steps) == 0 {
		c.Steps = nil
	}
	return &c
}

func normLease(l *mayfly.Lease) *mayfly.Lease {
	c := *l
	c.CreatedAt, c.ExpiresAt, c.DueAt, c.EndedAt = utc(c.CreatedAt), utc(c.ExpiresAt), utc(c.DueAt), utc(c.EndedAt)
	return &c
}

func checkRequest(t *testing.T, what string, got, want *mayfly.Request) {
	t.Helper()
	checkUTC(t, what+" CreatedAt", got.CreatedAt)
	checkUTC(t, what+" DecidedAt", got.DecidedAt)
	if g, w := normRequest(got), normRequest(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s = %+v; want %+v", what, g, w)
	}
}

func checkLease(t *testing.T, what string, got, want *mayfly.Lease) {
	t.Helper()
	for _, tm := range []time.Time{got.CreatedAt, got.ExpiresAt, got.DueAt, got.EndedAt} {
		checkUTC(t, what, tm)
	}
	if g, w := normLease(got), normLease(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s = %+v; want %+v", what, g, w)
	}
}

func fullRequest(id string) *mayfly.Request {
	return &mayfly.Request{
		ID:                id,
		Requester:         "alice",
		Target:            "pg-prod",
		Grant:             "readonly",
		Reason:            "INC-1234: look at \"orders\"; it's slow",
		Duration:          90*time.Minute + 3*time.Nanosecond,
		State:             mayfly.RequestApproved,
		Policy:            "prod-readonly",
		ApprovalsRequired: 2,
		ApproverGroups:    []string{"dba", "sre"},
		Steps: []mayfly.ApprovalStep{
			{Approvals: 1, ApproverGroups: []string{"team-lead"}},
			{Approvals: 2, ApproverGroups: []string{"dba", "sre"}},
		},
		Step:           1,
		StepApprovals:  1,
		Approvers:      []string{"bob", "carol"},
		Decider:        "dave",
		DecisionReason: "looks fine",
		CreatedAt:      base,
		DecidedAt:      base.Add(time.Minute + time.Nanosecond),
		LeaseID:        "l-" + id,
		ExtendsLease:   "x-" + id,
	}
}

func fullLease(id string) *mayfly.Lease {
	return &mayfly.Lease{
		ID:             id,
		RequestID:      "r-" + id,
		Requester:      "alice",
		Target:         "pg-prod",
		Grant:          "readonly",
		Username:       "mf_alice_" + id,
		State:          mayfly.LeaseRevoking,
		CreatedAt:      base,
		ExpiresAt:      base.Add(time.Hour),
		DueAt:          base.Add(time.Hour + 7*time.Nanosecond),
		EndedAt:        base.Add(2 * time.Hour),
		EndReason:      mayfly.EndExpired,
		RevokeAttempts: 3,
		LastError:      "connection refused",
		SecretHMAC:     "9f86d081884c7d659a2feaa0c55ad015",
	}
}

func testRequestRoundTrip(t *testing.T, s mayfly.Store) {
	full := fullRequest("r1")
	minimal := &mayfly.Request{ID: "r2", State: mayfly.RequestPending}
	// Before 1970, to check negative times.
	old := &mayfly.Request{ID: "r3", State: mayfly.RequestPending, Approvers: []string{}, ApproverGroups: []string{},
		CreatedAt: time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC)}
	update(t, s, func(tx mayfly.Tx) error {
		for _, r := range []*mayfly.Request{full, minimal, old} {
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx mayfly.Tx) error {
		for _, want := range []*mayfly.Request{full, minimal, old} {
			got, err := tx.GetRequest(want.ID)
			if err != nil {
				return err
			}
			checkRequest(t, fmt.Sprintf("GetRequest(%q)", want.ID), got, want)
		}
		return nil
	})

	// Every field but those fixed at creation (ID, Requester, Target,
	// Grant, CreatedAt) can change.
	changed := &mayfly.Request{
		ID: "r1", Requester: full.Requester, Target: full.Target, Grant: full.Grant, Reason: "other",
		Duration: time.Second, State: mayfly.RequestDenied, Policy: "p2", ApprovalsRequired: 1,
		ApproverGroups: []string{"x"}, Steps: []mayfly.ApprovalStep{{Approvals: 1}}, Step: 0, StepApprovals: 0,
		Approvers: []string{"bob", "carol", "erin"}, Decider: "frank",
		DecisionReason: "no", CreatedAt: full.CreatedAt, DecidedAt: base.Add(time.Hour), LeaseID: "l9",
	}
	cleared := &mayfly.Request{ID: "r2", State: mayfly.RequestCancelled}
	// Fixed fields are kept whatever UpdateRequest is given.
	fixedKept := *fullRequest("r3")
	fixedKept.Approvers, fixedKept.ApproverGroups, fixedKept.Steps = nil, nil, nil
	fixedKept.CreatedAt, fixedKept.Requester, fixedKept.Target, fixedKept.Grant = old.CreatedAt, "", "", ""
	attempt := fixedKept
	attempt.Requester, attempt.Target, attempt.Grant, attempt.CreatedAt = "mallory", "other", "dba", base
	update(t, s, func(tx mayfly.Tx) error { return tx.UpdateRequest(&attempt) })
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.GetRequest("r3")
		if err != nil {
			return err
		}
		checkRequest(t, "GetRequest(r3) after changing fixed fields", got, &fixedKept)
		return nil
	})
	update(t, s, func(tx mayfly.Tx) error {
		if err := tx.UpdateRequest(changed); err != nil {
			return err
		}
		return tx.UpdateRequest(cleared)
	})
	view(t, s, func(tx mayfly.Tx) error {
		for _, want := range []*mayfly.Request{changed, cleared} {
			got, err := tx.GetRequest(want.ID)
			if err != nil {
				return err
			}
			checkRequest(t, fmt.Sprintf("GetRequest(%q) after update", want.ID), got, want)
		}
		return nil
	})
}

func testRequestErrors(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error { return tx.CreateRequest(fullRequest("r1")) })
	err := s.Update(context.Background(), func(tx mayfly.Tx) error {
		err := tx.CreateRequest(&mayfly.Request{ID: "r1", Requester: "mallory"})
		wantCode(t, "CreateRequest(existing)", err, mayfly.ECONFLICT)
		err = tx.UpdateRequest(&mayfly.Request{ID: "nope"})
		wantCode(t, "UpdateRequest(missing)", err, mayfly.ENOTFOUND)
		_, err = tx.GetRequest("nope")
		wantCode(t, "GetRequest(missing)", err, mayfly.ENOTFOUND)
		if err == nil || !strings.Contains(mayfly.ErrorMessage(err), "nope") {
			t.Errorf("GetRequest(missing) message %q; want it to name the id", mayfly.ErrorMessage(err))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.GetRequest("r1")
		if err != nil {
			return err
		}
		checkRequest(t, "GetRequest after conflicting create", got, fullRequest("r1"))
		return nil
	})
}

func requestIDs(rs []*mayfly.Request) []string {
	ids := []string{}
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return ids
}

func leaseIDs(ls []*mayfly.Lease) []string {
	ids := []string{}
	for _, l := range ls {
		ids = append(ids, l.ID)
	}
	return ids
}

func testListRequests(t *testing.T, s mayfly.Store) {
	// Created out of order; b and c share a creation time, so id breaks the tie.
	rs := []*mayfly.Request{
		{ID: "c", Requester: "alice", State: mayfly.RequestPending, CreatedAt: base.Add(2 * time.Second)},
		{ID: "a", Requester: "bob", State: mayfly.RequestApproved, CreatedAt: base.Add(3 * time.Second)},
		{ID: "b", Requester: "alice", State: mayfly.RequestDenied, CreatedAt: base.Add(2 * time.Second)},
		{ID: "d", Requester: "alice", State: mayfly.RequestApproved, CreatedAt: base.Add(time.Nanosecond), LeaseID: "l-d"},
		{ID: "e", Requester: "carol", State: mayfly.RequestPending, CreatedAt: base.Add(4 * time.Second)},
	}
	update(t, s, func(tx mayfly.Tx) error {
		for _, r := range rs {
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
		}
		return nil
	})
	tests := []struct {
		name string
		f    mayfly.RequestFilter
		want []string
	}{
		{"all", mayfly.RequestFilter{}, []string{"d", "b", "c", "a", "e"}},
		{"ids", mayfly.RequestFilter{IDs: []string{"e", "b", "zz"}}, []string{"b", "e"}},
		{"empty ids", mayfly.RequestFilter{IDs: []string{}}, []string{"d", "b", "c", "a", "e"}},
		{"requester", mayfly.RequestFilter{Requester: "alice"}, []string{"d", "b", "c"}},
		{"unknown requester", mayfly.RequestFilter{Requester: "zed"}, []string{}},
		{"one state", mayfly.RequestFilter{States: []mayfly.RequestState{mayfly.RequestPending}}, []string{"c", "e"}},
		{"states", mayfly.RequestFilter{States: []mayfly.RequestState{mayfly.RequestPending, mayfly.RequestApproved}}, []string{"d", "c", "a", "e"}},
		{"requester and state", mayfly.RequestFilter{Requester: "alice", States: []mayfly.RequestState{mayfly.RequestApproved}}, []string{"d"}},
		{"ids and requester", mayfly.RequestFilter{IDs: []string{"a", "b"}, Requester: "alice"}, []string{"b"}},
		{"limit", mayfly.RequestFilter{Limit: 2}, []string{"d", "b"}},
		{"limit above count", mayfly.RequestFilter{Limit: 50}, []string{"d", "b", "c", "a", "e"}},
		{"filter and limit", mayfly.RequestFilter{Requester: "alice", Limit: 2}, []string{"d", "b"}},
		// Open: pending, or approved without a lease (d has one).
		{"open", mayfly.RequestFilter{Open: true}, []string{"c", "a", "e"}},
		{"open of a requester", mayfly.RequestFilter{Open: true, Requester: "alice"}, []string{"c"}},
		{"open and states", mayfly.RequestFilter{Open: true, States: []mayfly.RequestState{mayfly.RequestApproved}}, []string{"a"}},
		{"open and limit", mayfly.RequestFilter{Open: true, Limit: 1}, []string{"c"}},
	}
	view(t, s, func(tx mayfly.Tx) error {
		for _, tt := range tests {
			got, err := tx.ListRequests(tt.f)
			if err != nil {
				return fmt.Errorf("%s: %w", tt.name, err)
			}
			if g := requestIDs(got); !slices.Equal(g, tt.want) {
				t.Errorf("ListRequests(%s: %+v) = %v; want %v", tt.name, tt.f, g, tt.want)
			}
		}
		return nil
	})
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.ListRequests(mayfly.RequestFilter{IDs: []string{"a"}})
		if err != nil {
			return err
		}
		if len(got) == 1 {
			checkRequest(t, "ListRequests(a)", got[0], rs[1])
		}
		return nil
	})
}

func testLeaseRoundTrip(t *testing.T, s mayfly.Store) {
	full := fullLease("l1")
	minimal := &mayfly.Lease{ID: "l2", State: mayfly.LeaseProvisioning}
	update(t, s, func(tx mayfly.Tx) error {
		if err := tx.CreateLease(full); err != nil {
			return err
		}
		return tx.CreateLease(minimal)
	})
	view(t, s, func(tx mayfly.Tx) error {
		for _, want := range []*mayfly.Lease{full, minimal} {
			got, err := tx.GetLease(want.ID)
			if err != nil {
				return err
			}
			checkLease(t, fmt.Sprintf("GetLease(%q)", want.ID), got, want)
		}
		return nil
	})
	// Every field but those fixed at creation (ID, RequestID, Requester,
	// Target, Grant, Username, CreatedAt) can change.
	changed := &mayfly.Lease{
		ID: "l1", RequestID: full.RequestID, Requester: full.Requester, Target: full.Target, Grant: full.Grant,
		Username: full.Username, State: mayfly.LeaseRevoked, CreatedAt: full.CreatedAt, ExpiresAt: base.Add(3 * time.Hour),
		DueAt: time.Time{}, EndedAt: base.Add(4 * time.Hour), EndReason: mayfly.EndDone, RevokeAttempts: 4,
		LastError: "", SecretHMAC: "aa",
	}
	// Fixed fields are kept whatever UpdateLease is given.
	filled := fullLease("l2")
	filled.RequestID, filled.Requester, filled.Target, filled.Grant, filled.Username, filled.CreatedAt = "", "", "", "", "", time.Time{}
	attempt := *filled
	attempt.RequestID, attempt.Requester, attempt.Target, attempt.Grant, attempt.Username, attempt.CreatedAt =
		"r-x", "mallory", "other", "dba", "mf_mallory", base
	update(t, s, func(tx mayfly.Tx) error {
		if err := tx.UpdateLease(changed); err != nil {
			return err
		}
		return tx.UpdateLease(&attempt)
	})
	view(t, s, func(tx mayfly.Tx) error {
		for _, want := range []*mayfly.Lease{changed, filled} {
			got, err := tx.GetLease(want.ID)
			if err != nil {
				return err
			}
			checkLease(t, fmt.Sprintf("GetLease(%q) after update", want.ID), got, want)
		}
		return nil
	})
}

func testLeaseErrors(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error { return tx.CreateLease(fullLease("l1")) })
	err := s.Update(context.Background(), func(tx mayfly.Tx) error {
		err := tx.CreateLease(&mayfly.Lease{ID: "l1", Requester: "mallory"})
		wantCode(t, "CreateLease(existing)", err, mayfly.ECONFLICT)
		err = tx.UpdateLease(&mayfly.Lease{ID: "nope"})
		wantCode(t, "UpdateLease(missing)", err, mayfly.ENOTFOUND)
		_, err = tx.GetLease("nope")
		wantCode(t, "GetLease(missing)", err, mayfly.ENOTFOUND)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.GetLease("l1")
		if err != nil {
			return err
		}
		checkLease(t, "GetLease after conflicting create", got, fullLease("l1"))
		return nil
	})
}

func testListLeases(t *testing.T, s mayfly.Store) {
	ls := []*mayfly.Lease{
		{ID: "c", RequestID: "r1", Requester: "alice", Target: "pg", Username: "u1", State: mayfly.LeaseActive, CreatedAt: base.Add(2 * time.Second)},
		{ID: "a", RequestID: "r2", Requester: "bob", Target: "pg", Username: "u2", State: mayfly.LeaseRevoked, CreatedAt: base.Add(3 * time.Second)},
		{ID: "b", RequestID: "r1", Requester: "alice", Target: "redis", Username: "u3", State: mayfly.LeaseRevoking, CreatedAt: base.Add(2 * time.Second)},
		{ID: "d", RequestID: "r3", Requester: "alice", Target: "mysql", Username: "u4", State: mayfly.LeaseActive, CreatedAt: base.Add(time.Nanosecond)},
		{ID: "e", RequestID: "r4", Requester: "carol", Target: "pg", Username: "u5", State: mayfly.LeaseFailed, CreatedAt: base.Add(4 * time.Second)},
	}
	update(t, s, func(tx mayfly.Tx) error {
		for _, l := range ls {
			if err := tx.CreateLease(l); err != nil {
				return err
			}
		}
		return nil
	})
	all := []string{"d", "b", "c", "a", "e"}
	tests := []struct {
		name string
		f    mayfly.LeaseFilter
		want []string
	}{
		{"all", mayfly.LeaseFilter{}, all},
		{"ids", mayfly.LeaseFilter{IDs: []string{"e", "b", "zz"}}, []string{"b", "e"}},
		{"empty ids", mayfly.LeaseFilter{IDs: []string{}}, all},
		{"request", mayfly.LeaseFilter{RequestID: "r1"}, []string{"b", "c"}},
		{"requester", mayfly.LeaseFilter{Requester: "alice"}, []string{"d", "b", "c"}},
		{"target", mayfly.LeaseFilter{Target: "pg"}, []string{"c", "a", "e"}},
		{"username", mayfly.LeaseFilter{Username: "u2"}, []string{"a"}},
		{"unknown username", mayfly.LeaseFilter{Username: "u9"}, []string{}},
		{"one state", mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseActive}}, []string{"d", "c"}},
		{"live states", mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking}}, []string{"d", "b", "c"}},
		{"requester and target", mayfly.LeaseFilter{Requester: "alice", Target: "pg"}, []string{"c"}},
		{"target and states", mayfly.LeaseFilter{Target: "pg", States: []mayfly.LeaseState{mayfly.LeaseRevoked, mayfly.LeaseFailed}}, []string{"a", "e"}},
		{"every field", mayfly.LeaseFilter{IDs: []string{"b", "c"}, RequestID: "r1", Requester: "alice", Target: "redis", Username: "u3", States: []mayfly.LeaseState{mayfly.LeaseRevoking}}, []string{"b"}},
		{"every field, one off", mayfly.LeaseFilter{IDs: []string{"b", "c"}, RequestID: "r1", Requester: "alice", Target: "redis", Username: "u1", States: []mayfly.LeaseState{mayfly.LeaseRevoking}}, []string{}},
		{"limit", mayfly.LeaseFilter{Limit: 3}, []string{"d", "b", "c"}},
		{"filter and limit", mayfly.LeaseFilter{Target: "pg", Limit: 1}, []string{"c"}},
	}
	view(t, s, func(tx mayfly.Tx) error {
		for _, tt := range tests {
			got, err := tx.ListLeases(tt.f)
			if err != nil {
				return fmt.Errorf("%s: %w", tt.name, err)
			}
			if g := leaseIDs(got); !slices.Equal(g, tt.want) {
				t.Errorf("ListLeases(%s: %+v) = %v; want %v", tt.name, tt.f, g, tt.want)
			}
		}
		return nil
	})
}

func createDue(t *testing.T, s mayfly.Store, ls []*mayfly.Lease) {
	t.Helper()
	update(t, s, func(tx mayfly.Tx) error {
		for _, l := range ls {
			if err := tx.CreateLease(l); err != nil {
				return err
			}
		}
		return nil
	})
}

func testDueLeases(t *testing.T, s mayfly.Store) {
	now := base.Add(time.Hour)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	createDue(t, s, []*mayfly.Lease{
		{ID: "a1", State: mayfly.LeaseActive, DueAt: at(-time.Minute)},
		{ID: "a2", State: mayfly.LeaseActive, DueAt: at(-3 * time.Minute)},
		{ID: "a3", State: mayfly.LeaseActive, DueAt: at(0)},               // exactly now: due
		{ID: "a4", State: mayfly.LeaseActive, DueAt: at(time.Nanosecond)}, // not yet
		{ID: "a0", State: mayfly.LeaseActive, DueAt: at(-time.Minute)},    // ties with a1
		{ID: "a5", State: mayfly.LeaseActive},                             // no deadline
		{ID: "k1", State: mayfly.LeaseRevoking, DueAt: at(-2 * time.Minute)},
		{ID: "k2", State: mayfly.LeaseRevoking, DueAt: at(-4 * time.Minute)},
		{ID: "p1", State: mayfly.LeaseProvisioning, DueAt: at(-5 * time.Minute)},
		{ID: "x1", State: mayfly.LeaseRevoked, DueAt: at(-time.Hour)},
		{ID: "x2", State: mayfly.LeaseFailed, DueAt: at(-time.Hour)},
	})
	active := []mayfly.LeaseState{mayfly.LeaseActive}
	live := []mayfly.LeaseState{mayfly.LeaseActive, mayfly.LeaseRevoking, mayfly.LeaseProvisioning}
	tests := []struct {
		name   string
		now    time.Time
		states []mayfly.LeaseState
		limit  int
		want   []string
		after  mayfly.DueCursor
	}{
		{"active", now, active, 100, []string{"a2", "a0", "a1", "a3"}, mayfly.DueCursor{}},
		{"active, no limit", now, active, 0, []string{"a2", "a0", "a1", "a3"}, mayfly.DueCursor{}},
		{"active, limit", now, active, 2, []string{"a2", "a0"}, mayfly.DueCursor{}},
		{"live", now, live, 100, []string{"p1", "k2", "a2", "k1", "a0", "a1", "a3"}, mayfly.DueCursor{}},
		{"live, limit", now, live, 3, []string{"p1", "k2", "a2"}, mayfly.DueCursor{}},
		{"live, limit 1", now, live, 1, []string{"p1"}, mayfly.DueCursor{}},
		{"revoking", now, []mayfly.LeaseState{mayfly.LeaseRevoking}, 10, []string{"k2", "k1"}, mayfly.DueCursor{}},
		{"ended states", now, []mayfly.LeaseState{mayfly.LeaseRevoked}, 10, []string{"x1"}, mayfly.DueCursor{}},
		{"earlier now", at(-150 * time.Second), live, 10, []string{"p1", "k2", "a2"}, mayfly.DueCursor{}},
		{"later now", at(time.Nanosecond), active, 10, []string{"a2", "a0", "a1", "a3", "a4"}, mayfly.DueCursor{}},
		{"no states", now, nil, 10, []string{}, mayfly.DueCursor{}},
		{"live, after a2", now, live, 100, []string{"k1", "a0", "a1", "a3"}, mayfly.DueCursor{DueAt: at(-3 * time.Minute), ID: "a2"}},
		{"live, after a0 (a tie)", now, live, 100, []string{"a1", "a3"}, mayfly.DueCursor{DueAt: at(-time.Minute), ID: "a0"}},
		{"live, after a0, limit", now, live, 1, []string{"a1"}, mayfly.DueCursor{DueAt: at(-time.Minute), ID: "a0"}},
		{"active, after a position between leases", now, active, 100, []string{"a1", "a3"}, mayfly.DueCursor{DueAt: at(-time.Minute), ID: "a00"}},
		{"active, after the last", now, active, 100, []string{}, mayfly.DueCursor{DueAt: at(0), ID: "a3"}},
		{"later now, after a3", at(time.Nanosecond), active, 100, []string{"a4"}, mayfly.DueCursor{DueAt: at(0), ID: "a3"}},
	}
	view(t, s, func(tx mayfly.Tx) error {
		for _, tt := range tests {
			got, err := tx.DueLeases(tt.now, tt.states, tt.after, tt.limit)
			if err != nil {
				return fmt.Errorf("%s: %w", tt.name, err)
			}
			if g := leaseIDs(got); !slices.Equal(g, tt.want) {
				t.Errorf("DueLeases(%s: %v, %v, %v, %d) = %v; want %v", tt.name, tt.now, tt.states, tt.after, tt.limit, g, tt.want)
			}
		}
		got, err := tx.DueLeases(now, active, mayfly.DueCursor{}, 1)
		if err != nil {
			return err
		}
		if len(got) == 1 {
			checkLease(t, "DueLeases first", got[0], &mayfly.Lease{ID: "a2", State: mayfly.LeaseActive, DueAt: at(-3 * time.Minute)})
		}
		return nil
	})
}

func testNextDue(t *testing.T, s mayfly.Store) {
	live := []mayfly.LeaseState{mayfly.LeaseActive, mayfly.LeaseRevoking, mayfly.LeaseProvisioning}
	view(t, s, func(tx mayfly.Tx) error {
		got, ok, err := tx.NextDue(live)
		if err != nil {
			return err
		}
		if ok {
			t.Errorf("NextDue on an empty store = %v, true; want false", got)
		}
		return nil
	})
	createDue(t, s, []*mayfly.Lease{
		{ID: "a1", State: mayfly.LeaseActive, DueAt: base.Add(3 * time.Hour)},
		{ID: "a2", State: mayfly.LeaseActive, DueAt: base.Add(2*time.Hour + time.Nanosecond)},
		{ID: "a3", State: mayfly.LeaseActive},
		{ID: "k1", State: mayfly.LeaseRevoking, DueAt: base.Add(5 * time.Hour)},
		{ID: "p1", State: mayfly.LeaseProvisioning, DueAt: base.Add(4 * time.Hour)},
		{ID: "x1", State: mayfly.LeaseRevoked, DueAt: base.Add(time.Hour)},
	})
	tests := []struct {
		name   string
		states []mayfly.LeaseState
		want   time.Time
		ok     bool
	}{
		{"live", live, base.Add(2*time.Hour + time.Nanosecond), true},
		{"revoking and provisioning", []mayfly.LeaseState{mayfly.LeaseRevoking, mayfly.LeaseProvisioning}, base.Add(4 * time.Hour), true},
		{"revoking", []mayfly.LeaseState{mayfly.LeaseRevoking}, base.Add(5 * time.Hour), true},
		{"revoked", []mayfly.LeaseState{mayfly.LeaseRevoked}, base.Add(time.Hour), true},
		{"failed", []mayfly.LeaseState{mayfly.LeaseFailed}, time.Time{}, false},
		{"no states", nil, time.Time{}, false},
	}
	view(t, s, func(tx mayfly.Tx) error {
		for _, tt := range tests {
			got, ok, err := tx.NextDue(tt.states)
			if err != nil {
				return fmt.Errorf("%s: %w", tt.name, err)
			}
			if !got.Equal(tt.want) || ok != tt.ok {
				t.Errorf("NextDue(%s) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
			}
			checkUTC(t, "NextDue", got)
		}
		return nil
	})
}

func testCountLeases(t *testing.T, s mayfly.Store) {
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.CountLeases()
		if err != nil {
			return err
		}
		if len(got) != 0 {
			t.Errorf("CountLeases on an empty store = %v; want empty", got)
		}
		return nil
	})
	want := map[mayfly.LeaseState]int{mayfly.LeaseActive: 3, mayfly.LeaseRevoked: 2, mayfly.LeaseProvisioning: 1}
	var ls []*mayfly.Lease
	for st, n := range want {
		for i := range n {
			ls = append(ls, &mayfly.Lease{ID: fmt.Sprintf("%s-%d", st, i), State: st})
		}
	}
	createDue(t, s, ls)
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.CountLeases()
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("CountLeases() = %v; want %v", got, want)
		}
		return nil
	})
}

func appendAll(t *testing.T, s mayfly.Store, es []*mayfly.AuditEvent) {
	t.Helper()
	update(t, s, func(tx mayfly.Tx) error {
		for _, e := range es {
			if err := tx.AppendAudit(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// checkChain checks that es is the whole trail: contiguous from 1, linked
// by hash, each hash matching its content.
func checkChain(t *testing.T, es []*mayfly.AuditEvent) {
	t.Helper()
	prev := ""
	for i, e := range es {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d; want %d", i, e.Seq, i+1)
		}
		if e.PrevHash != prev {
			t.Fatalf("event %d: prev_hash %q; want %q", e.Seq, e.PrevHash, prev)
		}
		if got := e.ComputeHash(); e.Hash != got {
			t.Fatalf("event %d: hash %q; want ComputeHash() %q", e.Seq, e.Hash, got)
		}
		prev = e.Hash
	}
}

func listAudit(t *testing.T, s mayfly.Store, f mayfly.AuditFilter) []*mayfly.AuditEvent {
	t.Helper()
	var es []*mayfly.AuditEvent
	view(t, s, func(tx mayfly.Tx) error {
		var err error
		es, err = tx.ListAudit(f)
		return err
	})
	return es
}

func testAuditChain(t *testing.T, s mayfly.Store) {
	first := &mayfly.AuditEvent{Time: base, Actor: "alice", Action: "request.create", Subject: "request:r1"}
	appendAll(t, s, []*mayfly.AuditEvent{first})
	if first.Seq != 1 || first.PrevHash != "" || first.Hash != first.ComputeHash() || first.Hash == "" {
		t.Errorf("first event: seq %d prev %q hash %q; want 1, \"\", ComputeHash()", first.Seq, first.PrevHash, first.Hash)
	}
	// Several in one transaction, then in separate ones.
	var es []*mayfly.AuditEvent
	for i := range 3 {
		es = append(es, &mayfly.AuditEvent{Time: base.Add(time.Duration(i)), Actor: "bob", Action: "request.approve", Subject: "request:r1"})
	}
	appendAll(t, s, es)
	for i := range 2 {
		appendAll(t, s, []*mayfly.AuditEvent{{Time: base, Actor: "system", Action: fmt.Sprintf("lease.%d", i), Subject: "lease:l1"}})
	}
	for i, e := range es {
		if want := int64(i + 2); e.Seq != want {
			t.Errorf("event %d: Seq = %d; want %d", i, e.Seq, want)
		}
	}
	if es[0].PrevHash != first.Hash {
		t.Errorf("second event PrevHash = %q; want first hash %q", es[0].PrevHash, first.Hash)
	}
	all := listAudit(t, s, mayfly.AuditFilter{})
	if len(all) != 6 {
		t.Fatalf("ListAudit returned %d events; want 6", len(all))
	}
	checkChain(t, all)
}

func testAuditRoundTrip(t *testing.T, s mayfly.Store) {
	full := &mayfly.AuditEvent{
		Time: base, Actor: "alice", Action: "lease.activate", Subject: "lease:l1", Target: "pg-prod",
		RequestID: "r1", LeaseID: "l1", Reason: "INC-1: \"quoted\" reason", Source: "127.0.0.1:5555",
		Data: map[string]string{"username": "mf_alice_x", "grant": "readonly", "empty": ""},
	}
	minimal := &mayfly.AuditEvent{Action: "noop"}
	emptyData := &mayfly.AuditEvent{Time: base.Add(time.Nanosecond), Action: "x", Data: map[string]string{}}
	in := []*mayfly.AuditEvent{full, minimal, emptyData}
	var want []mayfly.AuditEvent
	appendAll(t, s, in)
	for _, e := range in {
		c := *e
		c.Time = utc(c.Time)
		want = append(want, c)
	}
	got := listAudit(t, s, mayfly.AuditFilter{})
	if len(got) != len(want) {
		t.Fatalf("ListAudit returned %d events; want %d", len(got), len(want))
	}
	for i := range got {
		checkUTC(t, "audit time", got[i].Time)
		g := *got[i]
		if len(g.Data) == 0 && len(want[i].Data) == 0 {
			// An empty map may come back nil or empty; the hash must still match.
			g.Data = want[i].Data
		}
		if !reflect.DeepEqual(g, want[i]) {
			t.Errorf("event %d = %+v; want %+v", i+1, *got[i], want[i])
		}
		if h := got[i].ComputeHash(); h != got[i].Hash {
			t.Errorf("event %d: stored hash %q; ComputeHash() of the read event %q", i+1, got[i].Hash, h)
		}
	}
	checkChain(t, got)
}

func testListAudit(t *testing.T, s mayfly.Store) {
	ev := func(actor, action, target, req, lease string, at time.Duration) *mayfly.AuditEvent {
		return &mayfly.AuditEvent{Time: base.Add(at), Actor: actor, Action: action, Target: target,
			RequestID: req, LeaseID: lease, Subject: "x"}
	}
	appendAll(t, s, []*mayfly.AuditEvent{
		ev("alice", "request.create", "pg", "r1", "", 0),                                   // 1
		ev("bob", "request.approve", "pg", "r1", "", time.Second),                          // 2
		ev("system", "lease.activate", "pg", "r1", "l1", 2*time.Second),                    // 3
		ev("carol", "request.create", "redis", "r2", "", 3*time.Second),                    // 4
		ev("system", "lease.revoke", "pg", "r1", "l1", 4*time.Second),                      // 5
		ev("system", "lease.activate", "redis", "r2", "l2", 4*time.Second+time.Nanosecond), // 6
	})
	tests := []struct {
		name string
		f    mayfly.AuditFilter
		want []int64
	}{
		{"all", mayfly.AuditFilter{}, []int64{1, 2, 3, 4, 5, 6}},
		{"after", mayfly.AuditFilter{AfterSeq: 4}, []int64{5, 6}},
		{"until", mayfly.AuditFilter{UntilSeq: 2}, []int64{1, 2}},
		{"after and until", mayfly.AuditFilter{AfterSeq: 2, UntilSeq: 4}, []int64{3, 4}},
		{"actor", mayfly.AuditFilter{Actor: "system"}, []int64{3, 5, 6}},
		{"action", mayfly.AuditFilter{Action: "request.create"}, []int64{1, 4}},
		{"target", mayfly.AuditFilter{Target: "redis"}, []int64{4, 6}},
		{"lease", mayfly.AuditFilter{LeaseID: "l1"}, []int64{3, 5}},
		{"request", mayfly.AuditFilter{RequestID: "r2"}, []int64{4, 6}},
		{"since (inclusive)", mayfly.AuditFilter{Since: base.Add(3 * time.Second)}, []int64{4, 5, 6}},
		{"until time (exclusive)", mayfly.AuditFilter{Until: base.Add(2 * time.Second)}, []int64{1, 2}},
		{"since and until", mayfly.AuditFilter{Since: base.Add(time.Second), Until: base.Add(4*time.Second + time.Nanosecond)}, []int64{2, 3, 4, 5}},
		{"limit", mayfly.AuditFilter{Limit: 2}, []int64{1, 2}},
		{"after and limit", mayfly.AuditFilter{AfterSeq: 1, Limit: 3}, []int64{2, 3, 4}},
		{"combined", mayfly.AuditFilter{Actor: "system", Target: "pg", Action: "lease.revoke"}, []int64{5}},
		{"combined, none", mayfly.AuditFilter{Actor: "system", LeaseID: "l2", RequestID: "r1"}, []int64{}},
	}
	for _, tt := range tests {
		got := []int64{}
		for _, e := range listAudit(t, s, tt.f) {
			got = append(got, e.Seq)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ListAudit(%s: %+v) = %v; want %v", tt.name, tt.f, got, tt.want)
		}
	}
}

func testRollback(t *testing.T, s mayfly.Store) {
	appendAll(t, s, []*mayfly.AuditEvent{{Time: base, Action: "first"}})
	errBoom := errors.New("boom")
	err := s.Update(context.Background(), func(tx mayfly.Tx) error {
		if err := tx.CreateRequest(fullRequest("r1")); err != nil {
			return err
		}
		if err := tx.CreateLease(fullLease("l1")); err != nil {
			return err
		}
		if err := tx.AppendAudit(&mayfly.AuditEvent{Time: base, Action: "rolled back"}); err != nil {
			return err
		}
		if err := tx.PutSetting("k", "v"); err != nil {
			return err
		}
		if err := tx.SetUserStatus("alice", "suspended"); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update = %v; want the error fn returned", err)
	}
	// A panic in fn rolls back too.
	func() {
		defer func() { recover() }()
		s.Update(context.Background(), func(tx mayfly.Tx) error {
			tx.CreateLease(fullLease("l2"))
			panic("boom")
		})
	}()
	view(t, s, func(tx mayfly.Tx) error {
		_, err := tx.GetRequest("r1")
		wantCode(t, "GetRequest after rollback", err, mayfly.ENOTFOUND)
		for _, id := range []string{"l1", "l2"} {
			_, err = tx.GetLease(id)
			wantCode(t, "GetLease after rollback", err, mayfly.ENOTFOUND)
		}
		_, err = tx.GetSetting("k")
		wantCode(t, "GetSetting after rollback", err, mayfly.ENOTFOUND)
		st, err := tx.GetUserStatus("alice")
		if err != nil || st != "" {
			t.Errorf("GetUserStatus after rollback = %q, %v; want \"\", nil", st, err)
		}
		return nil
	})
	// The chain continues from the last committed event.
	next := &mayfly.AuditEvent{Time: base, Action: "second"}
	appendAll(t, s, []*mayfly.AuditEvent{next})
	all := listAudit(t, s, mayfly.AuditFilter{})
	if len(all) != 2 {
		t.Fatalf("ListAudit after rollback returned %d events; want 2", len(all))
	}
	checkChain(t, all)
	if all[1].Action != "second" || next.Seq != 2 {
		t.Errorf("event after rollback: seq %d action %q; want 2, second", next.Seq, all[1].Action)
	}
}

func testCancelledContext(t *testing.T, s mayfly.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Update(ctx, func(tx mayfly.Tx) error { return tx.CreateLease(fullLease("l1")) })
	if err == nil {
		t.Errorf("Update with a cancelled context succeeded")
	}
	ctx, cancel = context.WithCancel(context.Background())
	err = s.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.CreateLease(fullLease("l2")); err != nil {
			return err
		}
		cancel()
		return nil
	})
	if err == nil {
		t.Errorf("Update whose context ended before commit succeeded")
	}
	view(t, s, func(tx mayfly.Tx) error {
		ls, err := tx.ListLeases(mayfly.LeaseFilter{})
		if err != nil {
			return err
		}
		if len(ls) != 0 {
			t.Errorf("leases after cancelled updates: %v; want none", leaseIDs(ls))
		}
		return nil
	})
}

func testViewIsReadOnly(t *testing.T, s mayfly.Store) {
	s.View(context.Background(), func(tx mayfly.Tx) error {
		if err := tx.CreateLease(fullLease("l1")); err == nil {
			t.Errorf("CreateLease in View succeeded")
		}
		if err := tx.AppendAudit(&mayfly.AuditEvent{Action: "x"}); err == nil {
			t.Errorf("AppendAudit in View succeeded")
		}
		return nil
	})
	view(t, s, func(tx mayfly.Tx) error {
		_, err := tx.GetLease("l1")
		wantCode(t, "GetLease after write in View", err, mayfly.ENOTFOUND)
		if es, err := tx.ListAudit(mayfly.AuditFilter{}); err != nil || len(es) != 0 {
			t.Errorf("ListAudit after write in View = %d events, %v; want none", len(es), err)
		}
		return nil
	})
}

func testConcurrentUpdates(t *testing.T, s mayfly.Store) {
	const workers, each = 20, 5
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("l-%d-%d", w, i)
				errs <- s.Update(context.Background(), func(tx mayfly.Tx) error {
					if err := tx.CreateLease(&mayfly.Lease{ID: id, State: mayfly.LeaseActive, DueAt: base}); err != nil {
						return err
					}
					return tx.AppendAudit(&mayfly.AuditEvent{Time: base, Action: "lease.create", LeaseID: id})
				})
				// Readers run alongside the writers.
				errs <- s.View(context.Background(), func(tx mayfly.Tx) error {
					_, err := tx.GetLease(id)
					return err
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent update: %v", err)
		}
	}
	all := listAudit(t, s, mayfly.AuditFilter{})
	if len(all) != workers*each {
		t.Fatalf("ListAudit returned %d events; want %d", len(all), workers*each)
	}
	checkChain(t, all)
	seen := map[string]bool{}
	for _, e := range all {
		seen[e.LeaseID] = true
	}
	view(t, s, func(tx mayfly.Tx) error {
		n, err := tx.CountLeases()
		if err != nil {
			return err
		}
		if n[mayfly.LeaseActive] != workers*each || len(seen) != workers*each {
			t.Errorf("after concurrent updates: %d active leases, %d audited; want %d", n[mayfly.LeaseActive], len(seen), workers*each)
		}
		return nil
	})
}

// testCancelAmongConcurrentUpdates ends the context of some updates while
// they write, alongside others running at the same time (a store may
// commit those together). A cancelled caller must not affect any other,
// and Update must return nil exactly when the update committed.
func testCancelAmongConcurrentUpdates(t *testing.T, s mayfly.Store) {
	// Enough events that deleting them all takes a while.
	var es []*mayfly.AuditEvent
	for i := range 5000 {
		es = append(es, &mayfly.AuditEvent{Time: base, Action: "bulk", Subject: fmt.Sprintf("n:%d", i)})
	}
	appendAll(t, s, es)
	const rounds, members = 10, 9
	type member struct {
		id      string
		cancels bool
		err     error
	}
	var all []*member
	for r := range rounds {
		ms := make([]*member, members)
		var wg sync.WaitGroup
		for i := range ms {
			m := &member{id: fmt.Sprintf("r%02d-%d", r, i), cancels: i%3 == 1}
			ms[i] = m
			wg.Go(func() {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				m.err = s.Update(ctx, func(tx mayfly.Tx) error {
					if err := tx.CreateRequest(&mayfly.Request{ID: m.id, Requester: "alice", Target: "t", Grant: "g", State: mayfly.RequestPending, CreatedAt: base}); err != nil {
						return err
					}
					if err := tx.AppendAudit(&mayfly.AuditEvent{Time: base, Action: "request.create", RequestID: m.id}); err != nil {
						return err
					}
					if !m.cancels {
						return nil
					}
					// The context ends while this writes, and in any
					// case before fn returns, so this update must not
					// commit.
					go cancel()
					_, err := tx.DeleteAuditBefore(math.MaxInt64)
					cancel()
					return err
				})
			})
		}
		wg.Wait()
		all = append(all, ms...)
	}
	committed := 0
	view(t, s, func(tx mayfly.Tx) error {
		for _, m := range all {
			_, err := tx.GetRequest(m.id)
			if err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
				return err
			}
			found := err == nil
			if found {
				committed++
			}
			switch {
			case found != (m.err == nil):
				t.Errorf("update %s: Update returned %v, but committed = %v", m.id, m.err, found)
			case m.cancels && found:
				t.Errorf("update %s committed though its context ended before it returned", m.id)
			case !m.cancels && !found:
				t.Errorf("update %s, not cancelled, failed: %v", m.id, m.err)
			}
		}
		return nil
	})
	got := listAudit(t, s, mayfly.AuditFilter{})
	if len(got) != len(es)+committed {
		t.Errorf("%d audit events after %d committed updates; want %d", len(got), committed, len(es)+committed)
	}
	checkChain(t, got)
}

func testSettings(t *testing.T, s mayfly.Store) {
	view(t, s, func(tx mayfly.Tx) error {
		_, err := tx.GetSetting("missing")
		wantCode(t, "GetSetting(missing)", err, mayfly.ENOTFOUND)
		return nil
	})
	update(t, s, func(tx mayfly.Tx) error {
		for k, v := range map[string]string{"a": "1", "b": "", "c": "x y \"q\" \n ünï"} {
			if err := tx.PutSetting(k, v); err != nil {
				return err
			}
		}
		return tx.PutSetting("a", "2")
	})
	view(t, s, func(tx mayfly.Tx) error {
		for k, want := range map[string]string{"a": "2", "b": "", "c": "x y \"q\" \n ünï"} {
			got, err := tx.GetSetting(k)
			if err != nil {
				return err
			}
			if got != want {
				t.Errorf("GetSetting(%q) = %q; want %q", k, got, want)
			}
		}
		return nil
	})
}

func testUserStatus(t *testing.T, s mayfly.Store) {
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.GetUserStatus("alice")
		if err != nil || got != "" {
			t.Errorf("GetUserStatus(unknown) = %q, %v; want \"\", nil", got, err)
		}
		return nil
	})
	update(t, s, func(tx mayfly.Tx) error {
		if err := tx.SetUserStatus("alice", "active"); err != nil {
			return err
		}
		if err := tx.SetUserStatus("bob", "deprovisioned"); err != nil {
			return err
		}
		return tx.SetUserStatus("alice", "suspended")
	})
	view(t, s, func(tx mayfly.Tx) error {
		for name, want := range map[string]string{"alice": "suspended", "bob": "deprovisioned", "carol": ""} {
			got, err := tx.GetUserStatus(name)
			if err != nil {
				return err
			}
			if got != want {
				t.Errorf("GetUserStatus(%q) = %q; want %q", name, got, want)
			}
		}
		return nil
	})
}
