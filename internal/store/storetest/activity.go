package storetest

import (
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// testLeaseActivity: a lease's last activity is kept at its latest, read
// back by ID, and absent for leases with none or that do not exist; the
// lease itself is unchanged.
func testLeaseActivity(t *testing.T, s mayfly.Store) {
	view(t, s, func(tx mayfly.Tx) error {
		if _, ok := tx.(mayfly.ActivityTx); !ok {
			t.Skip("this store keeps no lease activity")
		}
		return nil
	})
	a, b := fullLease("lse_act_a"), fullLease("lse_act_b")
	a.RequestID, b.RequestID = "req_act_a", "req_act_b"
	b.Username = "mf_act_b"
	update(t, s, func(tx mayfly.Tx) error {
		if err := tx.CreateLease(a); err != nil {
			return err
		}
		return tx.CreateLease(b)
	})
	touch := func(at map[string]time.Time) {
		t.Helper()
		update(t, s, func(tx mayfly.Tx) error { return tx.(mayfly.ActivityTx).TouchLeases(at) })
	}
	read := func(ids ...string) map[string]time.Time {
		t.Helper()
		var got map[string]time.Time
		view(t, s, func(tx mayfly.Tx) error {
			var err error
			got, err = tx.(mayfly.ActivityTx).LeaseActivity(ids)
			return err
		})
		return got
	}
	if got := read(a.ID, b.ID); len(got) != 0 {
		t.Fatalf("activity before any = %v; want none", got)
	}
	t1 := base.Add(time.Minute + 123456789)
	t2 := t1.Add(2 * time.Second)
	touch(map[string]time.Time{a.ID: t2, "lse_missing": t1})
	touch(map[string]time.Time{a.ID: t1}) // earlier: ignored
	touch(nil)
	got := read(a.ID, b.ID, "lse_missing")
	if len(got) != 1 || !got[a.ID].Equal(t2) {
		t.Fatalf("activity = %v; want only %s at %s", got, a.ID, t2)
	}
	touch(map[string]time.Time{a.ID: t2.Add(time.Second), b.ID: t1})
	got = read(a.ID, b.ID)
	if !got[a.ID].Equal(t2.Add(time.Second)) || !got[b.ID].Equal(t1) {
		t.Fatalf("activity = %v; want %s at %s and %s at %s", got, a.ID, t2.Add(time.Second), b.ID, t1)
	}
	var back *mayfly.Lease
	view(t, s, func(tx mayfly.Tx) error {
		var err error
		back, err = tx.GetLease(a.ID)
		return err
	})
	if !back.ExpiresAt.Equal(a.ExpiresAt) || back.State != a.State || back.Username != a.Username {
		t.Errorf("lease changed by recording its activity: %+v", back)
	}
}
