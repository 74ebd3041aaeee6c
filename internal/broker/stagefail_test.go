package broker_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestStageFailureIsNotRetried: a PostgreSQL target that accepts
// connections and never answers. Both ways to activate (one call, and a
// request activated later) try to reach it once: the creation that could
// not be sent is recorded as the lease's provisioning failure, not tried
// again (which would hang as long a second time), and the caller gets an
// error.
func TestStageFailureIsNotRetried(t *testing.T) {
	ctx := context.Background()
	hung := newHungListener(t)
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tgt := mayfly.Target{Name: "hung", Kind: mayfly.KindPostgres, Prefix: "mfh_",
		DSN:    "postgres://postgres@" + hung.addr() + "/postgres?sslmode=disable&connect_timeout=1",
		Grants: map[string]mayfly.Grant{"ro": {Name: "ro", Roles: []string{"pg_read_all_data"}}}}
	conn, err := postgres.New(tgt, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	b := oneTargetBroker(t, st, tgt, conn)
	alice := broker.Caller{User: "alice", Groups: []string{"eng"}}
	in := broker.RequestInput{Target: "hung", Grant: "ro", Duration: 10 * time.Minute, Reason: "x"}

	failed := func(what string, leaseID string, err error, connections int64) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s on a hung target succeeded", what)
		}
		if n := hung.accepted.Load(); n != connections {
			t.Errorf("%s: the target was reached %d times in all; want %d (one attempt each)", what, n, connections)
		}
		l, err := b.FindLease(ctx, broker.System, leaseID)
		if err != nil {
			t.Fatalf("%s: lease %q: %v", what, leaseID, err)
		}
		if l.EndReason != mayfly.EndFailed || (l.State != mayfly.LeaseRevoking && l.State != mayfly.LeaseFailed) {
			t.Errorf("%s: lease is %s/%s; want its provisioning failure recorded", what, l.State, l.EndReason)
		}
	}

	r, _, a, err := b.CreateAndActivate(ctx, alice, in, broker.ActivateOptions{})
	if a != nil || r == nil {
		t.Fatalf("one-call issue = %+v, %+v", r, a)
	}
	failed("one-call issue", r.LeaseID, err, 1)

	r, _, err = b.CreateRequest(ctx, alice, in)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Activate(ctx, alice, r.ID, broker.ActivateOptions{})
	r, gerr := b.GetRequest(ctx, alice, r.ID)
	if gerr != nil {
		t.Fatal(gerr)
	}
	failed("activation", r.LeaseID, err, 2)
}

// unstageable is a PostgreSQL connector behind a wrapper that finds, at
// the time of the creation, that it cannot stage it (as the sealed
// credentials' wrapper does when the connector in force has no such
// method).
type unstageable struct {
	mayfly.Connector
	tries atomic.Int64
}

func (u *unstageable) PrepareProvision(context.Context, mayfly.ProvisionRequest) (mayfly.PreparedProvision, error) {
	u.tries.Add(1)
	return nil, mayfly.ErrCannotStage
}

// TestCannotStageProvisionsUsually: a connector that says it cannot stage
// the creation is provisioned the usual way, on both paths, and the
// credential logs in.
func TestCannotStageProvisionsUsually(t *testing.T) {
	w := newOneCommitWorld(t)
	ctx := ctxT(t)
	tgt := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: w.prefix, DSN: testenv.PostgresDSN(),
		Grants: map[string]mayfly.Grant{"read": {Name: "read", Roles: []string{"pg_read_all_data"}}}}
	inner, err := postgres.New(tgt, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inner.Close() })
	u := &unstageable{Connector: inner}
	b := oneTargetBroker(t, w.st, tgt, u)
	in := broker.RequestInput{Target: "pg", Grant: "read", Duration: 10 * time.Minute, Reason: "x"}
	_, _, a, err := b.CreateAndActivate(ctx, w.alice, in, broker.ActivateOptions{})
	if err != nil {
		t.Fatalf("one-call issue through a connector that cannot stage: %v", err)
	}
	w.expectLogin(t, a)
	r, _, err := b.CreateRequest(ctx, w.alice, in)
	if err != nil {
		t.Fatal(err)
	}
	if a, err = b.Activate(ctx, w.alice, r.ID, broker.ActivateOptions{}); err != nil {
		t.Fatalf("activation through a connector that cannot stage: %v", err)
	}
	w.expectLogin(t, a)
	if n := u.tries.Load(); n != 2 {
		t.Errorf("staging tried %d times; want once per activation", n)
	}
}
