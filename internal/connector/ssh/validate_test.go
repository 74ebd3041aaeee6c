package ssh

import (
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
)

func TestNewRejects(t *testing.T) {
	ca := sharedCA(t)
	keyFile := filepath.Join(t.TempDir(), "admin")
	_, pemBytes := newKeyPair(t)
	writeFile(t, keyFile, pemBytes, 0o600)
	base := func() mayfly.Target {
		return mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: "127.0.0.1:22"}
	}
	for _, tc := range []struct {
		name string
		edit func(*mayfly.Target)
	}{
		{"wrong kind", func(t *mayfly.Target) { t.Kind = mayfly.KindPostgres }},
		{"bad name", func(t *mayfly.Target) { t.Name = "../x" }},
		{"no address", func(t *mayfly.Target) { t.Address = "" }},
		{"address without port", func(t *mayfly.Target) { t.Address = "host" }},
		{"bad port", func(t *mayfly.Target) { t.Address = "host:99999" }},
		{"dsn", func(t *mayfly.Target) { t.DSN = "postgres://x" }},
		{"connection limit", func(t *mayfly.Target) { t.ConnectionLimit = 3 }},
		{"commands", func(t *mayfly.Target) { t.Commands.Check = []string{"true"} }},
		{"bad prefix", func(t *mayfly.Target) { t.Prefix = "MF;" }},
		{"admin user without key", func(t *mayfly.Target) { t.AdminUser = "root" }},
		{"key without admin user", func(t *mayfly.Target) { t.AdminKeyFile = keyFile }},
		{"host key without admin", func(t *mayfly.Target) { t.HostKey = "ssh-ed25519 AAAA" }},
		{"hostile admin user", func(t *mayfly.Target) { t.AdminUser, t.AdminKeyFile = "root;id", keyFile }},
		{"missing admin key", func(t *mayfly.Target) { t.AdminUser, t.AdminKeyFile = "root", keyFile+".missing" }},
		{"bad host key", func(t *mayfly.Target) { t.AdminUser, t.AdminKeyFile, t.HostKey = "root", keyFile, "not a key" }},
		{"relative krl file", func(t *mayfly.Target) { t.KRLFile = "revoked.krl" }},
		{"host-user grant without admin", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"shell": {HostUser: true}}
		}},
		{"gateway grant without host key", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"shell": {Principals: []string{"deploy"}, Via: ViaGateway}}
		}},
		{"gateway grant with a bad host key", func(t *mayfly.Target) {
			t.HostKey = "not a key"
			t.Grants = map[string]mayfly.Grant{"shell": {Principals: []string{"deploy"}, Via: ViaGateway}}
		}},
		{"unknown via", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"shell": {Principals: []string{"deploy"}, Via: "tunnel"}}
		}},
		{"bad grant", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"x": {Principals: []string{"a b"}}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := base()
			tc.edit(&target)
			c, err := New(target, ca, t.TempDir(), nil)
			if err == nil {
				c.Close()
			}
			if got := mayfly.ErrorCode(err); got != mayfly.EINVALID {
				t.Errorf("New() = %v (code %q); want %s", err, got, mayfly.EINVALID)
			}
		})
	}
	if _, err := New(base(), nil, t.TempDir(), nil); mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("New(no CA) = %v; want %s", err, mayfly.EINVALID)
	}
	if _, err := New(base(), ca, "", nil); mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("New(no state dir) = %v; want %s", err, mayfly.EINVALID)
	}
}

func TestAdminKeyPassphrase(t *testing.T) {
	ca := sharedCA(t)
	dir := t.TempDir()
	other := sharedOtherCA(t) // its key file is an encrypted ed25519 key
	files, _ := filepath.Glob(filepath.Join(other.files.(*caDirFiles).dir, "*.key"))
	target := mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: "127.0.0.1:22", AdminUser: "root", AdminKeyFile: files[0], AdminPasswordEnv: "ADMIN_KEY_PASS"}
	env := map[string]string{"ADMIN_KEY_PASS": "test passphrase"}
	c, err := New(target, ca, dir, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("New(encrypted admin key, right passphrase) = %v", err)
	}
	c.Close()
	env["ADMIN_KEY_PASS"] = ""
	_, err = New(target, ca, dir, func(k string) string { return env[k] })
	if mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("New(encrypted admin key, no passphrase) = %v; want %s", err, mayfly.EINVALID)
	}
}

func TestProvisionRejects(t *testing.T) {
	ca := sharedCA(t)
	c, err := New(mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: "127.0.0.1:22"}, ca, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := mayfly.Grant{Name: "g", Principals: []string{"deploy"}}
	ok := func() mayfly.ProvisionRequest {
		return mayfly.ProvisionRequest{LeaseID: "lse_1", Username: "mf_alice_1", Grant: good, ExpiresAt: time.Now().Add(time.Hour)}
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakPub, err := gossh.NewPublicKey(&weak.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	certRes, err := c.Provision(testCtx(t), mayfly.ProvisionRequest{LeaseID: "lse_0", Username: "mf_cert", Grant: good, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	certLine := certRes.Credential.Certificate
	if err := c.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_0"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*mayfly.ProvisionRequest)
	}{
		{"hostile name", func(r *mayfly.ProvisionRequest) { r.Username = "mf_a;id" }},
		{"name outside prefix", func(r *mayfly.ProvisionRequest) { r.Username = "root" }},
		{"long name", func(r *mayfly.ProvisionRequest) { r.Username = "mf_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }},
		{"hostile lease id", func(r *mayfly.ProvisionRequest) { r.LeaseID = "lse\n1" }},
		{"empty lease id", func(r *mayfly.ProvisionRequest) { r.LeaseID = "" }},
		{"expiry in the past", func(r *mayfly.ProvisionRequest) { r.ExpiresAt = time.Now().Add(-time.Second) }},
		{"no principals", func(r *mayfly.ProvisionRequest) { r.Grant.Principals = nil }},
		{"hostile principal", func(r *mayfly.ProvisionRequest) { r.Grant.Principals = []string{"deploy,root"} }},
		{"principal with newline", func(r *mayfly.ProvisionRequest) { r.Grant.Principals = []string{"deploy\nroot"} }},
		{"unknown extension", func(r *mayfly.ProvisionRequest) { r.Grant.Extensions = []string{"permit-everything"} }},
		{"force command with newline", func(r *mayfly.ProvisionRequest) { r.Grant.ForceCommand = "true\nrm -rf /" }},
		{"force command with NUL", func(r *mayfly.ProvisionRequest) { r.Grant.ForceCommand = "true\x00" }},
		{"bad source address", func(r *mayfly.ProvisionRequest) { r.Grant.SourceAddress = "10.0.0.0/8 ,x" }},
		{"host groups without host user", func(r *mayfly.ProvisionRequest) { r.Grant.HostGroups = []string{"adm"} }},
		{"host user without admin", func(r *mayfly.ProvisionRequest) { r.Grant.HostUser = true }},
		{"postgres roles", func(r *mayfly.ProvisionRequest) { r.Grant.Roles = []string{"x"} }},
		{"redis acl", func(r *mayfly.ProvisionRequest) { r.Grant.ACL = "+@all" }},
		{"script params", func(r *mayfly.ProvisionRequest) { r.Grant.Params = map[string]string{"a": "b"} }},
		{"garbage public key", func(r *mayfly.ProvisionRequest) { r.PublicKey = "ssh-ed25519 !!!" }},
		{"two public keys", func(r *mayfly.ProvisionRequest) {
			a, _ := newKeyPair(t)
			r.PublicKey = authorizedLine(a) + "\n" + authorizedLine(a)
		}},
		{"weak rsa public key", func(r *mayfly.ProvisionRequest) { r.PublicKey = authorizedLine(weakPub) }},
		{"certificate as public key", func(r *mayfly.ProvisionRequest) { r.PublicKey = certLine }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := ok()
			tc.edit(&req)
			_, err := c.Provision(testCtx(t), req)
			if got := mayfly.ErrorCode(err); got != mayfly.EINVALID {
				t.Errorf("Provision() = %v (code %q); want %s", err, got, mayfly.EINVALID)
			}
		})
	}
	if _, err := c.Provision(testCtx(t), ok()); err != nil {
		t.Errorf("Provision(valid) = %v", err)
	}
	// Nothing rejected was recorded.
	accts, err := c.Accounts(testCtx(t), mayfly.AccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(accts) != 1 || accts[0].Name != "mf_alice_1" {
		t.Errorf("Accounts() = %+v; want only mf_alice_1", accts)
	}
	for name, req := range map[string]mayfly.RevokeRequest{
		"empty":        {},
		"hostile name": {Username: "mf_x y"},
		"hostile id":   {LeaseID: "a\x00b"},
	} {
		if err := c.Revoke(testCtx(t), req); mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Errorf("Revoke(%s) = %v; want %s", name, err, mayfly.EINVALID)
		}
	}
	if _, err := c.Accounts(testCtx(t), mayfly.AccountsRequest{Prefix: "mf_'"}); mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("Accounts(hostile prefix) = %v; want %s", err, mayfly.EINVALID)
	}
	if _, err := os.Stat(c.reg.j.(*fileJournal).path); err != nil {
		t.Errorf("journal: %v", err)
	}
}
