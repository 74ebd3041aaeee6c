package broker

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/policy"
	pgstore "github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// gateConnector is an in-memory target whose Provision and Revoke can be
// held at a gate, so a test decides exactly how an activation interleaves
// with a suspension, an end or the scheduler. The accounts map is what
// "exists on the target".
type gateConnector struct {
	mu        sync.Mutex
	accounts  map[string]bool
	provGate  chan struct{} // when not nil, Provision waits on it
	provIn    chan string   // receives the username when Provision is entered
	provErr   error         // returned by Provision after the gate
	revGate   chan struct{} // when not nil, Revoke waits on it (or ctx)
	revIn     chan string
	revErr    error
	revokes   int
	createdBy map[string]string
	rename    string // when set, Provision creates this account instead
}

func newGateConnector() *gateConnector {
	return &gateConnector{accounts: map[string]bool{}, createdBy: map[string]string{}}
}

func (g *gateConnector) Provision(ctx context.Context, req mayfly.ProvisionRequest) (mayfly.ProvisionResponse, error) {
	g.mu.Lock()
	gate, in, perr := g.provGate, g.provIn, g.provErr
	g.mu.Unlock()
	if in != nil {
		in <- req.Username
	}
	if gate != nil {
		<-gate
	}
	if perr != nil {
		return mayfly.ProvisionResponse{}, perr
	}
	g.mu.Lock()
	name, account := req.Username, ""
	if g.rename != "" {
		name, account = g.rename, g.rename
	}
	g.accounts[name] = true
	g.createdBy[name] = req.LeaseID
	g.mu.Unlock()
	return mayfly.ProvisionResponse{Credential: mayfly.Credential{Username: name, Password: "pw-" + req.LeaseID}, Account: account}, nil
}

func (g *gateConnector) Revoke(ctx context.Context, req mayfly.RevokeRequest) error {
	g.mu.Lock()
	gate, in := g.revGate, g.revIn
	g.mu.Unlock()
	if in != nil {
		in <- req.Username
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.revokes++
	if g.revErr != nil {
		return g.revErr
	}
	delete(g.accounts, req.Username)
	return nil
}

func (g *gateConnector) Accounts(ctx context.Context, req mayfly.AccountsRequest) ([]mayfly.Account, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []mayfly.Account
	for name := range g.accounts {
		out = append(out, mayfly.Account{Name: name})
	}
	return out, nil
}

func (g *gateConnector) Check(ctx context.Context) error { return nil }
func (g *gateConnector) Close() error                    { return nil }

func (g *gateConnector) exists(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.accounts[name]
}

func (g *gateConnector) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.accounts)
}

type casEnv struct {
	b     *Broker
	conn  *gateConnector
	clk   *fakeClock
	alice Caller
	bob   Caller
	admin Caller
}

var casPolicies = []policy.Policy{
	{Name: "auto", Groups: []string{"eng"}, Targets: []string{"t"}, Grants: []string{"ro"}, MaxDuration: time.Hour},
	{Name: "approve", Groups: []string{"eng"}, Targets: []string{"t"}, Grants: []string{"rw"}, MaxDuration: time.Hour, Approvals: 1, ApproverGroups: []string{"dba"}},
}

func casConfig(t *testing.T, policies []policy.Policy, users map[string][]string) *Config {
	t.Helper()
	set, err := policy.Compile(policies, []policy.TargetInfo{{Name: "t", Kind: "postgres", Grants: []string{"ro", "rw"}}})
	if err != nil {
		t.Fatal(err)
	}
	tgt := mayfly.Target{Name: "t", Kind: mayfly.KindPostgres, Prefix: "mf_", Grants: map[string]mayfly.Grant{"ro": {Name: "ro"}, "rw": {Name: "rw"}}}
	var order []string
	for name := range users {
		order = append(order, name)
	}
	return &Config{Targets: map[string]mayfly.Target{"t": tgt}, Policies: set, Users: users, UserOrder: order}
}

func newCASEnv(t *testing.T) *casEnv {
	t.Helper()
	return newCASEnvOn(t, openSQLite(t))
}

// openSQLite opens a SQLite store in a temporary directory, closed when
// the test ends.
func openSQLite(t testing.TB) *sqlite.DB {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// casStores are the stores the races of an activation are tried on: on
// PostgreSQL the activation's compare-and-set is deferred, and its
// failure surfaces with the lock of the audit chain's head.
var casStores = []struct {
	name string
	env  func(t *testing.T) *casEnv
}{
	{"sqlite", newCASEnv},
	{"postgres", func(t *testing.T) *casEnv {
		st, err := pgstore.Open(context.Background(), pgtest.NewDatabase(t), 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return newCASEnvOn(t, st)
	}},
}

func newCASEnvOn(t *testing.T, st mayfly.Store) *casEnv {
	t.Helper()
	conn := newGateConnector()
	clk := &fakeClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	users := map[string][]string{"alice": {"eng"}, "bob": {"dba"}, "root": {"admin"}}
	b := New(casConfig(t, casPolicies, users), Options{
		Store: st, Clock: clk, Connectors: map[string]mayfly.Connector{"t": conn}, HMACKey: []byte("k"),
	})
	return &casEnv{b: b, conn: conn, clk: clk,
		alice: Caller{User: "alice", Groups: []string{"eng"}},
		bob:   Caller{User: "bob", Groups: []string{"dba"}},
		admin: Caller{User: "root", Groups: []string{"admin"}, Admin: true},
	}
}

// holdProvision makes the next Provision calls wait at a gate; the
// returned channel receives each username as a call enters.
func (e *casEnv) holdProvision() (entered chan string, release func()) {
	entered = make(chan string, 16)
	gate := make(chan struct{})
	e.conn.mu.Lock()
	e.conn.provGate, e.conn.provIn = gate, entered
	e.conn.mu.Unlock()
	var once sync.Once
	return entered, func() { once.Do(func() { close(gate) }) }
}

func (e *casEnv) lease(t *testing.T, id string) *mayfly.Lease {
	t.Helper()
	l, err := e.b.getLease(context.Background(), id)
	if err != nil {
		t.Fatalf("get lease %s: %v", id, err)
	}
	return l
}

func (e *casEnv) approvedRequest(t *testing.T) *mayfly.Request {
	t.Helper()
	r, _, err := e.b.CreateRequest(context.Background(), e.alice, RequestInput{Target: "t", Grant: "ro", Duration: 30 * time.Minute, Reason: "x"})
	if err != nil || r.State != mayfly.RequestApproved {
		t.Fatalf("request = %+v, %v; want approved", r, err)
	}
	return r
}

// activeLease requests and activates a lease for alice.
func (e *casEnv) activeLease(t *testing.T) *Activation {
	t.Helper()
	r := e.approvedRequest(t)
	a, err := e.b.Activate(context.Background(), e.alice, r.ID, ActivateOptions{})
	if err != nil {
		t.Fatalf("activate %s: %v", r.ID, err)
	}
	return a
}

type activation struct {
	a   *Activation
	err error
}

// activateHeld starts the activation of r and returns once its Provision
// is held at the gate, with the lease id recorded as provisioning.
func (e *casEnv) activateHeld(t *testing.T, r *mayfly.Request) (username, leaseID string, done <-chan activation, release func()) {
	t.Helper()
	entered, release := e.holdProvision()
	ch := make(chan activation, 1)
	go func() {
		a, err := e.b.Activate(context.Background(), e.alice, r.ID, ActivateOptions{})
		ch <- activation{a, err}
	}()
	select {
	case username = <-entered:
	case res := <-ch:
		t.Fatalf("activation returned before provisioning: %+v, %v", res.a, res.err)
	}
	got, err := e.b.GetRequest(context.Background(), e.admin, r.ID)
	if err != nil || got.LeaseID == "" {
		t.Fatalf("request after intent = %+v, %v; want a lease id", got, err)
	}
	if l := e.lease(t, got.LeaseID); l.State != mayfly.LeaseProvisioning {
		t.Fatalf("lease during provisioning is %s; want provisioning", l.State)
	}
	return username, got.LeaseID, ch, release
}

// A suspension that lands while the account is being created wins: the
// activation does not write its stale copy back, no credential is issued,
// and the account it made is removed.
func TestSuspendDuringActivation(t *testing.T) {
	for _, store := range casStores {
		t.Run(store.name, func(t *testing.T) { testSuspendDuringActivation(t, store.env(t)) })
	}
}

func testSuspendDuringActivation(t *testing.T, e *casEnv) {
	ctx := context.Background()
	r := e.approvedRequest(t)
	username, leaseID, done, release := e.activateHeld(t, r)

	n, _, err := e.b.SetUserStatus(ctx, e.admin, "alice", UserSuspended, "offboarding")
	if err != nil || n != 1 {
		t.Fatalf("SetUserStatus = %d, %v; want 1 lease ended", n, err)
	}
	release()
	res := <-done
	if res.err == nil || mayfly.ErrorCode(res.err) != mayfly.ECONFLICT {
		t.Fatalf("activation after suspension = %+v, %v; want a conflict and no credential", res.a, res.err)
	}
	if res.a != nil {
		t.Fatalf("activation issued a credential to a suspended user: %+v", res.a.Credential.Username)
	}
	l := e.lease(t, leaseID)
	if l.State != mayfly.LeaseRevoked || l.EndReason != mayfly.EndUserSuspended {
		t.Errorf("lease = %s/%s; want revoked/user_suspended", l.State, l.EndReason)
	}
	if e.conn.exists(username) {
		t.Errorf("account %s still exists on the target after the suspension", username)
	}
}

// A done (or an admin's revoke) racing an activation wins the same way,
// and is answered at once rather than after waiting for the activation.
func TestEndLeaseDuringActivation(t *testing.T) {
	for _, tc := range []struct {
		name      string
		endReason string
	}{{"done", mayfly.EndDone}, {"revoke", mayfly.EndRevoked}} {
		for _, store := range casStores {
			t.Run(tc.name+"/"+store.name, func(t *testing.T) {
				testEndLeaseDuringActivation(t, store.env(t), tc.endReason)
			})
		}
	}
}

func testEndLeaseDuringActivation(t *testing.T, e *casEnv, endReason string) {
	ctx := context.Background()
	r := e.approvedRequest(t)
	username, leaseID, done, release := e.activateHeld(t, r)

	caller := e.alice
	if endReason == mayfly.EndRevoked {
		caller = e.admin
	}
	l, err := e.b.EndLease(ctx, caller, leaseID, endReason, "")
	if err != nil {
		t.Fatalf("EndLease during provisioning = %v; want accepted", err)
	}
	if l.State != mayfly.LeaseRevoking || l.EndReason != endReason {
		t.Fatalf("lease after EndLease = %s/%s; want revoking/%s", l.State, l.EndReason, endReason)
	}
	release()
	if res := <-done; mayfly.ErrorCode(res.err) != mayfly.ECONFLICT || res.a != nil {
		t.Fatalf("activation after %s = %+v, %v; want a conflict and no credential", endReason, res.a, res.err)
	}
	l = e.lease(t, leaseID)
	if l.State != mayfly.LeaseRevoked || l.EndReason != endReason {
		t.Errorf("lease = %s/%s; want revoked/%s", l.State, l.EndReason, endReason)
	}
	if e.conn.exists(username) {
		t.Errorf("account %s still exists on the target", username)
	}
}

// A failed creation that lands after a suspension keeps the suspension's
// end reason, and never moves a lease that already ended back to revoking.
func TestProvisionFailedAfterEnd(t *testing.T) {
	e := newCASEnv(t)
	ctx := context.Background()
	r := e.approvedRequest(t)
	e.conn.provErr = errors.New("target said no")
	_, leaseID, done, release := e.activateHeld(t, r)
	if _, _, err := e.b.SetUserStatus(ctx, e.admin, "alice", UserSuspended, ""); err != nil {
		t.Fatal(err)
	}
	release()
	if res := <-done; res.err == nil {
		t.Fatalf("activation with a failing target succeeded")
	}
	l := e.lease(t, leaseID)
	if l.EndReason != mayfly.EndUserSuspended {
		t.Errorf("end reason = %s; want user_suspended kept", l.EndReason)
	}
	if l.State != mayfly.LeaseRevoking || l.DueAt.After(e.clk.Now()) {
		t.Errorf("lease = %s due %s; want revoking and due now (%s)", l.State, l.DueAt, e.clk.Now())
	}

	// A stale provisioning copy of a lease already revoked changes nothing.
	e.b.RevokeNow(ctx, l)
	if l = e.lease(t, leaseID); l.State != mayfly.LeaseRevoked {
		t.Fatalf("lease = %s; want revoked", l.State)
	}
	stale := *l
	stale.State, stale.EndReason = mayfly.LeaseProvisioning, ""
	e.b.provisionFailed(ctx, e.alice, &stale, errors.New("late failure"))
	if l = e.lease(t, leaseID); l.State != mayfly.LeaseRevoked || l.EndReason != mayfly.EndUserSuspended {
		t.Errorf("after a stale provisionFailed the lease is %s/%s; want revoked/user_suspended", l.State, l.EndReason)
	}
}

// The scheduler's outcome for an attempt that began on a provisioning lease
// (taken over at its deadline) is not recorded over the lease once it has
// become active: the account was created after the attempt.
func TestStaleRevocationOutcomeIgnored(t *testing.T) {
	e := newCASEnv(t)
	ctx := context.Background()
	a := e.activeLease(t)
	stale := *a.Lease
	stale.State = mayfly.LeaseProvisioning
	if err := e.b.store.Update(ctx, func(tx mayfly.Tx) error { return e.b.recordRevocations(tx, []outcome{{lease: &stale}}, nil) }); err != nil {
		t.Fatal(err)
	}
	if l := e.lease(t, a.Lease.ID); l.State != mayfly.LeaseActive {
		t.Errorf("lease after a stale revocation outcome = %s/%s; want active", l.State, l.EndReason)
	}
}

// An activation that starts after a suspension committed records no
// intent and creates nothing, whatever the caller's token said.
func TestActivateAfterSuspension(t *testing.T) {
	e := newCASEnv(t)
	ctx := context.Background()
	r := e.approvedRequest(t)
	// The request is left approved: suspend through the store only, as a
	// suspension committed by another replica would be seen.
	if err := e.b.store.Update(ctx, func(tx mayfly.Tx) error { return tx.SetUserStatus("alice", UserSuspended) }); err != nil {
		t.Fatal(err)
	}
	a, err := e.b.Activate(ctx, e.alice, r.ID, ActivateOptions{})
	if mayfly.ErrorCode(err) != mayfly.EFORBIDDEN || a != nil {
		t.Fatalf("Activate for a suspended user = %+v, %v; want forbidden", a, err)
	}
	if n := e.conn.count(); n != 0 {
		t.Errorf("%d accounts on the target; want none", n)
	}
	ls, err := e.b.ListLeases(ctx, e.admin, mayfly.LeaseFilter{Requester: "alice"})
	if err != nil || len(ls) != 0 {
		t.Errorf("leases of alice = %d, %v; want none recorded", len(ls), err)
	}
}

// Removing a user from the configuration ends their live leases
// (user_removed) and cancels their open requests.
func TestReconfigureEndsRemovedUsers(t *testing.T) {
	e := newCASEnv(t)
	ctx := context.Background()
	a := e.activeLease(t)
	pending, _, err := e.b.CreateRequest(ctx, e.alice, RequestInput{Target: "t", Grant: "rw", Duration: 30 * time.Minute, Reason: "x"})
	if err != nil || pending.State != mayfly.RequestPending {
		t.Fatalf("pending request = %+v, %v", pending, err)
	}
	n, err := e.b.Reconfigure(ctx, casConfig(t, casPolicies, map[string][]string{"bob": {"dba"}, "root": {"admin"}}))
	if err != nil || n != 1 {
		t.Fatalf("Reconfigure = %d, %v; want 1 lease ended", n, err)
	}
	l := e.lease(t, a.Lease.ID)
	if l.State != mayfly.LeaseRevoking || l.EndReason != mayfly.EndUserRemoved || l.DueAt.After(e.clk.Now()) {
		t.Errorf("lease = %s/%s due %s; want revoking/user_removed due now", l.State, l.EndReason, l.DueAt)
	}
	e.b.RevokeNow(ctx, l)
	if e.conn.exists(a.Lease.Username) {
		t.Errorf("account of a removed user still exists after its revocation")
	}
	got, err := e.b.GetRequest(ctx, e.admin, pending.ID)
	if err != nil || got.State != mayfly.RequestCancelled {
		t.Errorf("pending request of a removed user = %+v, %v; want cancelled", got, err)
	}
	// A reload that removes nobody ends nothing.
	if n, err := e.b.Reconfigure(ctx, e.b.Config()); err != nil || n != 0 {
		t.Errorf("Reconfigure without removals = %d, %v; want 0", n, err)
	}
}

// An approval does not outlive its policy or the requester's membership:
// activation decides the policy again.
func TestActivateRechecksPolicy(t *testing.T) {
	ctx := context.Background()
	approve := func(e *casEnv) *mayfly.Request {
		r, _, err := e.b.CreateRequest(ctx, e.alice, RequestInput{Target: "t", Grant: "rw", Duration: 30 * time.Minute, Reason: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if r, err = e.b.Approve(ctx, e.bob, r.ID, "ok"); err != nil || r.State != mayfly.RequestApproved {
			t.Fatalf("approve = %+v, %v", r, err)
		}
		return r
	}

	t.Run("policy removed", func(t *testing.T) {
		e := newCASEnv(t)
		r := approve(e)
		e.b.SetConfig(casConfig(t, casPolicies[:1], e.b.Config().Users))
		a, err := e.b.Activate(ctx, e.alice, r.ID, ActivateOptions{})
		if mayfly.ErrorCode(err) != mayfly.EFORBIDDEN || !strings.Contains(err.Error(), `"approve"`) {
			t.Fatalf("Activate after its policy was removed = %+v, %v; want forbidden naming the policy", a, err)
		}
		if e.conn.count() != 0 {
			t.Errorf("an account was created")
		}
	})
	t.Run("left the group", func(t *testing.T) {
		e := newCASEnv(t)
		r := approve(e)
		a, err := e.b.Activate(ctx, Caller{User: "alice", Groups: []string{"sales"}}, r.ID, ActivateOptions{})
		if mayfly.ErrorCode(err) != mayfly.EFORBIDDEN {
			t.Fatalf("Activate by a requester no longer in the policy's groups = %+v, %v; want forbidden", a, err)
		}
	})
	t.Run("still allowed", func(t *testing.T) {
		e := newCASEnv(t)
		r := approve(e)
		if _, err := e.b.Activate(ctx, e.alice, r.ID, ActivateOptions{}); err != nil {
			t.Fatalf("Activate under an unchanged policy = %v", err)
		}
	})
}

// A revocation started by an HTTP call finishes even when the client goes
// away mid-way.
func TestEndLeaseDetachedFromCaller(t *testing.T) {
	e := newCASEnv(t)
	a := e.activeLease(t)
	entered := make(chan string, 1)
	gate := make(chan struct{})
	e.conn.mu.Lock()
	e.conn.revGate, e.conn.revIn = gate, entered
	e.conn.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.b.EndLease(ctx, e.alice, a.Lease.ID, mayfly.EndDone, "")
		done <- err
	}()
	<-entered
	cancel() // the client disconnects
	close(gate)
	<-done
	l := e.lease(t, a.Lease.ID)
	if l.State != mayfly.LeaseRevoked || l.RevokeAttempts != 0 {
		t.Errorf("lease = %s with %d failed attempts (%s); want revoked at the first attempt", l.State, l.RevokeAttempts, l.LastError)
	}
	if e.conn.exists(a.Lease.Username) {
		t.Errorf("account still exists")
	}
}

// revokeFailures returns the lease.revoke_failed events of lease id.
func (e *casEnv) revokeFailures(t *testing.T, id string) []*mayfly.AuditEvent {
	t.Helper()
	var events []*mayfly.AuditEvent
	if err := e.b.store.View(context.Background(), func(tx mayfly.Tx) error {
		var err error
		events, err = tx.ListAudit(mayfly.AuditFilter{LeaseID: id, Action: "lease.revoke_failed"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return events
}

// A revocation that keeps failing is counted on the lease at every attempt
// but audited at a bounded rate.
func TestFailingRevocationAuditedAtBoundedRate(t *testing.T) {
	e := newCASEnv(t)
	ctx := context.Background()
	a := e.activeLease(t)
	e.conn.revErr = errors.New("connection refused")
	if _, err := e.b.EndLease(ctx, e.alice, a.Lease.ID, mayfly.EndDone, ""); err != nil {
		t.Fatal(err)
	}
	const attempts = 40
	for i := 1; i < attempts; i++ {
		e.b.RevokeNow(ctx, e.lease(t, a.Lease.ID))
	}
	l := e.lease(t, a.Lease.ID)
	if l.RevokeAttempts != attempts || l.LastError == "" {
		t.Fatalf("lease counts %d attempts (%q); want %d", l.RevokeAttempts, l.LastError, attempts)
	}
	events := e.revokeFailures(t, a.Lease.ID)
	// Attempts 1, 2, 3, 4, 8, 16, 32.
	if got, want := len(events), 7; got != want {
		t.Errorf("%d lease.revoke_failed events for %d attempts; want %d", got, attempts, want)
	}
	// A different error is audited at once.
	e.conn.revErr = errors.New("permission denied")
	e.b.RevokeNow(ctx, l)
	events = e.revokeFailures(t, a.Lease.ID)
	if last := events[len(events)-1]; !strings.Contains(last.Reason, "permission denied") {
		t.Errorf("last audited failure = %q; want the new error", last.Reason)
	}
}

// The account a connector reports it created is the one recorded on the
// lease and the one revoked.
func TestConnectorAccountIsRecorded(t *testing.T) {
	e := newCASEnv(t)
	ctx := context.Background()
	e.conn.rename = "mf_named_by_target"
	a := e.activeLease(t)
	if a.Lease.Username != e.conn.rename || a.Credential.Username != e.conn.rename {
		t.Fatalf("activation recorded %q, credential %q; want %q", a.Lease.Username, a.Credential.Username, e.conn.rename)
	}
	if l := e.lease(t, a.Lease.ID); l.Username != e.conn.rename {
		t.Fatalf("stored lease username = %q; want %q", l.Username, e.conn.rename)
	}
	if _, err := e.b.EndLease(ctx, e.alice, a.Lease.ID, mayfly.EndDone, ""); err != nil {
		t.Fatal(err)
	}
	if e.conn.exists(e.conn.rename) {
		t.Errorf("the account the target created survived the end of its lease")
	}
}

// Ending a lease on a target the scheduler found not answering does not
// wait on the target: the lease is marked revoking with the reason, and the
// scheduler retries it.
func TestEndLeaseOnDownTargetDoesNotWait(t *testing.T) {
	e := newCASEnv(t)
	a := e.activeLease(t)
	entered := make(chan string, 1)
	e.conn.mu.Lock()
	e.conn.revGate, e.conn.revIn = make(chan struct{}), entered // a Revoke would hang
	e.conn.mu.Unlock()
	e.b.setTargetDown("t", true, "i/o timeout")

	l, err := e.b.EndLease(context.Background(), e.alice, a.Lease.ID, mayfly.EndDone, "")
	if err != nil {
		t.Fatal(err)
	}
	if l.State != mayfly.LeaseRevoking || l.EndReason != mayfly.EndDone || !strings.Contains(l.LastError, "not answering") {
		t.Errorf("lease = %s/%s (%q); want revoking/done saying the target is not answering", l.State, l.EndReason, l.LastError)
	}
	select {
	case <-entered:
		t.Errorf("EndLease called the target the scheduler found down")
	default:
	}
	if l.DueAt.After(e.clk.Now()) {
		t.Errorf("lease due %s; want due now for the scheduler", l.DueAt)
	}
}

// TestListLeasesOfAnotherUserRefused checks that a non-admin asking for
// another user's leases is refused, not silently shown their own.
func TestListLeasesOfAnotherUserRefused(t *testing.T) {
	e := newCASEnv(t)
	ctx := context.Background()
	_, err := e.b.ListLeases(ctx, e.alice, mayfly.LeaseFilter{Requester: "bob"})
	if mayfly.ErrorCode(err) != mayfly.EFORBIDDEN || !strings.Contains(mayfly.ErrorMessage(err), "only admins") {
		t.Fatalf("alice listing bob's leases: %v; want forbidden, saying only admins may", err)
	}
	if _, err := e.b.ListLeases(ctx, e.alice, mayfly.LeaseFilter{Requester: "alice"}); err != nil {
		t.Errorf("alice listing her own leases by name: %v", err)
	}
	if _, err := e.b.ListLeases(ctx, e.admin, mayfly.LeaseFilter{Requester: "bob"}); err != nil {
		t.Errorf("an admin listing bob's leases: %v", err)
	}
}

// A one-call issue records its lease active before the target commits the
// account (commitRecorded). A reconciliation whose listing of accounts
// falls in that moment must not take the lease for one whose account
// vanished: it waits for this replica's commit in flight and looks again.
func TestReconcileLooksAgainForAccountsBeingCommitted(t *testing.T) {
	e := newCASEnv(t)
	ctx := context.Background()
	a := e.activeLease(t)
	name := a.Lease.Username
	e.clk.t = e.clk.t.Add(time.Second) // the accounts are listed after the lease was made
	// As while the account is being committed: absent, its commit held.
	e.conn.mu.Lock()
	delete(e.conn.accounts, name)
	e.conn.mu.Unlock()
	release := e.b.holdRevocations(a.Lease.ID)
	done := make(chan []ReconcileResult, 1)
	go func() {
		res, err := e.b.Reconcile(ctx, e.admin, "t")
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	select {
	case res := <-done:
		release()
		t.Fatalf("reconcile = %+v while the account's commit was in flight; want it to wait for the commit", res)
	case <-time.After(300 * time.Millisecond):
	}
	e.conn.mu.Lock()
	e.conn.accounts[name] = true // committed
	e.conn.mu.Unlock()
	release()
	res := <-done
	if len(res) != 1 || len(res[0].LeasesMissing) != 0 {
		t.Fatalf("reconcile = %+v; want no lease missing: its account was committed meanwhile", res)
	}
	if l := e.lease(t, a.Lease.ID); l.State != mayfly.LeaseActive {
		t.Fatalf("lease is %s; want active", l.State)
	}
	// An account that really vanished is still found missing.
	e.conn.mu.Lock()
	delete(e.conn.accounts, name)
	e.conn.mu.Unlock()
	res, err := e.b.Reconcile(ctx, e.admin, "t")
	if err != nil || len(res) != 1 || len(res[0].LeasesMissing) != 1 || res[0].LeasesMissing[0] != a.Lease.ID {
		t.Fatalf("reconcile = %+v, %v; want lease %s missing", res, err, a.Lease.ID)
	}
}

// A target's error text is recorded whatever bytes it holds: NUL and
// bytes that are not UTF-8 (a script's stderr, a hostile name echoed back)
// become U+FFFD, so PostgreSQL's text columns take the failure, the lease
// counts it, and the audit chain still verifies.
func TestFailingRevocationWithBinaryError(t *testing.T) {
	for _, s := range casStores {
		t.Run(s.name, func(t *testing.T) {
			e := s.env(t)
			ctx := context.Background()
			a := e.activeLease(t)
			e.conn.revErr = errors.New("drop failed: \x00\xff\xfe \"mf_\x1b[31m\" password=hunter2")
			if _, err := e.b.EndLease(ctx, e.alice, a.Lease.ID, mayfly.EndDone, ""); err != nil {
				t.Fatal(err)
			}
			l := e.lease(t, a.Lease.ID)
			if l.RevokeAttempts != 1 {
				t.Fatalf("lease counts %d attempts (%q); want 1", l.RevokeAttempts, l.LastError)
			}
			if want := "drop failed: \ufffd\ufffd\ufffd \"mf_\ufffd[31m\" password=[REDACTED]"; l.LastError != want {
				t.Errorf("last error = %q; want %q", l.LastError, want)
			}
			events := e.revokeFailures(t, a.Lease.ID)
			if len(events) != 1 || events[0].Reason != l.LastError {
				t.Fatalf("revoke_failed events = %+v; want one with the lease's error", events)
			}
			res, err := audit.Verify(ctx, e.b.store, 0, 0)
			if err != nil || !res.OK {
				t.Errorf("audit.Verify = %+v, %v; want an intact chain", res, err)
			}
			e.conn.revErr = nil
			e.b.RevokeNow(ctx, e.lease(t, a.Lease.ID))
			if e.conn.exists(a.Lease.Username) {
				t.Errorf("account still exists after the target recovered")
			}
		})
	}
}
