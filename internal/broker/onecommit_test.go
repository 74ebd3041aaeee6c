package broker_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/policy"
	pgstore "github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// oneCommitWorld is a broker on a PostgreSQL store (a database of its own)
// whose one target is the local PostgreSQL under a prefix of its own:
// where a one-call issue records its activation with its intent.
type oneCommitWorld struct {
	b      *broker.Broker
	st     mayfly.Store
	store  *pgx.Conn // the store's database, as its admin
	prefix string
	alice  broker.Caller
	admin  broker.Caller
	// afterCommit, when set, runs between the one commit and the target's
	// commit of the account (the broker's AfterIntent hook).
	afterCommit func(*mayfly.Lease)
	// replica makes another broker on the same store and target, with a
	// connector of its own: another replica.
	replica func() *broker.Broker
}

func newOneCommitWorld(t *testing.T, roles ...string) *oneCommitWorld {
	t.Helper()
	return buildOneCommitWorld(t, "", roles)
}

// buildOneCommitWorld is newOneCommitWorld whose broker (not its other
// replicas) reaches PostgreSQL with the DSN ownDSN, when set (through a
// proxy the test can cut).
func buildOneCommitWorld(t *testing.T, ownDSN string, roles []string) *oneCommitWorld {
	t.Helper()
	return buildWorldOn(t, nil, false, ownDSN, roles)
}

// newSQLiteStagedWorld is the same world on a SQLite store (w.store is
// nil), with an installation key: where a creation is staged while its
// intent is recorded, the intent not waiting for the log's sync, and the
// activation recorded after it.
func newSQLiteStagedWorld(t *testing.T) *oneCommitWorld {
	t.Helper()
	st, err := sqlite.Open(ctxT(t), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return buildWorldOn(t, st, true, "", nil)
}

// buildWorldOn builds the world on store st, or on a PostgreSQL store of
// its own when st is nil; keyed gives the target an installation key.
func buildWorldOn(t *testing.T, st mayfly.Store, keyed bool, ownDSN string, roles []string) *oneCommitWorld {
	t.Helper()
	ctx := ctxT(t)
	var sc *pgx.Conn
	if st == nil {
		dsn := pgtest.NewDatabase(t)
		pst, err := pgstore.Open(ctx, dsn, 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pst.Close() })
		if sc, err = pgx.Connect(ctx, dsn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close(context.Background()) })
		st = pst
	}
	if len(roles) == 0 {
		roles = []string{"pg_read_all_data"}
	}
	prefix := uniquePrefix()
	tgt := mayfly.Target{Name: "pg", Kind: mayfly.KindPostgres, Prefix: prefix, DSN: testenv.PostgresDSN(),
		Grants: map[string]mayfly.Grant{"read": {Name: "read", Roles: roles}}}
	getenv := installationKey(&tgt, keyed)
	own := tgt
	if ownDSN != "" {
		own.DSN = ownDSN
	}
	conn, err := postgres.New(own, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Check(ctx); err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	t.Cleanup(func() {
		for _, r := range rolesUnder(t, prefix) {
			pgExec(t, "DROP ROLE IF EXISTS "+pgQuote(r))
		}
		conn.Close()
	})
	set, err := policy.Compile([]policy.Policy{{Name: "p", Groups: []string{"eng"}, Targets: []string{"pg"}, Grants: []string{"read"}, MaxDuration: time.Hour}},
		[]policy.TargetInfo{{Name: "pg", Kind: "postgres", Grants: []string{"read"}}})
	if err != nil {
		t.Fatal(err)
	}
	users := map[string][]string{"alice": {"eng"}, "root": {"admin"}}
	w := &oneCommitWorld{st: st, store: sc, prefix: prefix,
		alice: broker.Caller{User: "alice", Groups: []string{"eng"}},
		admin: broker.Caller{User: "root", Groups: []string{"admin"}, Admin: true}}
	cfg := func() *broker.Config {
		return &broker.Config{Targets: map[string]mayfly.Target{"pg": tgt}, Policies: set, Users: users, UserOrder: []string{"alice", "root"}}
	}
	w.b = broker.New(cfg(),
		broker.Options{Store: st, Connectors: map[string]mayfly.Connector{"pg": conn}, HMACKey: []byte("k"),
			AfterIntent: func(l *mayfly.Lease) {
				if w.afterCommit != nil {
					w.afterCommit(l)
				}
			}})
	w.replica = func() *broker.Broker {
		c2, err := postgres.New(tgt, getenv)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c2.Close() })
		return broker.New(cfg(), broker.Options{Store: st, Connectors: map[string]mayfly.Connector{"pg": c2}, HMACKey: []byte("k")})
	}
	return w
}

// expectLogin checks that a's credential logs in at the target and that
// a wrong password does not.
func (w *oneCommitWorld) expectLogin(t *testing.T, a *broker.Activation) {
	t.Helper()
	if err := login(ctxT(t), "pg", a.Credential); err != nil {
		t.Fatalf("login with the issued credential: %v", err)
	}
	wrong := a.Credential
	wrong.Password += "x"
	if err := login(ctxT(t), "pg", wrong); err == nil {
		t.Fatal("a wrong password logged in: the server does not check passwords")
	}
}

// revokeAndExpectGone revokes a's lease as an admin and checks that its
// credential is refused and no role is left.
func (w *oneCommitWorld) revokeAndExpectGone(t *testing.T, a *broker.Activation) {
	t.Helper()
	ctx := ctxT(t)
	ended, err := w.b.EndLease(ctx, w.admin, a.Lease.ID, mayfly.EndRevoked, "test")
	if err != nil {
		t.Fatalf("revoke: %v", err)
	}
	w.b.RevokeNow(ctx, ended)
	if err := login(ctx, "pg", a.Credential); err == nil {
		t.Fatal("the credential still logs in after revocation")
	}
	if n := len(rolesUnder(t, w.prefix)); n != 0 {
		t.Fatalf("%d role(s) left after revocation", n)
	}
}

// rolesUnder lists the roles named with prefix.
func rolesUnder(t *testing.T, prefix string) []string {
	t.Helper()
	rows, err := pgAdmin(t).Query(ctxT(t), "SELECT rolname FROM pg_catalog.pg_roles WHERE starts_with(rolname, $1)", prefix)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// issue is a one-call issue for alice.
func (w *oneCommitWorld) issue(t *testing.T) (*mayfly.Request, *broker.Activation, error) {
	t.Helper()
	r, _, a, err := w.b.CreateAndActivate(ctxT(t), w.alice, broker.RequestInput{Target: "pg", Grant: "read", Duration: 30 * time.Minute, Reason: "INC-7"}, broker.ActivateOptions{})
	return r, a, err
}

// TestOneCommitIssue: on the PostgreSQL store, a one-call issue records
// the request, the intent and the activation in one transaction (their
// rows and events share its id), committed before the role is; the
// credential logs in, a wrong password does not, and after revocation the
// credential is refused.
func TestOneCommitIssue(t *testing.T) {
	w := newOneCommitWorld(t)
	ctx := ctxT(t)
	r, a, err := w.issue(t)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if a == nil || a.Lease.State != mayfly.LeaseActive || a.Lease.SecretHMAC == "" || !a.Lease.DueAt.Equal(a.Lease.ExpiresAt) {
		t.Fatalf("activation = %+v; want an active lease due at its expiry with its secret's hash", a)
	}
	if got := w.b.HashSecret(a.Credential.Password); got != a.Lease.SecretHMAC {
		t.Errorf("lease's secret hash %s is not the credential's %s", a.Lease.SecretHMAC, got)
	}

	// One transaction: every row and event it wrote carries its id.
	var txids []string
	rows, err := w.store.Query(ctx, `SELECT xmin::text FROM requests WHERE id = $1
		UNION ALL SELECT xmin::text FROM leases WHERE id = $2
		UNION ALL SELECT xmin::text FROM audit_events WHERE request_id = $1 OR lease_id = $2`, r.ID, a.Lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	if txids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(txids) != 5 {
		t.Fatalf("%d rows and events of the issue; want the request, the lease and 3 events", len(txids))
	}
	for _, x := range txids[1:] {
		if x != txids[0] {
			t.Errorf("the issue wrote in transactions %v; want one", txids)
			break
		}
	}
	var actions []string
	rows, err = w.store.Query(ctx, `SELECT action FROM audit_events WHERE request_id = $1 OR lease_id = $2 ORDER BY seq`, r.ID, a.Lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	if actions, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if strings.Join(actions, ",") != "request.create,lease.intent,lease.activate" {
		t.Errorf("events = %v; want request.create, lease.intent, lease.activate", actions)
	}

	w.expectLogin(t, a)
	w.revokeAndExpectGone(t, a)
	if res, err := audit.Verify(ctx, w.st, 0, 0); err != nil || !res.OK {
		t.Errorf("audit chain: %+v, %v", res, err)
	}
}

// TestOneCommitRefusedLeavesNoRole: the requester suspended (as another
// replica would, with nothing in this broker's memory) makes the one
// commit fail; the creation staged on the target is rolled back, and
// nothing of the issue is recorded.
func TestOneCommitRefusedLeavesNoRole(t *testing.T) {
	w := newOneCommitWorld(t)
	ctx := ctxT(t)
	if _, _, err := w.b.SetUserStatus(ctx, w.admin, "alice", broker.UserSuspended, "left"); err != nil {
		t.Fatal(err)
	}
	_, a, err := w.issue(t)
	if err == nil || mayfly.ErrorCode(err) != mayfly.EFORBIDDEN || !strings.Contains(err.Error(), "suspended") {
		t.Fatalf("issue for a suspended user = %+v, %v; want refused", a, err)
	}
	if n := len(rolesUnder(t, w.prefix)); n != 0 {
		t.Errorf("%d role(s) exist after a refused issue", n)
	}
	var leases int
	if err := w.store.QueryRow(ctx, "SELECT count(*) FROM leases").Scan(&leases); err != nil {
		t.Fatal(err)
	}
	if leases != 0 {
		t.Errorf("%d lease(s) recorded for a refused issue", leases)
	}
}

// TestOneCommitCreationFails: the target refuses the creation after the
// lease was recorded active with its intent (its grant names a role that
// does not exist): the caller gets the target's error, no role exists,
// and the lease is handed to the scheduler to undo (revoking,
// provisioning failed), recorded in the audit trail.
func TestOneCommitCreationFails(t *testing.T) {
	w := newOneCommitWorld(t, "mf_no_such_role_for_one_commit")
	ctx := ctxT(t)
	_, a, err := w.issue(t)
	if err == nil {
		t.Fatalf("issue with a grant of a missing role = %+v; want an error", a)
	}
	if !strings.Contains(err.Error(), "mf_no_such_role_for_one_commit") {
		t.Errorf("error %q does not name the missing role", err)
	}
	if n := len(rolesUnder(t, w.prefix)); n != 0 {
		t.Errorf("%d role(s) exist after a failed creation", n)
	}
	var state, reason string
	if err := w.store.QueryRow(ctx, "SELECT state, end_reason FROM leases").Scan(&state, &reason); err != nil {
		t.Fatal(err)
	}
	if state != string(mayfly.LeaseRevoking) || reason != mayfly.EndFailed {
		t.Errorf("lease is %s/%s; want revoking/%s", state, reason, mayfly.EndFailed)
	}
	var n int
	if err := w.store.QueryRow(ctx, "SELECT count(*) FROM audit_events WHERE action = 'lease.provision_failed'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d lease.provision_failed events; want 1", n)
	}
}

// TestOneCommitRevokedBeforeTargetCommit races an admin's revoke with the
// one-call path: the revoke is recorded after the one commit, before the
// target commits the role. The revocation on the target waits for that
// commit, then removes the role: the issue returns its credential, which no longer logs
// in, and nothing is left on the target.
func TestOneCommitRevokedBeforeTargetCommit(t *testing.T) {
	w := newOneCommitWorld(t)
	ctx := ctxT(t)
	revoked := make(chan error, 1)
	w.afterCommit = func(l *mayfly.Lease) {
		if n := len(rolesUnder(t, w.prefix)); n != 0 {
			t.Errorf("%d role(s) exist before the target's commit", n)
		}
		go func() {
			// Records the end, then revokes, which waits for the commit.
			_, err := w.b.EndLease(ctx, w.admin, l.ID, mayfly.EndRevoked, "race")
			revoked <- err
		}()
		// Let the commit go once the end is recorded and the revocation
		// on the target has had time to run.
		deadline := time.Now().Add(10 * time.Second)
		for {
			var state string
			if err := w.store.QueryRow(ctx, "SELECT state FROM leases WHERE id = $1", l.ID).Scan(&state); err != nil {
				t.Error(err)
				return
			}
			if state != string(mayfly.LeaseActive) {
				break
			}
			if time.Now().After(deadline) {
				t.Error("the revoke was not recorded")
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		// A revocation that did not wait for the commit would be done
		// by now, before the role exists.
		select {
		case err := <-revoked:
			revoked <- err
		case <-time.After(300 * time.Millisecond):
		}
	}
	_, a, err := w.issue(t)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if err := <-revoked; err != nil {
		t.Fatalf("revoke during the issue: %v", err)
	}
	var state, reason string
	if err := w.store.QueryRow(ctx, "SELECT state, end_reason FROM leases WHERE id = $1", a.Lease.ID).Scan(&state, &reason); err != nil {
		t.Fatal(err)
	}
	if state != string(mayfly.LeaseRevoked) || reason != mayfly.EndRevoked {
		t.Errorf("lease is %s/%s; want revoked/%s", state, reason, mayfly.EndRevoked)
	}
	if err := login(ctx, "pg", a.Credential); err == nil {
		t.Error("the credential logs in after the revoke that raced its issue")
	}
	if n := len(rolesUnder(t, w.prefix)); n != 0 {
		t.Errorf("%d role(s) left after the revoke that raced the issue", n)
	}
}

// TestOneCommitRecheckRetried: the issuing replica's recheck of a lease
// revoked through another replica while its role was committed cannot
// reach the target at first (its connections cut); it tries again a
// second later and removes the role then.
func TestOneCommitRecheckRetried(t *testing.T) {
	p, u := testenv.ProxyTo(t, testenv.PostgresDSN())
	u.Host = p.Addr()
	w := buildOneCommitWorld(t, u.String(), nil)
	other := w.replica()
	ctx := ctxT(t)
	w.afterCommit = func(l *mayfly.Lease) {
		if _, err := other.EndLease(ctx, w.admin, l.ID, mayfly.EndRevoked, "race through another replica"); err != nil {
			t.Errorf("revoke through the other replica: %v", err)
		}
	}
	_, a, err := w.issue(t)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	// The recheck, half a second after the commit, finds the target cut
	// off.
	p.Cut()
	time.Sleep(900 * time.Millisecond)
	if len(rolesUnder(t, w.prefix)) != 1 {
		t.Fatalf("the role went while its target was cut off from the broker: %v", rolesUnder(t, w.prefix))
	}
	p.Thaw()
	w.expectRoleRemoved(t, a, "5 s after its target came back")
}

// TestOneCommitRevokedThroughAnotherReplica: as above, but the revocation
// goes through another replica, which cannot know that the account is
// being committed: it finds no role to remove and records the lease
// revoked, and the role appears afterwards. The issuing replica looks at
// its recent issues again and removes the role within a second or so.
func TestOneCommitRevokedThroughAnotherReplica(t *testing.T) {
	w := newOneCommitWorld(t)
	other := w.replica()
	ctx := ctxT(t)
	w.afterCommit = func(l *mayfly.Lease) {
		if _, err := other.EndLease(ctx, w.admin, l.ID, mayfly.EndRevoked, "race through another replica"); err != nil {
			t.Errorf("revoke through the other replica: %v", err)
		}
		var state string
		if err := w.store.QueryRow(ctx, "SELECT state FROM leases WHERE id = $1", l.ID).Scan(&state); err != nil || state != string(mayfly.LeaseRevoked) {
			t.Errorf("after the other replica's revocation the lease is %q (%v); want revoked", state, err)
		}
	}
	_, a, err := w.issue(t)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	w.expectRoleRemoved(t, a, "5 s later")
}

// expectRoleRemoved waits up to 5 s for the role of a lease revoked
// through another replica to be gone, and checks that its credential is
// refused.
func (w *oneCommitWorld) expectRoleRemoved(t *testing.T, a *broker.Activation, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(rolesUnder(t, w.prefix)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the role of a lease revoked through another replica while it was committed is still there %s: %v", when, rolesUnder(t, w.prefix))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := login(ctxT(t), "pg", a.Credential); err == nil {
		t.Error("the credential of the revoked lease logs in")
	}
}

// request records alice's request without activating it (approved by
// policy at once).
func (w *oneCommitWorld) request(t *testing.T) *mayfly.Request {
	t.Helper()
	r, _, err := w.b.CreateRequest(ctxT(t), w.alice, broker.RequestInput{Target: "pg", Grant: "read", Duration: 30 * time.Minute, Reason: "INC-8"})
	if err != nil || r.State != mayfly.RequestApproved || r.LeaseID != "" {
		t.Fatalf("request = %+v, %v; want approved, not yet activated", r, err)
	}
	return r
}

// TestOneCommitActivate: activating a request recorded earlier (the two-call
// path: request, then credentials) stages the role while one transaction
// takes the request, records the lease with its intent and its activation,
// and commits before the role is; the credential logs in, a wrong password
// does not, a second activation is refused, and after revocation the
// credential is refused.
func TestOneCommitActivate(t *testing.T) {
	w := newOneCommitWorld(t)
	ctx := ctxT(t)
	r := w.request(t)
	w.afterCommit = func(l *mayfly.Lease) {
		if l.State != mayfly.LeaseActive {
			t.Errorf("lease after the store's commit is %s; want active (recorded with its intent)", l.State)
		}
		if n := len(rolesUnder(t, w.prefix)); n != 0 {
			t.Errorf("%d role(s) exist before the store's commit was followed by the target's", n)
		}
	}
	a, err := w.b.Activate(ctx, w.alice, r.ID, broker.ActivateOptions{})
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	w.afterCommit = nil
	if a.Lease.State != mayfly.LeaseActive || w.b.HashSecret(a.Credential.Password) != a.Lease.SecretHMAC {
		t.Fatalf("activation = %+v; want an active lease with its secret's hash", a.Lease)
	}

	// The request's update, the lease and its two events: one transaction,
	// not the request's.
	var reqTx, createTx string
	if err := w.store.QueryRow(ctx, `SELECT r.xmin::text, e.xmin::text FROM requests r JOIN audit_events e
		ON e.request_id = r.id AND e.action = 'request.create' WHERE r.id = $1`, r.ID).Scan(&reqTx, &createTx); err != nil {
		t.Fatal(err)
	}
	if reqTx == createTx {
		t.Errorf("the request row was not written again by the activation")
	}
	rows, err := w.store.Query(ctx, `SELECT xmin::text || ' ' || action FROM audit_events WHERE lease_id = $1
		UNION ALL SELECT xmin::text || ' lease' FROM leases WHERE id = $1 ORDER BY 1`, a.Lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{reqTx + " lease", reqTx + " lease.activate", reqTx + " lease.intent"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("the activation wrote %v; want %v (one transaction with the request's update)", got, want)
	}

	w.expectLogin(t, a)
	if again, err := w.b.Activate(ctx, w.alice, r.ID, broker.ActivateOptions{}); mayfly.ErrorCode(err) != mayfly.ECONFLICT || !strings.Contains(err.Error(), "already issued") {
		t.Fatalf("second activation = %+v, %v; want refused as already issued", again, err)
	}
	if n := len(rolesUnder(t, w.prefix)); n != 1 {
		t.Fatalf("%d roles after a refused second activation; want 1", n)
	}
	w.revokeAndExpectGone(t, a)
	if res, err := audit.Verify(ctx, w.st, 0, 0); err != nil || !res.OK {
		t.Errorf("audit chain: %+v, %v", res, err)
	}
}

// TestOneCommitActivateRace: two activations of one request at once, on
// two replicas, each staging a role of its own: exactly one returns a
// credential, the other is refused as already issued, and only the
// winner's role is left on the target.
func TestOneCommitActivateRace(t *testing.T) {
	w := newOneCommitWorld(t)
	other := w.replica()
	ctx := ctxT(t)
	for round := 0; round < 5; round++ {
		r := w.request(t)
		type result struct {
			a   *broker.Activation
			err error
		}
		res := make(chan result, 2)
		start := make(chan struct{})
		for _, b := range []*broker.Broker{w.b, other} {
			go func() {
				<-start
				a, err := b.Activate(ctx, w.alice, r.ID, broker.ActivateOptions{})
				res <- result{a, err}
			}()
		}
		close(start)
		var won *broker.Activation
		for range 2 {
			x := <-res
			switch {
			case x.err == nil && won == nil:
				won = x.a
			case x.err == nil:
				t.Fatalf("round %d: both activations of one request returned a credential", round)
			case mayfly.ErrorCode(x.err) != mayfly.ECONFLICT:
				t.Fatalf("round %d: losing activation: %v; want a conflict", round, x.err)
			}
		}
		if won == nil {
			t.Fatalf("round %d: neither activation returned a credential", round)
		}
		roles := rolesUnder(t, w.prefix)
		if len(roles) != 1 || roles[0] != won.Credential.Username {
			t.Fatalf("round %d: roles %v; want only the winner's %s", round, roles, won.Credential.Username)
		}
		w.expectLogin(t, won)
		w.revokeAndExpectGone(t, won)
	}
}

// TestStagedActivateSQLite: on the SQLite store, activating a request
// recorded earlier stages the role while the intent is recorded (not yet
// active, and no role visible, when the intent is committed), then commits
// it and records the activation; the credential logs in, a wrong password
// does not, a second activation is refused, and after revocation the
// credential is refused. A suspension recorded between the intent and the
// target's commit wins: no credential, no role.
func TestStagedActivateSQLite(t *testing.T) {
	w := newSQLiteStagedWorld(t)
	ctx := ctxT(t)
	r := w.request(t)
	intents := 0
	w.afterCommit = func(l *mayfly.Lease) {
		intents++
		if l.State != mayfly.LeaseProvisioning {
			t.Errorf("lease after the intent's commit is %s; want provisioning", l.State)
		}
		if n := len(rolesUnder(t, w.prefix)); n != 0 {
			t.Errorf("%d role(s) visible right after the intent's commit", n)
		}
		// Staged: the creation is in a transaction open on the target.
		deadline := time.Now().Add(2 * time.Second)
		for {
			var n int
			if err := pgAdmin(t).QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_stat_activity
				WHERE xact_start IS NOT NULL AND strpos(query, 'CREATE ROLE') > 0 AND strpos(query, $1) > 0`, l.Username).Scan(&n); err != nil {
				t.Error(err)
				return
			}
			if n == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Error("no transaction open on the target creates the role while the intent is recorded: the creation was not staged")
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	a, err := w.b.Activate(ctx, w.alice, r.ID, broker.ActivateOptions{})
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	if intents != 1 {
		t.Fatalf("the intent hook ran %d times; want 1", intents)
	}
	w.afterCommit = nil
	if a.Lease.State != mayfly.LeaseActive || w.b.HashSecret(a.Credential.Password) != a.Lease.SecretHMAC {
		t.Fatalf("activation = %+v; want an active lease with its secret's hash", a.Lease)
	}
	w.expectLogin(t, a)
	if _, err := w.b.Activate(ctx, w.alice, r.ID, broker.ActivateOptions{}); mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Fatalf("second activation: %v; want a conflict", err)
	}
	w.revokeAndExpectGone(t, a)

	// A suspension between the intent and the target's commit.
	r = w.request(t)
	w.afterCommit = func(l *mayfly.Lease) {
		if _, _, err := w.b.SetUserStatus(ctx, w.admin, "alice", broker.UserSuspended, "left"); err != nil {
			t.Errorf("suspend: %v", err)
		}
	}
	if a, err := w.b.Activate(ctx, w.alice, r.ID, broker.ActivateOptions{}); err == nil {
		t.Errorf("activation across a suspension returned %+v; want refused", a.Credential.Username)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(rolesUnder(t, w.prefix)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the role of an activation overtaken by a suspension is still there: %v", rolesUnder(t, w.prefix))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if res, err := audit.Verify(ctx, w.st, 0, 0); err != nil || !res.OK {
		t.Errorf("audit chain: %+v, %v", res, err)
	}
}
