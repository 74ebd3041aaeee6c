package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// testUpdateLeaseFrom checks the compare-and-set update: it writes only
// over the lease the caller had, field by field, deferred or not.
func testUpdateLeaseFrom(t *testing.T, s mayfly.Store) {
	full := fullLease("l1")
	minimal := &mayfly.Lease{ID: "l2", Requester: "bob", State: mayfly.LeaseProvisioning}
	update(t, s, func(tx mayfly.Tx) error {
		if err := tx.CreateLease(full); err != nil {
			return err
		}
		return tx.CreateLease(minimal)
	})
	get := func(id string) *mayfly.Lease {
		t.Helper()
		var l *mayfly.Lease
		view(t, s, func(tx mayfly.Tx) error {
			var err error
			l, err = tx.GetLease(id)
			return err
		})
		return l
	}
	changed := func(l *mayfly.Lease) *mayfly.Lease {
		c := *l
		c.State, c.ExpiresAt, c.DueAt, c.EndedAt = mayfly.LeaseActive, base.Add(5*time.Hour), base.Add(6*time.Hour), time.Time{}
		c.EndReason, c.RevokeAttempts, c.LastError, c.SecretHMAC = "", 0, "", "hmac-"+l.ID
		return &c
	}

	// A lease that differs from prev in any one field is not written.
	stale := []func(l *mayfly.Lease){
		func(l *mayfly.Lease) { l.Username += "x" },
		func(l *mayfly.Lease) { l.State = mayfly.LeaseActive },
		func(l *mayfly.Lease) { l.ExpiresAt = l.ExpiresAt.Add(time.Nanosecond) },
		func(l *mayfly.Lease) { l.DueAt = time.Time{} },
		func(l *mayfly.Lease) { l.EndedAt = l.EndedAt.Add(-time.Second) },
		func(l *mayfly.Lease) { l.EndReason = mayfly.EndDone },
		func(l *mayfly.Lease) { l.RevokeAttempts++ },
		func(l *mayfly.Lease) { l.LastError = "" },
		func(l *mayfly.Lease) { l.SecretHMAC = "" },
	}
	for i, edit := range stale {
		prev := *full
		edit(&prev)
		err := s.Update(context.Background(), func(tx mayfly.Tx) error { return tx.UpdateLeaseFrom(&prev, changed(full)) })
		if !errors.Is(err, mayfly.ErrLeaseChanged) {
			t.Errorf("UpdateLeaseFrom with field %d of prev changed: error %v; want ErrLeaseChanged", i, err)
		}
		wantCode(t, fmt.Sprintf("UpdateLeaseFrom with field %d of prev changed", i), err, mayfly.ECONFLICT)
	}
	checkLease(t, "lease after stale UpdateLeaseFrom", get("l1"), full)

	// Over the lease as stored (absent times included), it writes what
	// UpdateLease writes, and not the fields fixed at creation.
	for _, prev := range []*mayfly.Lease{full, minimal} {
		want := changed(prev)
		attempt := *want
		attempt.RequestID, attempt.Requester, attempt.Target, attempt.Grant, attempt.CreatedAt = "r-x", "mallory", "other", "dba", base.Add(time.Minute)
		update(t, s, func(tx mayfly.Tx) error { return tx.UpdateLeaseFrom(prev, &attempt) })
		checkLease(t, "lease after UpdateLeaseFrom "+prev.ID, get(prev.ID), want)
		// The same call again compares with what is no longer stored.
		err := s.Update(context.Background(), func(tx mayfly.Tx) error { return tx.UpdateLeaseFrom(prev, &attempt) })
		if !errors.Is(err, mayfly.ErrLeaseChanged) {
			t.Errorf("UpdateLeaseFrom(%s) over its own write: error %v; want ErrLeaseChanged", prev.ID, err)
		}
	}
	err := s.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.UpdateLeaseFrom(&mayfly.Lease{ID: "nope"}, &mayfly.Lease{ID: "nope"})
	})
	if !errors.Is(err, mayfly.ErrLeaseChanged) {
		t.Errorf("UpdateLeaseFrom(missing): error %v; want ErrLeaseChanged", err)
	}
	err = s.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.UpdateLeaseFrom(full, minimal)
	})
	if err == nil {
		t.Error("UpdateLeaseFrom with prev and l of different leases: no error")
	}

	// Deferred (where the store defers), a stale write fails its
	// transaction: what came with it, audit events included, is not
	// committed.
	before := len(listAudit(t, s, mayfly.AuditFilter{}))
	err = s.Update(context.Background(), func(tx mayfly.Tx) error {
		mayfly.DeferNextWrite(tx)
		if err := tx.UpdateLeaseFrom(full, changed(full)); err != nil {
			return err
		}
		if err := tx.PutSetting("after-stale", "1"); err != nil {
			return err
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: base, Actor: "alice", Action: "lease.activate", LeaseID: "l1"})
	})
	if !errors.Is(err, mayfly.ErrLeaseChanged) {
		t.Errorf("deferred stale UpdateLeaseFrom: Update error %v; want ErrLeaseChanged", err)
	}
	view(t, s, func(tx mayfly.Tx) error {
		if _, err := tx.GetSetting("after-stale"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Errorf("setting written with a stale UpdateLeaseFrom: GetSetting error %v; want ENOTFOUND", err)
		}
		return nil
	})
	if n := len(listAudit(t, s, mayfly.AuditFilter{})); n != before {
		t.Errorf("audit events after a stale UpdateLeaseFrom: %d; want %d", n, before)
	}

	// Deferred and current, it commits with its audit event.
	cur := get("l1")
	next := *cur
	next.State, next.DueAt = mayfly.LeaseRevoking, base
	update(t, s, func(tx mayfly.Tx) error {
		mayfly.DeferNextWrite(tx)
		if err := tx.UpdateLeaseFrom(cur, &next); err != nil {
			return err
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: base, Actor: "alice", Action: "lease.revoke", LeaseID: "l1"})
	})
	checkLease(t, "lease after deferred UpdateLeaseFrom", get("l1"), &next)
	es := listAudit(t, s, mayfly.AuditFilter{})
	checkChain(t, es)
	if len(es) != before+1 || es[len(es)-1].Action != "lease.revoke" {
		t.Errorf("audit after deferred UpdateLeaseFrom: %d events; want %d ending with lease.revoke", len(es), before+1)
	}
}

// testWriteIntent checks mayfly.WriteIntent: the requester's status read
// with the lease's creation, both undone with a refusal, and the audit
// chain intact around it.
func testWriteIntent(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error { return tx.SetUserStatus("mallory", "suspended") })
	appendAll(t, s, []*mayfly.AuditEvent{{Time: base, Actor: "admin", Action: "user.suspend", Subject: "user:mallory"}})

	intent := func(user, id string) (string, error) {
		var st string
		err := requestAndIntent(s, user, id, func(tx mayfly.Tx, l *mayfly.Lease) error {
			var err error
			if st, err = mayfly.WriteIntent(tx, l); err != nil {
				return err
			}
			if st == "suspended" {
				return mayfly.Errorf(mayfly.EFORBIDDEN, "user %s is suspended", user)
			}
			return nil
		})
		return st, err
	}

	st, err := intent("mallory", "lm")
	wantCode(t, "intent of a suspended user", err, mayfly.EFORBIDDEN)
	if st != "suspended" {
		t.Errorf("WriteIntent status of mallory = %q; want suspended", st)
	}
	view(t, s, func(tx mayfly.Tx) error {
		if _, err := tx.GetLease("lm"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Errorf("lease of a refused intent: GetLease error %v; want ENOTFOUND", err)
		}
		if _, err := tx.GetRequest("r-lm-mallory"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Errorf("request of a refused intent: GetRequest error %v; want ENOTFOUND", err)
		}
		return nil
	})

	if st, err := intent("alice", "la"); err != nil || st != "" {
		t.Fatalf("intent of a user with no status: %q, %v; want \"\", nil", st, err)
	}
	update(t, s, func(tx mayfly.Tx) error { return tx.SetUserStatus("bob", "active") })
	if st, err := intent("bob", "lb"); err != nil || st != "active" {
		t.Fatalf("intent of an active user: %q, %v; want active, nil", st, err)
	}
	view(t, s, func(tx mayfly.Tx) error {
		for _, id := range []string{"la", "lb"} {
			l, err := tx.GetLease(id)
			if err != nil {
				return err
			}
			if l.State != mayfly.LeaseProvisioning {
				t.Errorf("lease %s is %s; want provisioning", id, l.State)
			}
		}
		return nil
	})
	// An existing lease id is a conflict, and nothing of its transaction
	// is committed.
	if _, err := intent("alice", "lb"); mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Errorf("intent of an existing lease: error %v; want ECONFLICT", err)
	}
	// A write deferred after the intent (the head of the chain already
	// locked) that finds nothing fails the transaction before it commits.
	err = s.Update(context.Background(), func(tx mayfly.Tx) error {
		l := fullLease("lc")
		l.State = mayfly.LeaseProvisioning
		if _, err := mayfly.WriteIntent(tx, l); err != nil {
			return err
		}
		mayfly.DeferNextWrite(tx)
		if err := tx.UpdateLease(&mayfly.Lease{ID: "missing", State: mayfly.LeaseActive}); err != nil {
			return err
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: base, Actor: "alice", Action: "lease.intent", LeaseID: "lc"})
	})
	wantCode(t, "a deferred update of a missing lease after WriteIntent", err, mayfly.ENOTFOUND)
	view(t, s, func(tx mayfly.Tx) error {
		if _, err := tx.GetLease("lc"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Errorf("intent of a failed transaction: GetLease error %v; want ENOTFOUND", err)
		}
		return nil
	})
	es := listAudit(t, s, mayfly.AuditFilter{})
	checkChain(t, es)
	if len(es) != 5 {
		t.Errorf("audit trail has %d events; want 5 (a suspension, then a request and an intent twice)", len(es))
	}
}

// testWriteIntentUnless checks mayfly.WriteIntentUnless: a refused status
// fails the transaction with StatusRefused naming it, and nothing of the
// transaction (request, lease, audit events) is committed; other statuses,
// or none, let the intent through; an existing lease id is a conflict.
func testWriteIntentUnless(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error {
		for user, st := range map[string]string{"mallory": "suspended", "trudy": "deprovisioned", "bob": "active"} {
			if err := tx.SetUserStatus(user, st); err != nil {
				return err
			}
		}
		return nil
	})
	appendAll(t, s, []*mayfly.AuditEvent{{Time: base, Actor: "admin", Action: "user.suspend", Subject: "user:mallory"}})
	intent := func(user, id string) error {
		return requestAndIntent(s, user, id, func(tx mayfly.Tx, l *mayfly.Lease) error {
			return mayfly.WriteIntentUnless(tx, l, "suspended", "deprovisioned")
		})
	}
	for user, st := range map[string]string{"mallory": "suspended", "trudy": "deprovisioned"} {
		err := intent(user, "l-"+user)
		wantCode(t, "intent of a "+st+" user", err, mayfly.EFORBIDDEN)
		if want := mayfly.StatusRefused(user, st).Error(); err == nil || err.Error() != want {
			t.Errorf("intent of %s: error %v; want %q", user, err, want)
		}
		view(t, s, func(tx mayfly.Tx) error {
			if _, err := tx.GetLease("l-" + user); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
				t.Errorf("lease of a refused intent: GetLease error %v; want ENOTFOUND", err)
			}
			if _, err := tx.GetRequest("r-l-" + user + "-" + user); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
				t.Errorf("request of a refused intent: GetRequest error %v; want ENOTFOUND", err)
			}
			return nil
		})
	}
	for _, user := range []string{"alice", "bob"} {
		if err := intent(user, "l-"+user); err != nil {
			t.Fatalf("intent of %s: %v", user, err)
		}
	}
	view(t, s, func(tx mayfly.Tx) error {
		for _, user := range []string{"alice", "bob"} {
			l, err := tx.GetLease("l-" + user)
			if err != nil {
				return err
			}
			if l.State != mayfly.LeaseProvisioning || l.Requester != user {
				t.Errorf("lease of %s: %s of %s; want provisioning", user, l.State, l.Requester)
			}
		}
		return nil
	})
	if err := intent("alice", "l-bob"); mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Errorf("intent of an existing lease: error %v; want ECONFLICT", err)
	}
	// With no status refused, any status passes.
	if err := requestAndIntent(s, "mallory", "l-any", func(tx mayfly.Tx, l *mayfly.Lease) error {
		return mayfly.WriteIntentUnless(tx, l)
	}); err != nil {
		t.Errorf("intent of a suspended user with no status refused: %v", err)
	}
	es := listAudit(t, s, mayfly.AuditFilter{})
	checkChain(t, es)
	if len(es) != 7 {
		t.Errorf("audit trail has %d events; want 7 (a suspension, then a request and an intent three times)", len(es))
	}
}

// requestAndIntent writes in one transaction, as the broker's one-call
// issue does, a request of user (its creation deferred) with its audit
// event, the intent of lease id for it, recorded by write, and the
// intent's audit event.
func requestAndIntent(s mayfly.Store, user, id string, write func(tx mayfly.Tx, l *mayfly.Lease) error) error {
	return s.Update(context.Background(), func(tx mayfly.Tx) error {
		r := fullRequest("r-" + id + "-" + user)
		r.Requester = user
		mayfly.DeferNextWrite(tx)
		if err := tx.CreateRequest(r); err != nil {
			return err
		}
		if err := tx.AppendAudit(&mayfly.AuditEvent{Time: base, Actor: user, Action: "request.create", RequestID: r.ID}); err != nil {
			return err
		}
		l := fullLease(id)
		l.Requester, l.RequestID, l.State = user, r.ID, mayfly.LeaseProvisioning
		if err := write(tx, l); err != nil {
			return err
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: base, Actor: user, Action: "lease.intent", LeaseID: id})
	})
}
