package broker_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
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
	set, err := policy.Compile([]policy.Policy{{Name: "p", Groups: []string{"eng"}, Targets: []string{"hung"}, Grants: []string{"ro"}, MaxDuration: time.Hour}},
		[]policy.TargetInfo{{Name: "hung", Kind: "postgres", Grants: []string{"ro"}}})
	if err != nil {
		t.Fatal(err)
	}
	b := broker.New(&broker.Config{Targets: map[string]mayfly.Target{"hung": tgt}, Policies: set},
		broker.Options{Store: st, Connectors: map[string]mayfly.Connector{"hung": conn}, HMACKey: []byte("k")})
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
