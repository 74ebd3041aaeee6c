package postgres_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// roleVisible reports whether the admin sees role name.
func roleVisible(t *testing.T, conn *pgx.Conn, name string) bool {
	t.Helper()
	var n int
	if err := conn.QueryRow(ctxT(t), "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func prepare(t *testing.T, c *postgres.Connector, name, lease string, g mayfly.Grant) mayfly.PreparedProvision {
	t.Helper()
	p, err := c.PrepareProvision(ctxT(t), mayfly.ProvisionRequest{LeaseID: lease, Username: name, Grant: g, ExpiresAt: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatalf("PrepareProvision(%q) = %v", name, err)
	}
	// Until it ends, the creation holds a pooled connection, which closing
	// the connector waits for. Abort after an end does nothing.
	t.Cleanup(p.Abort)
	return p
}

// TestPrepareProvision proves the two-phase creation: the role is invisible
// and cannot log in until Commit, works after it, and is gone after Abort.
func TestPrepareProvision(t *testing.T) {
	conn := admin(t, "")
	setupSchema(t, conn)
	prefix := testPrefix()
	c := newConnector(t, prefix)

	name := prefix + "staged"
	p := prepare(t, c, name, "lse_s", readGrant)
	res, err := p.Wait()
	if err != nil {
		t.Fatalf("Wait = %v", err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{LeaseID: "lse_s", Username: name}) })
	cred := res.Credential
	if cred.Username != name || cred.Password == "" {
		t.Fatalf("Wait credential = %+v; want user %s with a password", cred, name)
	}
	// Known before the outcome, for an activation recorded with the intent.
	if pc, ok := p.(mayfly.PreparedCredential); !ok || pc.Credential().Password != cred.Password || pc.Credential().Username != name {
		t.Errorf("the staged creation does not tell the credential Wait returns")
	}
	// Created but not committed: nobody sees it, and it cannot log in.
	if roleVisible(t, conn, name) {
		t.Errorf("role %s is visible before Commit", name)
	}
	if s, err := connect(ctxT(t), cred); err == nil {
		s.Close(context.Background())
		t.Errorf("login before Commit succeeded")
	}
	if err := p.Commit()(); err != nil {
		t.Fatalf("Commit = %v", err)
	}
	if !roleVisible(t, conn, name) {
		t.Fatalf("role %s missing after Commit", name)
	}
	s, err := connect(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login after Commit: %v", err)
	}
	sess := &session{s}
	if err := sess.Allowed(ctxT(t)); err != nil {
		t.Errorf("read with the grant: %v", err)
	}
	if err := sess.Forbidden(ctxT(t)); err == nil {
		t.Errorf("write beyond the grant succeeded")
	}
	sess.Close()
	wrong := cred
	wrong.Password += "x"
	if s, err := connect(ctxT(t), wrong); err == nil {
		s.Close(context.Background())
		t.Errorf("login with a wrong password succeeded")
	}

	// The connection went back to the pool in a usable state.
	other := prefix + "after"
	provisionT(t, c, other, "lse_after", readGrant, time.Now().Add(time.Minute))
	if !roleVisible(t, conn, other) {
		t.Errorf("Provision after a staged creation left no role")
	}
}

func TestPrepareProvisionAbort(t *testing.T) {
	conn := admin(t, "")
	prefix := testPrefix()
	c := newConnector(t, prefix)

	// Abort after Wait, and Abort without it.
	for _, wait := range []bool{true, false} {
		name := prefix + "aborted"
		p := prepare(t, c, name, "lse_a", readGrant)
		var cred mayfly.Credential
		if wait {
			res, err := p.Wait()
			if err != nil {
				t.Fatalf("Wait = %v", err)
			}
			cred = res.Credential
		}
		p.Abort()
		if roleVisible(t, conn, name) {
			t.Fatalf("role %s exists after Abort (wait %v)", name, wait)
		}
		if wait {
			if s, err := connect(ctxT(t), cred); err == nil {
				s.Close(context.Background())
				t.Errorf("login after Abort succeeded")
			}
		}
	}
	if got := names(t, c, prefix); len(got) != 0 {
		t.Errorf("after aborted creations Accounts() = %v; want none", got)
	}
}

// TestPrepareProvisionBrokerDies ends the staged transaction's session the
// way a dead broker would: the server rolls the creation back, and the
// commit, if it comes at all, fails.
func TestPrepareProvisionBrokerDies(t *testing.T) {
	conn := admin(t, "")
	prefix := testPrefix()
	c := newConnector(t, prefix)
	name := prefix + "orphan"
	p := prepare(t, c, name, "lse_d", readGrant)
	if _, err := p.Wait(); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	var n int
	if err := conn.QueryRow(ctxT(t), `SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity
		WHERE state = 'idle in transaction' AND query LIKE '%COMMENT ON ROLE "' || $1 || '"%'`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("terminated %d sessions holding the creation; want 1", n)
	}
	if err := p.Commit()(); err == nil {
		t.Errorf("Commit after the session died succeeded")
	}
	if roleVisible(t, conn, name) {
		t.Errorf("role %s exists although its creation was never committed", name)
	}
}

func TestPrepareProvisionExisting(t *testing.T) {
	conn := admin(t, "")
	prefix := testPrefix()
	c := newConnector(t, prefix)
	name := prefix + "twice"
	cred := provisionT(t, c, name, "lse_t", readGrant, time.Now().Add(time.Minute))
	p := prepare(t, c, name, "lse_t", readGrant)
	if _, err := p.Wait(); !errors.Is(err, mayfly.ErrNotStaged) {
		t.Fatalf("Wait over an existing role = %v; want ErrNotStaged", err)
	}
	p.Abort() // allowed after a failed Wait
	if !roleVisible(t, conn, name) {
		t.Fatalf("the existing role was removed")
	}
	s, err := connect(ctxT(t), cred)
	if err != nil {
		t.Fatalf("the existing role's credential stopped working: %v", err)
	}
	s.Close(context.Background())
}

func TestPrepareProvisionFailureLeavesNothing(t *testing.T) {
	prefix := testPrefix()
	c := newConnector(t, prefix)
	for _, g := range []mayfly.Grant{
		{Name: "missing-role", Roles: []string{"mayfly_pgt_no_such_role"}},
		{Name: "bad-statement", Roles: []string{"pg_read_all_data"}, Statements: []string{"GRANT SELECT ON mayfly_pgt_missing.t TO {{name}}"}},
	} {
		p := prepare(t, c, prefix+"bad", "lse_f", g)
		_, err := p.Wait()
		if err == nil {
			p.Commit()()
			t.Fatalf("Wait with grant %s succeeded", g.Name)
		}
		if g.Name == "missing-role" && mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Errorf("Wait with a missing grant role = %v (code %q); want code %q", err, mayfly.ErrorCode(err), mayfly.EINVALID)
		}
	}
	if got := names(t, c, prefix); len(got) != 0 {
		t.Errorf("after failed creations Accounts() = %v; want none", got)
	}
	// Hostile names are refused before anything is sent.
	if _, err := c.PrepareProvision(ctxT(t), mayfly.ProvisionRequest{LeaseID: "lse_h", Username: prefix + `x"; DROP ROLE postgres; --`, Grant: readGrant, ExpiresAt: time.Now().Add(time.Minute)}); mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("PrepareProvision with a hostile name = %v; want an %q error", err, mayfly.EINVALID)
	}
}

// TestPrepareProvisionStatements stages a grant with statements of its
// own (sent as separate extended-protocol statements, not as one simple
// query): the role is invisible until Commit and has the grant after it.
// A statement that tries to end the transaction early is refused by the
// server, and nothing is created.
func TestPrepareProvisionStatements(t *testing.T) {
	conn := admin(t, "")
	prefix := testPrefix()
	c := newConnector(t, prefix)
	g := mayfly.Grant{Name: "stmt", Statements: []string{"GRANT pg_read_all_data TO {{name}}"}}

	name := prefix + "stmt"
	p := prepare(t, c, name, "lse_st", g)
	res, err := p.Wait()
	if err != nil {
		t.Fatalf("Wait = %v", err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{LeaseID: "lse_st", Username: name}) })
	if roleVisible(t, conn, name) {
		t.Errorf("role %s is visible before Commit", name)
	}
	if err := p.Commit()(); err != nil {
		t.Fatalf("Commit = %v", err)
	}
	s, err := connect(ctxT(t), res.Credential)
	if err != nil {
		t.Fatalf("login after Commit: %v", err)
	}
	sess := &session{s}
	if err := sess.Allowed(ctxT(t)); err != nil {
		t.Errorf("read with the statement's grant: %v", err)
	}
	sess.Close()

	// A statement that would end the transaction early is refused before
	// anything is sent; one with two commands is refused by the server.
	for _, stmt := range []string{"COMMIT", "end", "-- comment\nROLLBACK", "GRANT pg_read_all_data TO {{name}}; COMMIT"} {
		name := prefix + "escape"
		p, err := c.PrepareProvision(ctxT(t), mayfly.ProvisionRequest{LeaseID: "lse_esc", Username: name,
			Grant: mayfly.Grant{Name: "escape", Statements: []string{stmt}}, ExpiresAt: time.Now().Add(time.Minute)})
		if err == nil {
			if _, err = p.Wait(); err == nil {
				p.Commit()()
			}
			p.Abort()
		}
		if err == nil {
			t.Errorf("statement %q: creation staged and committed", stmt)
		}
		if roleVisible(t, conn, name) {
			c.Revoke(context.Background(), mayfly.RevokeRequest{LeaseID: "lse_esc", Username: name})
			t.Errorf("statement %q committed the role before its intent", stmt)
		}
	}
}

// TestCreationAfterServerEndedConnections: the server ends the
// connector's pooled connections (as its restart, or pg_terminate_backend,
// does), and the creations that follow at once, staged and direct, run on
// new connections instead of failing on the dead ones; the role logs in.
func TestCreationAfterServerEndedConnections(t *testing.T) {
	conn := admin(t, "")
	prefix := testPrefix()
	app := "mayfly_test_" + randHex(6)
	u, err := url.Parse(testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	c, err := postgres.New(mayfly.Target{Name: "pgtest", Kind: mayfly.KindPostgres, Prefix: prefix, DSN: u.String(), Grants: map[string]mayfly.Grant{"read": readGrant}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	provisionT(t, c, prefix+"before", "lse_before", readGrant, time.Now().Add(time.Minute))

	var ended int
	if err := conn.QueryRow(ctxT(t), "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&ended); err != nil || ended == 0 {
		t.Fatalf("terminate the connector's connections: %d ended, %v", ended, err)
	}
	time.Sleep(50 * time.Millisecond) // the server's FATAL on the wire

	name := prefix + "staged"
	p := prepare(t, c, name, "lse_staged", readGrant)
	res, err := p.Wait()
	if err != nil {
		t.Fatalf("staged creation after the server ended the pool's connections: %v", err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{LeaseID: "lse_staged", Username: name}) })
	if err := p.Commit()(); err != nil {
		t.Fatalf("Commit = %v", err)
	}
	s, err := connect(ctxT(t), res.Credential)
	if err != nil {
		t.Fatalf("login with the issued credential: %v", err)
	}
	s.Close(context.Background())
	provisionT(t, c, prefix+"direct", "lse_direct", readGrant, time.Now().Add(time.Minute))
}
