package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
)

// countingQuerier counts the round trips of a transaction: each call is
// one (a batch is sent, and its results read, in one).
type countingQuerier struct {
	q querier
	n int
}

func (c *countingQuerier) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c.n++
	return c.q.Exec(ctx, sql, args...)
}

func (c *countingQuerier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.n++
	return c.q.Query(ctx, sql, args...)
}

func (c *countingQuerier) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	c.n++
	return c.q.SendBatch(ctx, b)
}

// TestIssueRoundTrips runs the store calls of a one-call issue, as the
// broker makes them, and counts their round trips: the request and the
// intent in one, the activation in one, each with its events chained by
// PostgreSQL in the round trip of the COMMIT (see chainSQL), whoever
// appended last; and what they wrote is there, with an intact audit
// chain.
func TestIssueRoundTrips(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, other := open(t, dsn), open(t, dsn)
	ctx := context.Background()
	run := func(what string, want int, fn func(tx mayfly.Tx) error) {
		t.Helper()
		c, err := db.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		q := &countingQuerier{q: c}
		// As db.run makes it.
		tx := &tx{ctx: ctx, q: q, write: true, begin: []string{beginWrite}, db: db}
		if err := fn(tx); err != nil {
			c.Exec(ctx, "ROLLBACK")
			t.Fatalf("%s: %v", what, err)
		}
		if err := tx.commit(); err != nil {
			t.Fatalf("%s: commit: %v", what, err)
		}
		if q.n != want {
			t.Errorf("%s took %d round trips; want %d", what, q.n, want)
		}
	}
	issue := func(id string) {
		t.Helper()
		now := time.Now().UTC()
		r := &mayfly.Request{ID: "r" + id, Requester: "alice", Target: "pg", Grant: "ro", Reason: "x", Duration: time.Hour,
			CreatedAt: now, DecidedAt: now, State: mayfly.RequestApproved, LeaseID: "l" + id}
		l := &mayfly.Lease{ID: "l" + id, RequestID: r.ID, Requester: "alice", Target: "pg", Grant: "ro", Username: "mf_alice_" + id,
			State: mayfly.LeaseProvisioning, CreatedAt: now, ExpiresAt: now.Add(time.Hour), DueAt: now.Add(time.Minute)}
		run("request and intent", 1, func(tx mayfly.Tx) error {
			mayfly.DeferNextWrite(tx)
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
			if err := tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "alice", Action: "request.create", RequestID: r.ID}); err != nil {
				return err
			}
			if err := mayfly.WriteIntentUnless(tx, l, "suspended"); err != nil {
				return err
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "alice", Action: "lease.intent", LeaseID: l.ID})
		})
		active := *l
		active.State, active.DueAt, active.SecretHMAC = mayfly.LeaseActive, l.ExpiresAt, "hmac"
		run("activation", 1, func(tx mayfly.Tx) error {
			mayfly.DeferNextWrite(tx)
			if err := tx.UpdateLeaseFrom(l, &active); err != nil {
				return err
			}
			return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: "alice", Action: "lease.activate", LeaseID: l.ID})
		})
	}
	issue("1")
	issue("2")
	// Another replica appends between the issues.
	appendOne(t, other, "other.1")
	issue("3")
	appendOne(t, other, "other.2")
	issue("4")
	if err := db.View(ctx, func(tx mayfly.Tx) error {
		for _, id := range []string{"l1", "l2", "l3", "l4"} {
			got, err := tx.GetLease(id)
			if err != nil {
				return err
			}
			if got.State != mayfly.LeaseActive || got.SecretHMAC != "hmac" {
				t.Errorf("lease %s after activation: %s, %q; want active, hmac", id, got.State, got.SecretHMAC)
			}
		}
		if _, err := tx.GetRequest("r1"); err != nil {
			return err
		}
		return checkChain(t, tx, 14)
	}); err != nil {
		t.Fatal(err)
	}
}

// checkChain reads the whole audit trail in tx and reports, as errors of
// t, an event that does not chain to the one before it (from sequence
// number 1) and a count other than want.
func checkChain(t *testing.T, tx mayfly.Tx, want int) error {
	t.Helper()
	es, err := tx.ListAudit(mayfly.AuditFilter{})
	if err != nil {
		return err
	}
	prev := ""
	for i, e := range es {
		if e.Seq != int64(i+1) || e.PrevHash != prev || e.Hash != e.ComputeHash() {
			t.Errorf("audit event %d breaks the chain: %+v", i, e)
		}
		prev = e.Hash
	}
	if len(es) != want {
		t.Errorf("%d audit events; want %d", len(es), want)
	}
	return nil
}
