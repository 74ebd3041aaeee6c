package ssh

import (
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/connectortest"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// certTarget is a certificate-mode target for srv.
func certTarget(srv *testServer, prefix string) mayfly.Target {
	return mayfly.Target{
		Name: "certs", Kind: mayfly.KindSSH, Prefix: prefix, Address: srv.Addr, KRLFile: srv.KRLFile,
		Grants: map[string]mayfly.Grant{"login": {Principals: []string{testPrincipal}}},
	}
}

// hostTarget is a host-user target for srv, reached as root.
func hostTarget(srv *testServer, prefix string) mayfly.Target {
	return mayfly.Target{
		Name: "hosts", Kind: mayfly.KindSSH, Prefix: prefix, Address: srv.Addr, KRLFile: srv.KRLFile,
		AdminUser: "root", AdminKeyFile: srv.AdminKeyFile, HostKey: srv.HostKey,
		Grants: map[string]mayfly.Grant{"shell": {HostUser: true}},
	}
}

func newConnector(t *testing.T, target mayfly.Target, ca *CA, stateDir string) *Connector {
	t.Helper()
	c, err := New(target, ca, stateDir, func(string) string { return "" })
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// otherCASigned re-signs cred's certificate with another authority.
func otherCASigned(t *testing.T, other *CA, cred mayfly.Credential) mayfly.Credential {
	t.Helper()
	pub, _, _, _, err := gossh.ParseAuthorizedKey([]byte(cred.Certificate))
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	cert := pub.(*gossh.Certificate)
	forged, err := other.Sign(CertRequest{
		Key: cert.Key, KeyID: cert.KeyId, Principals: cert.ValidPrincipals,
		ValidAfter: time.Unix(int64(cert.ValidAfter), 0), ValidBefore: time.Unix(int64(cert.ValidBefore), 0),
		Extensions: cert.Extensions, CriticalOptions: cert.CriticalOptions,
	})
	if err != nil {
		t.Fatalf("sign with the other CA: %v", err)
	}
	cred.Certificate = authorizedLine(forged)
	return cred
}

func harness(t *testing.T, srv *testServer, c *Connector, prefix string, grant mayfly.Grant) connectortest.Harness {
	other := sharedOtherCA(t)
	return connectortest.Harness{
		Connector:  c,
		Prefix:     prefix,
		MaxNameLen: maxNameLen,
		Grant:      grant,
		Login: func(ctx context.Context, cred mayfly.Credential) (connectortest.Session, error) {
			cl, err := srv.login(ctx, cred, nil)
			if err != nil {
				return nil, err
			}
			return &session{c: cl, user: cred.Username, forwardTo: srv.Addr}, nil
		},
		Tamper: func(cred mayfly.Credential) mayfly.Credential { return otherCASigned(t, other, cred) },
		HostileGrants: []mayfly.Grant{
			{Name: "h0", HostUser: true, HostGroups: []string{"x; useradd " + prefix + "pwned"}},
			{Name: "h1", HostUser: true, HostGroups: []string{"$(useradd " + prefix + "pwned)"}},
			{Name: "h2", Principals: []string{"root\n" + prefix + "pwned"}},
			{Name: "h3", Principals: []string{"a'b"}},
			{Name: "h4", HostUser: true, ForceCommand: "true\nuseradd " + prefix + "pwned"},
			{Name: "h5", HostUser: true, SourceAddress: "127.0.0.1;useradd " + prefix + "pwned"},
			{Name: "h6", HostUser: true, Extensions: []string{"permit-pty;useradd"}},
			{Name: "h7", HostUser: true, Roles: []string{"x"}},
			// Accepted: the command is a certificate option sshd runs in
			// place of the user's, never something Mayfly runs.
			{Name: "h8", Principals: grant.Principals, HostUser: grant.HostUser, ForceCommand: `echo 'a"b' $(id) ; useradd ` + prefix + "pwned"},
		},
	}
}

// TestConformanceHostUsers runs the shared suite with ephemeral host users:
// revocation kills the user's sessions and deletes the user.
func TestConformanceHostUsers(t *testing.T) {
	ca := sharedCA(t)
	srv := startSSHD(t, ca)
	const prefix = "mf_sst_"
	c := newMarkedConnector(t, hostTarget(srv, prefix), ca, t.TempDir(), "this installation's key")
	h := harness(t, srv, c, prefix, mayfly.Grant{Name: "shell", HostUser: true})
	h.TerminatesSessions = true
	h.ReportsActivity = true
	h.Marks = true
	h.Other = newMarkedConnector(t, hostTarget(srv, prefix), ca, t.TempDir(), "another installation's key")
	h.CreateByHand = createHostUserByHand
	connectortest.Run(t, h)
}

// TestConformanceCertificates runs the shared suite in certificate-only
// mode. Revocation refuses new logins through the revocation list but
// cannot end a connection already open, and the target reports no
// activity, so those checks do not apply.
func TestConformanceCertificates(t *testing.T) {
	ca := sharedCA(t)
	srv := startSSHD(t, ca)
	const prefix = "mf_ssc_"
	c := newConnector(t, certTarget(srv, prefix), ca, t.TempDir())
	h := harness(t, srv, c, prefix, mayfly.Grant{Name: "login", Principals: []string{testPrincipal}})
	connectortest.Run(t, h)
}

func provisionT(t *testing.T, c *Connector, req mayfly.ProvisionRequest) mayfly.Credential {
	t.Helper()
	res, err := c.Provision(testCtx(t), req)
	if err != nil {
		t.Fatalf("Provision(%s) = %v", req.Username, err)
	}
	return res.Credential
}

func mustLogin(t *testing.T, srv *testServer, cred mayfly.Credential, key gossh.Signer) {
	t.Helper()
	cl, err := srv.login(testCtx(t), cred, key)
	if err != nil {
		t.Fatalf("login as %s: %v", cred.Username, err)
	}
	defer cl.Close()
	out, err := output(testCtx(t), cl, "id -un")
	if err != nil || out != cred.Username {
		t.Fatalf("id -un = %q, %v; want %q", out, err, cred.Username)
	}
}

// mustRefuse checks that sshd refuses cred, logging logWant as the reason.
func mustRefuse(t *testing.T, srv *testServer, cred mayfly.Credential, key gossh.Signer, why, logWant string) {
	t.Helper()
	before := len(srv.log.String())
	cl, err := srv.login(testCtx(t), cred, key)
	if err == nil {
		cl.Close()
		t.Fatalf("login %s succeeded; want refusal", why)
	}
	if !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("login %s: %v; want an authentication failure", why, err)
	}
	// sshd logs the reason as it refuses the key, before the client gives up.
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(srv.log.String()[before:], logWant) {
		if time.Now().After(deadline) {
			t.Fatalf("login %s refused, but sshd did not log %q:\n%s", why, logWant, srv.log.String()[before:])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExpiredCertificateRefused(t *testing.T) {
	ca := sharedCA(t)
	srv := startSSHD(t, ca)
	c := newConnector(t, certTarget(srv, "mf_"), ca, t.TempDir())
	expires := time.Now().Add(2 * time.Second)
	cred := provisionT(t, c, mayfly.ProvisionRequest{
		LeaseID: "lse_expiring", Username: "mf_expiring", ExpiresAt: expires,
		Grant: mayfly.Grant{Name: "login", Principals: []string{testPrincipal}},
	})
	mustLogin(t, srv, cred, nil)
	time.Sleep(time.Until(expires) + 1100*time.Millisecond)
	mustRefuse(t, srv, cred, nil, "after ValidBefore", "expired")
}

// TestRevokeOwnKey revokes a certificate of a key the user brought: sshd
// refuses it by serial and key ID, and the same key certified for another
// lease still works.
func TestRevokeOwnKey(t *testing.T) {
	ca := sharedCA(t)
	srv := startSSHD(t, ca)
	c := newConnector(t, certTarget(srv, "mf_"), ca, t.TempDir())
	pub, pemBytes := newKeyPair(t)
	key, err := gossh.ParsePrivateKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	grant := mayfly.Grant{Name: "login", Principals: []string{testPrincipal}}
	exp := time.Now().Add(time.Hour)
	cred := provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_own1", Username: "mf_own1", ExpiresAt: exp, Grant: grant, PublicKey: authorizedLine(pub) + " alice@laptop"})
	if cred.PrivateKey != "" {
		t.Errorf("Provision with a public key returned a private key")
	}
	mustLogin(t, srv, cred, key)
	if err := c.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_own1", Username: "mf_own1", ExpiresAt: exp}); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	mustRefuse(t, srv, cred, key, "after revocation", "revoked by file")

	k := parseKRLFile(t, srv.KRLFile)
	if len(k.Keys) != 0 {
		t.Errorf("revocation list revokes %d plain keys; a key the user brought must stay usable", len(k.Keys))
	}
	cred2 := provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_own2", Username: "mf_own2", ExpiresAt: exp, Grant: grant, PublicKey: authorizedLine(pub)})
	mustLogin(t, srv, cred2, key)
}

// TestRevokeByKeyIDWithoutRecords revokes a lease the connector has no
// record of (its state was lost): the lease ID alone blocks the
// certificate.
func TestRevokeByKeyIDWithoutRecords(t *testing.T) {
	ca := sharedCA(t)
	srv := startSSHD(t, ca)
	target := certTarget(srv, "mf_")
	c1 := newConnector(t, target, ca, t.TempDir())
	exp := time.Now().Add(time.Hour)
	cred := provisionT(t, c1, mayfly.ProvisionRequest{LeaseID: "lse_lost", Username: "mf_lost", ExpiresAt: exp, Grant: target.Grants["login"]})
	mustLogin(t, srv, cred, nil)

	c2 := newConnector(t, target, ca, t.TempDir()) // empty state, same revocation list file
	if err := c2.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_lost", Username: "mf_lost", ExpiresAt: exp}); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	mustRefuse(t, srv, cred, nil, "after revocation by key ID", "revoked by file")
}

func TestRotation(t *testing.T) {
	ca := openTestCA(t)
	srv := startSSHD(t, ca)
	target := certTarget(srv, "mf_")
	c := newConnector(t, target, ca, t.TempDir())
	exp := time.Now().Add(time.Hour)
	before := provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_rot1", Username: "mf_rot1", ExpiresAt: exp, Grant: target.Grants["login"]})
	before2 := provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_rot3", Username: "mf_rot3", ExpiresAt: exp, Grant: target.Grants["login"]})
	oldKeys := ca.PublicKeys()

	if err := ca.Rotate(); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	keys := ca.PublicKeys()
	if len(keys) != 2 || keys[1] != oldKeys[0] || keys[0] == oldKeys[0] {
		t.Fatalf("PublicKeys() after Rotate = %q; want [new, %q]", keys, oldKeys[0])
	}
	srv.Trust(t, ca)
	mustLogin(t, srv, before, nil)
	mustLogin(t, srv, before2, nil)

	after := provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_rot2", Username: "mf_rot2", ExpiresAt: exp, Grant: target.Grants["login"]})
	if got, want := certOf(t, after).SignatureKey.Marshal(), certOf(t, before).SignatureKey.Marshal(); string(got) == string(want) {
		t.Fatalf("certificate after Rotate is signed by the old key")
	}
	if got, want := authorizedLine(certOf(t, after).SignatureKey), keyField(keys[0]); got != want {
		t.Errorf("certificate after Rotate signed by %s; want the current key %s", got, want)
	}
	mustLogin(t, srv, after, nil)

	// Revoking a certificate of the old key still works after rotation.
	if err := c.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_rot1", Username: "mf_rot1", ExpiresAt: exp}); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	mustRefuse(t, srv, before, nil, "of an old-key certificate after revocation", "revoked by file")
	mustLogin(t, srv, after, nil)

	mustLogin(t, srv, before2, nil)

	// The old key's trust is what keeps its certificates working.
	writeFile(t, srv.dir+"/trusted_ca", []byte(keys[0]+"\n"), 0o644)
	mustRefuse(t, srv, before2, nil, "of an old-key certificate once the old key is untrusted", "Failed publickey for "+testPrincipal)
	mustLogin(t, srv, after, nil)
}

func certOf(t *testing.T, cred mayfly.Credential) *gossh.Certificate {
	t.Helper()
	pub, _, _, _, err := gossh.ParseAuthorizedKey([]byte(cred.Certificate))
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return pub.(*gossh.Certificate)
}

func TestCertificateContents(t *testing.T) {
	ca := sharedCA(t)
	c, err := New(mayfly.Target{Name: "t", Kind: mayfly.KindSSH, Address: "db1.example.com:2222"}, ca, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exp := time.Now().Add(30 * time.Minute).Truncate(time.Second)
	cred := provisionT(t, c, mayfly.ProvisionRequest{
		LeaseID: "lse_abc", Username: "mf_alice_x", ExpiresAt: exp,
		Grant: mayfly.Grant{Name: "deploy", Principals: []string{"deploy", "app"}, Extensions: []string{"permit-pty", "permit-agent-forwarding"},
			ForceCommand: "/usr/local/bin/deploy --safe", SourceAddress: "10.0.0.0/8,192.0.2.7"},
	})
	cert := certOf(t, cred)
	now := time.Now()
	for _, tc := range []struct {
		what      string
		got, want any
	}{
		{"Username", cred.Username, "deploy"},
		{"Host", cred.Host, "db1.example.com"},
		{"Port", cred.Port, 2222},
		{"CertType", cert.CertType, uint32(gossh.UserCert)},
		{"KeyId", cert.KeyId, "lse_abc"},
		{"ValidPrincipals", strings.Join(cert.ValidPrincipals, ","), "deploy,app"},
		{"ValidBefore", int64(cert.ValidBefore), exp.Unix()},
		{"ValidAfter≈now-1m", int64(cert.ValidAfter) <= now.Add(-59*time.Second).Unix() && int64(cert.ValidAfter) >= now.Add(-62*time.Second).Unix(), true},
		{"force-command", cert.CriticalOptions["force-command"], "/usr/local/bin/deploy --safe"},
		{"source-address", cert.CriticalOptions["source-address"], "10.0.0.0/8,192.0.2.7"},
		{"extensions", strings.Join(slices.Sorted(mapKeys(cert.Extensions)), ","), "permit-agent-forwarding,permit-pty"},
		{"SignatureKey", authorizedLine(cert.SignatureKey), keyField(ca.PublicKeys()[0])},
		{"private key present", strings.HasPrefix(cred.PrivateKey, "-----BEGIN OPENSSH PRIVATE KEY-----"), true},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v; want %v", tc.what, tc.got, tc.want)
		}
	}
	key, err := gossh.ParsePrivateKey([]byte(cred.PrivateKey))
	if err != nil {
		t.Fatalf("private key: %v", err)
	}
	if string(key.PublicKey().Marshal()) != string(cert.Key.Marshal()) {
		t.Errorf("the certificate is not for the returned private key")
	}
	checker := gossh.CertChecker{SupportedCriticalOptions: []string{"force-command", "source-address"}, IsUserAuthority: func(k gossh.PublicKey) bool {
		return authorizedLine(k) == keyField(ca.PublicKeys()[0])
	}}
	if err := checker.CheckCert("deploy", cert); err != nil {
		t.Errorf("CheckCert: %v", err)
	}

	// Default extensions.
	cred = provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_def", Username: "mf_def", ExpiresAt: exp, Grant: mayfly.Grant{Principals: []string{"deploy"}}})
	if got := strings.Join(slices.Sorted(mapKeys(certOf(t, cred).Extensions)), ","); got != "permit-pty" {
		t.Errorf("default extensions = %q; want permit-pty", got)
	}
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestHostUserDetails checks what host-user mode leaves on the host: the
// account expiry, the groups, the certificate principals, and that a user
// Mayfly did not create is never touched.
func TestHostUserDetails(t *testing.T) {
	ca := sharedCA(t)
	srv := startSSHD(t, ca)
	c := newConnector(t, hostTarget(srv, "mf_ssd_"), ca, t.TempDir())
	exp := time.Now().Add(time.Hour)
	name := connectortest.Name("mf_ssd_", maxNameLen)
	cred := provisionT(t, c, mayfly.ProvisionRequest{
		LeaseID: "lse_" + name, Username: name, ExpiresAt: exp,
		Grant: mayfly.Grant{Name: "ops", HostUser: true, HostGroups: []string{"adm"}},
	})
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{LeaseID: "lse_" + name, Username: name}) })
	if cred.Username != name {
		t.Errorf("Username = %q; want %q", cred.Username, name)
	}
	if got := certOf(t, cred).ValidPrincipals; !slices.Equal(got, []string{name}) {
		t.Errorf("principals = %q; want [%q]", got, name)
	}
	out, err := exec.Command("getent", "shadow", name).Output()
	if err != nil {
		t.Fatalf("getent shadow %s: %v", name, err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), ":")
	wantDay := exp.UTC().AddDate(0, 0, 1).Unix() / 86400
	if len(f) < 8 || f[1] != "*" || f[7] != strconv.FormatInt(wantDay, 10) {
		t.Errorf("shadow entry = %q; want password * and expiry day %d", out, wantDay)
	}
	if out, _ := exec.Command("id", "-nG", name).Output(); !slices.Contains(strings.Fields(string(out)), "adm") {
		t.Errorf("id -nG %s = %q; want adm among them", name, out)
	}
	mustLogin(t, srv, cred, nil)

	// A user with the prefix that Mayfly did not create is left alone.
	const foreign = "mf_ssd_foreign"
	if out, err := exec.Command("useradd", "--no-create-home", foreign).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", foreign).Run() })
	_, err = c.Provision(testCtx(t), mayfly.ProvisionRequest{LeaseID: "lse_foreign", Username: foreign, ExpiresAt: exp, Grant: mayfly.Grant{HostUser: true}})
	if got := mayfly.ErrorCode(err); got != mayfly.ECONFLICT {
		t.Errorf("Provision over a foreign user: code %q (%v); want %q", got, err, mayfly.ECONFLICT)
	}
	err = c.Revoke(testCtx(t), mayfly.RevokeRequest{Username: foreign})
	if got := mayfly.ErrorCode(err); got != mayfly.ECONFLICT {
		t.Errorf("Revoke of a foreign user: code %q (%v); want %q", got, err, mayfly.ECONFLICT)
	}
	if exec.Command("getent", "passwd", foreign).Run() != nil {
		t.Errorf("foreign user %s was removed", foreign)
	}
	accts, err := c.Accounts(testCtx(t), mayfly.AccountsRequest{Prefix: "mf_ssd_"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range accts {
		names = append(names, a.Name)
		if a.Name == foreign && a.Marked {
			t.Errorf("foreign user %s is listed as marked by this installation", foreign)
		}
	}
	// The foreign user is listed, so that it can be reported, never marked.
	if want := []string{name, foreign}; !slices.Equal(names, slices.Sorted(slices.Values(want))) {
		t.Errorf("Accounts() = %q; want %q", names, slices.Sorted(slices.Values(want)))
	}
}

func TestCheck(t *testing.T) {
	ca := sharedCA(t)
	srv := startSSHD(t, ca)
	stateDir := t.TempDir()
	ok := newConnector(t, hostTarget(srv, "mf_"), ca, stateDir)
	if err := ok.Check(testCtx(t)); err != nil {
		t.Errorf("Check() = %v", err)
	}

	wrongPin, _ := newKeyPair(t)
	bad := hostTarget(srv, "mf_")
	bad.Name = "pinned-wrong"
	bad.HostKey = authorizedLine(wrongPin)
	c := newConnector(t, bad, ca, stateDir)
	if err := c.Check(testCtx(t)); err == nil || !strings.Contains(err.Error(), "host key") {
		t.Errorf("Check() with a wrong host key pin = %v; want a host key error", err)
	}

	// Without a pin the first key seen is recorded and then required.
	tofu := hostTarget(srv, "mf_")
	tofu.Name = "tofu"
	tofu.HostKey = ""
	c = newConnector(t, tofu, ca, stateDir)
	if err := c.Check(testCtx(t)); err != nil {
		t.Fatalf("Check() on first contact = %v", err)
	}
	writeFile(t, stateDir+"/ssh-tofu.host_key", []byte(authorizedLine(wrongPin)+"\n"), 0o600)
	if err := c.Check(testCtx(t)); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("Check() after the host key changed = %v; want refusal", err)
	}

	// Replicas of a store: the key the first saw is recorded in the store
	// and required of every replica, whatever its state directory; a key
	// recorded in a state directory before is copied in.
	st := testStore(t)
	shared := func(dir string) *Connector {
		t.Helper()
		c, err := NewShared(tofu, ca, dir, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	if err := shared(t.TempDir()).Check(testCtx(t)); err != nil {
		t.Fatalf("Check() on first contact, shared = %v", err)
	}
	if err := shared(t.TempDir()).Check(testCtx(t)); err != nil {
		t.Fatalf("Check() through another replica = %v", err)
	}
	if err := st.Update(testCtx(t), func(tx mayfly.Tx) error {
		return tx.PutSetting(knownSetting("tofu"), authorizedLine(wrongPin)+"\n")
	}); err != nil {
		t.Fatal(err)
	}
	if err := shared(t.TempDir()).Check(testCtx(t)); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("Check() after the key the store records changed = %v; want refusal", err)
	}
	st2 := testStore(t)
	c, err := NewShared(tofu, ca, stateDir, st2, nil) // stateDir records wrongPin (above)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Check(testCtx(t)); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("Check() with the state directory's recorded key copied into the store = %v; want refusal", err)
	}

	down := certTarget(srv, "mf_")
	down.Name = "down"
	down.Address = "127.0.0.1:" + strconv.Itoa(freePort(t))
	c = newConnector(t, down, ca, stateDir)
	if err := c.Check(testCtx(t)); mayfly.ErrorCode(err) != mayfly.EUNAVAILABLE {
		t.Errorf("Check() of a closed port = %v; want %s", err, mayfly.EUNAVAILABLE)
	}
}
