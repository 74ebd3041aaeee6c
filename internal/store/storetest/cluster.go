package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Coordination of replicas sharing one store: leader leases, claims of
// due leases, heartbeats.

func acquire(t *testing.T, s mayfly.Store, name, holder string, now time.Time, ttl time.Duration) bool {
	t.Helper()
	var ok bool
	update(t, s, func(tx mayfly.Tx) error {
		var err error
		ok, err = tx.AcquireLeader(name, holder, now, ttl)
		return err
	})
	return ok
}

func testLeaderLeases(t *testing.T, s mayfly.Store) {
	const ttl = 15 * time.Second
	now := base
	if !acquire(t, s, "reconciler", "r1", now, ttl) {
		t.Fatal("AcquireLeader(reconciler, r1) on a free lease = false; want true")
	}
	if acquire(t, s, "reconciler", "r2", now.Add(ttl-time.Second), ttl) {
		t.Fatal("AcquireLeader(reconciler, r2) while r1 holds it = true; want false")
	}
	if !acquire(t, s, "idle", "r2", now, ttl) {
		t.Fatal("AcquireLeader(idle, r2): another singleton's lease is free; got false")
	}
	// r1 renews before its lease ends: r2 is refused past the first term.
	if !acquire(t, s, "reconciler", "r1", now.Add(10*time.Second), ttl) {
		t.Fatal("AcquireLeader(reconciler, r1) renewing its own lease = false; want true")
	}
	if acquire(t, s, "reconciler", "r2", now.Add(ttl+time.Second), ttl) {
		t.Fatal("AcquireLeader(reconciler, r2) after r1 renewed = true; want false")
	}
	var ls []*mayfly.Leader
	view(t, s, func(tx mayfly.Tx) error {
		var err error
		ls, err = tx.ListLeaders()
		return err
	})
	if len(ls) != 2 || ls[0].Name != "idle" || ls[0].Holder != "r2" || ls[1].Name != "reconciler" || ls[1].Holder != "r1" {
		t.Fatalf("ListLeaders = %+v; want idle by r2, reconciler by r1", ls)
	}
	if want := utc(now.Add(10*time.Second + ttl)); !ls[1].Until.Equal(want) {
		t.Errorf("reconciler until = %v; want %v", ls[1].Until, want)
	}
	checkUTC(t, "leader until", ls[1].Until)
	// r1 dies: once its lease has lapsed, r2 takes it over.
	later := now.Add(10*time.Second + ttl + time.Nanosecond)
	if !acquire(t, s, "reconciler", "r2", later, ttl) {
		t.Fatal("AcquireLeader(reconciler, r2) after r1's lease lapsed = false; want true")
	}
	if acquire(t, s, "reconciler", "r1", later, ttl) {
		t.Fatal("AcquireLeader(reconciler, r1) after r2 took over = true; want false")
	}
	// Releasing a lease one does not hold changes nothing; the holder's
	// release frees it at once.
	update(t, s, func(tx mayfly.Tx) error { return tx.ReleaseLeader("reconciler", "r1") })
	if acquire(t, s, "reconciler", "r3", later, ttl) {
		t.Fatal("AcquireLeader(reconciler, r3) after a release by a non-holder = true; want false")
	}
	update(t, s, func(tx mayfly.Tx) error { return tx.ReleaseLeader("reconciler", "r2") })
	if !acquire(t, s, "reconciler", "r3", later, ttl) {
		t.Fatal("AcquireLeader(reconciler, r3) after r2 released it = false; want true")
	}
	err := s.Update(t.Context(), func(tx mayfly.Tx) error {
		_, err := tx.AcquireLeader("reconciler", "r3", later, 0)
		return err
	})
	wantCode(t, "AcquireLeader with no ttl", err, mayfly.EINVALID)
}

func claim(t *testing.T, s mayfly.Store, now time.Time, holder string, until time.Time, limit int) []string {
	t.Helper()
	var ls []*mayfly.Lease
	update(t, s, func(tx mayfly.Tx) error {
		var err error
		ls, err = tx.ClaimDue(now, []mayfly.LeaseState{mayfly.LeaseActive, mayfly.LeaseRevoking, mayfly.LeaseProvisioning}, holder, until, mayfly.DueCursor{}, limit)
		return err
	})
	return leaseIDs(ls)
}

func testClaimDue(t *testing.T, s mayfly.Store) {
	now := base.Add(time.Hour)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	createDue(t, s, []*mayfly.Lease{
		{ID: "a1", State: mayfly.LeaseActive, DueAt: at(-time.Minute)},
		{ID: "a2", State: mayfly.LeaseActive, DueAt: at(-2 * time.Minute)},
		{ID: "a3", State: mayfly.LeaseActive, DueAt: at(time.Hour)}, // not yet
		{ID: "k1", State: mayfly.LeaseRevoking, DueAt: at(-3 * time.Minute)},
		{ID: "k2", State: mayfly.LeaseRevoking, DueAt: at(-4 * time.Minute)},
		{ID: "x1", State: mayfly.LeaseRevoked, DueAt: at(-time.Hour)},
	})
	const term = 2 * time.Minute
	got1 := claim(t, s, now, "r1", at(term), 2)
	if want := []string{"k2", "k1"}; !slices.Equal(got1, want) {
		t.Fatalf("ClaimDue(r1, limit 2) = %v; want %v", got1, want)
	}
	got2 := claim(t, s, now, "r2", at(term), 0)
	if want := []string{"a2", "a1"}; !slices.Equal(got2, want) {
		t.Fatalf("ClaimDue(r2) = %v; want %v (r1's claims skipped)", got2, want)
	}
	if got := claim(t, s, now, "r3", at(term), 0); len(got) != 0 {
		t.Fatalf("ClaimDue(r3) while r1 and r2 hold every due lease = %v; want none", got)
	}
	// A holder gets its own claims again (renewed).
	if got, want := claim(t, s, now, "r1", at(term), 0), []string{"k2", "k1"}; !slices.Equal(got, want) {
		t.Fatalf("ClaimDue(r1) again = %v; want its own claims %v", got, want)
	}
	// DueLeases still sees every due lease, claimed or not.
	var due []*mayfly.Lease
	view(t, s, func(tx mayfly.Tx) error {
		var err error
		due, err = tx.DueLeases(now, []mayfly.LeaseState{mayfly.LeaseActive, mayfly.LeaseRevoking}, mayfly.DueCursor{}, 0)
		return err
	})
	if want := []string{"k2", "k1", "a2", "a1"}; !slices.Equal(leaseIDs(due), want) {
		t.Fatalf("DueLeases = %v; want %v", leaseIDs(due), want)
	}

	// Recording a failed attempt of k2 (RevokeAttempts changes) clears its
	// claim: r3 may take it once it is due again.
	update(t, s, func(tx mayfly.Tx) error {
		l, err := tx.GetLease("k2")
		if err != nil {
			return err
		}
		l.RevokeAttempts++
		l.LastError = "connection refused"
		return tx.UpdateLease(l)
	})
	// Revoking a1 ends it and clears its claim; it is no longer due anyway.
	update(t, s, func(tx mayfly.Tx) error {
		l, err := tx.GetLease("a1")
		if err != nil {
			return err
		}
		l.State, l.EndedAt = mayfly.LeaseRevoked, now
		return tx.UpdateLease(l)
	})
	// An update that records no outcome (a2 made revoking, due now) keeps
	// its claim.
	update(t, s, func(tx mayfly.Tx) error {
		l, err := tx.GetLease("a2")
		if err != nil {
			return err
		}
		l.State = mayfly.LeaseRevoking
		return tx.UpdateLease(l)
	})
	if got, want := claim(t, s, now, "r3", at(term), 0), []string{"k2"}; !slices.Equal(got, want) {
		t.Fatalf("ClaimDue(r3) after outcomes = %v; want %v", got, want)
	}

	// r1 dies: its claim of k1 lapses at its deadline, then r3 takes it;
	// r2's claim of a2, renewed meanwhile, is still skipped.
	later := at(term + time.Nanosecond)
	if got := claim(t, s, at(term), "r3", at(2*term), 0); slices.Contains(got, "k1") {
		t.Fatalf("ClaimDue(r3) at r1's claim deadline = %v; want k1 still claimed", got)
	}
	if got := claim(t, s, at(term/2+time.Second), "r2", at(3*term), 0); !slices.Equal(got, []string{"a2"}) {
		t.Fatalf("ClaimDue(r2) renewing = %v; want [a2]", got)
	}
	got := claim(t, s, later, "r3", later.Add(term), 0)
	if want := []string{"k2", "k1"}; !slices.Equal(got, want) {
		t.Fatalf("ClaimDue(r3) after r1's claim lapsed = %v; want %v", got, want)
	}
	if got := claim(t, s, later, "r1", later.Add(term), 0); len(got) != 0 {
		t.Fatalf("ClaimDue(r1) after r3 took its leases = %v; want none", got)
	}

	// A store whose Tx can release claims: r3 gives k1 up (and a2, which
	// r2 holds, stays r2's); r1 may then take k1 at once.
	var releases bool
	update(t, s, func(tx mayfly.Tx) error {
		r, ok := tx.(mayfly.ClaimReleaser)
		if !ok {
			return nil
		}
		releases = true
		return r.ReleaseClaims("r3", []string{"k1", "a2"})
	})
	if releases {
		if got := claim(t, s, later, "r1", later.Add(term), 0); !slices.Equal(got, []string{"k1"}) {
			t.Fatalf("ClaimDue(r1) after r3 released k1 = %v; want [k1]", got)
		}
	}

	// A store whose Tx can renew claims: r1 renews what it holds (k1, if
	// it took it back above; a2 is r2's and stays r2's); the renewed claim
	// outlives its first term, and r3 takes k1 only once the renewal lapses.
	var renewed int
	var renews bool
	update(t, s, func(tx mayfly.Tx) error {
		r, ok := tx.(mayfly.ClaimRenewer)
		if !ok {
			return nil
		}
		renews = true
		var err error
		renewed, err = r.RenewClaims("r1", []string{"k1", "a2", "nope"}, later.Add(5*term))
		return err
	})
	if renews {
		want := 0
		if releases {
			want = 1
		}
		if renewed != want {
			t.Fatalf("RenewClaims(r1, k1 a2 nope) = %d; want %d", renewed, want)
		}
		if releases {
			if got := claim(t, s, later.Add(2*term), "r3", later.Add(3*term), 0); slices.Contains(got, "k1") {
				t.Fatalf("ClaimDue(r3) before r1's renewed claim lapsed = %v; want k1 still claimed", got)
			}
			if got := claim(t, s, later.Add(5*term+time.Nanosecond), "r3", later.Add(6*term), 0); !slices.Contains(got, "k1") {
				t.Fatalf("ClaimDue(r3) after r1's renewed claim lapsed = %v; want k1 among them", got)
			}
		}
		err := s.Update(t.Context(), func(tx mayfly.Tx) error {
			_, err := tx.(mayfly.ClaimRenewer).RenewClaims("", []string{"k1"}, later.Add(term))
			return err
		})
		wantCode(t, "RenewClaims without a holder", err, mayfly.EINVALID)
	}

	err := s.Update(t.Context(), func(tx mayfly.Tx) error {
		_, err := tx.ClaimDue(now, []mayfly.LeaseState{mayfly.LeaseActive}, "", at(term), mayfly.DueCursor{}, 0)
		return err
	})
	wantCode(t, "ClaimDue without a holder", err, mayfly.EINVALID)
	err = s.View(t.Context(), func(tx mayfly.Tx) error {
		_, err := tx.ClaimDue(later, []mayfly.LeaseState{mayfly.LeaseRevoking}, "r3", later.Add(term), mayfly.DueCursor{}, 0)
		return err
	})
	if err == nil {
		t.Error("ClaimDue in a View succeeded; want an error (it writes claims)")
	}
}

func testReplicas(t *testing.T, s mayfly.Store) {
	r1 := &mayfly.Replica{ID: "r1", Address: "10.0.0.1:8443", Version: "1.2.0", StartedAt: base, LastSeen: base.Add(time.Second)}
	r2 := &mayfly.Replica{ID: "r2", Address: "10.0.0.2:8443", Version: "1.2.1", StartedAt: base, LastSeen: base.Add(2 * time.Second)}
	update(t, s, func(tx mayfly.Tx) error {
		if err := tx.Heartbeat(r2); err != nil {
			return err
		}
		return tx.Heartbeat(r1)
	})
	r1.LastSeen = base.Add(5 * time.Second)
	update(t, s, func(tx mayfly.Tx) error { return tx.Heartbeat(r1) })
	var rs []*mayfly.Replica
	view(t, s, func(tx mayfly.Tx) error {
		var err error
		rs, err = tx.ListReplicas()
		return err
	})
	if len(rs) != 2 || rs[0].ID != "r1" || rs[1].ID != "r2" {
		t.Fatalf("ListReplicas = %+v; want r1, r2", rs)
	}
	if rs[0].Address != r1.Address || rs[0].Version != r1.Version || !rs[0].StartedAt.Equal(base) || !rs[0].LastSeen.Equal(r1.LastSeen) {
		t.Errorf("ListReplicas[0] = %+v; want %+v", rs[0], r1)
	}
	checkUTC(t, "replica last_seen", rs[0].LastSeen)
	update(t, s, func(tx mayfly.Tx) error {
		if err := tx.DeleteReplica("r2"); err != nil {
			return err
		}
		return tx.DeleteReplica("r9") // missing: not an error
	})
	view(t, s, func(tx mayfly.Tx) error {
		var err error
		rs, err = tx.ListReplicas()
		return err
	})
	if len(rs) != 1 || rs[0].ID != "r1" {
		t.Fatalf("ListReplicas after deleting r2 = %+v; want r1", rs)
	}
	err := s.Update(t.Context(), func(tx mayfly.Tx) error { return tx.Heartbeat(&mayfly.Replica{}) })
	wantCode(t, "Heartbeat without an id", err, mayfly.EINVALID)
}
