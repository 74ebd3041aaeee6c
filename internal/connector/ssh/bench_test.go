package ssh

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
)

// BenchmarkSignCert is the floor: building and signing one certificate
// with x/crypto/ssh alone.
func BenchmarkSignCert(b *testing.B) {
	ca := sharedCA(b)
	pub, _ := newKeyPair(b)
	now := time.Now()
	for b.Loop() {
		cert := &gossh.Certificate{
			Key: pub, Serial: 1, CertType: gossh.UserCert, KeyId: "lse_bench", ValidPrincipals: []string{"deploy"},
			ValidAfter: uint64(now.Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
			Permissions: gossh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
		}
		if err := cert.SignCert(rand.Reader, ca.signer); err != nil {
			b.Fatal(err)
		}
	}
}

func benchConnector(b *testing.B) *Connector {
	b.Helper()
	ca := sharedCA(b)
	dir := b.TempDir()
	c, err := New(mayfly.Target{Name: "bench", Kind: mayfly.KindSSH, Address: "127.0.0.1:22", KRLFile: filepath.Join(dir, "revoked.krl")}, ca, dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkProvision signs a certificate through the connector (validation,
// signing, journal append): for a key the user brought, and for a key the
// connector generates and returns.
func BenchmarkProvision(b *testing.B) {
	pub, _ := newKeyPair(b)
	for _, mode := range []string{"own_key", "generated_key"} {
		b.Run(mode, func(b *testing.B) {
			c := benchConnector(b)
			ctx := b.Context()
			exp := time.Now().Add(time.Hour)
			i := 0
			for b.Loop() {
				req := mayfly.ProvisionRequest{
					LeaseID: fmt.Sprintf("lse_%d", i), Username: fmt.Sprintf("mf_b_%d", i), ExpiresAt: exp,
					Grant: mayfly.Grant{Name: "deploy", Principals: []string{"deploy"}},
				}
				if mode == "own_key" {
					req.PublicKey = authorizedLine(pub)
				}
				if _, err := c.Provision(ctx, req); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkRevoke revokes one lease (synced journal append, revocation list
// regenerated and written atomically) with `backlog` other certificates
// already on the list.
func BenchmarkRevoke(b *testing.B) {
	for _, backlog := range []int{0, 1000} {
		b.Run(fmt.Sprintf("backlog=%d", backlog), func(b *testing.B) {
			c := benchConnector(b)
			ctx := b.Context()
			exp := time.Now().Add(time.Hour)
			grant := mayfly.Grant{Name: "deploy", Principals: []string{"deploy"}}
			provision := func(id string) {
				if _, err := c.Provision(ctx, mayfly.ProvisionRequest{LeaseID: "lse_" + id, Username: "mf_" + id, ExpiresAt: exp, Grant: grant}); err != nil {
					b.Fatal(err)
				}
			}
			for i := range backlog {
				provision(fmt.Sprintf("old%d", i))
				if err := c.Revoke(ctx, mayfly.RevokeRequest{LeaseID: fmt.Sprintf("lse_old%d", i), ExpiresAt: exp}); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			for b.Loop() {
				b.StopTimer()
				id := fmt.Sprintf("new%d", i)
				provision(id)
				i++
				b.StartTimer()
				if err := c.Revoke(ctx, mayfly.RevokeRequest{LeaseID: "lse_" + id, Username: "mf_" + id, ExpiresAt: exp}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkProvisionStore is BenchmarkProvision/own_key with the CA and the
// journal kept in a PostgreSQL store (replicas), against the same with
// files (one broker), in one run.
func BenchmarkProvisionStore(b *testing.B) {
	pub, _ := newKeyPair(b)
	shared := benchStoreConnector(b)
	files := benchConnector(b)
	i := 0 // lease ids unique across runs: a lease provisioned again revokes its certificate
	for _, name := range []string{"files", "store"} {
		c := map[string]*Connector{"files": files, "store": shared}[name]
		b.Run(name, func(b *testing.B) {
			exp := time.Now().Add(time.Hour)
			for b.Loop() {
				req := mayfly.ProvisionRequest{
					LeaseID: fmt.Sprintf("lse_%s_%d", name, i), Username: fmt.Sprintf("mf_b_%d", i), ExpiresAt: exp,
					Grant: mayfly.Grant{Name: "deploy", Principals: []string{"deploy"}}, PublicKey: authorizedLine(pub),
				}
				if _, err := c.Provision(b.Context(), req); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkRevokedKeysStore reads the revocation list of a target kept in
// a PostgreSQL store, unchanged since it was last made (a host polling
// GET /v1/ssh/revoked-keys, the krl_file follower): one read of the
// journal's head, no locking transaction.
func BenchmarkRevokedKeysStore(b *testing.B) {
	c := benchStoreConnector(b)
	pub, _ := newKeyPair(b)
	if _, err := c.Provision(b.Context(), mayfly.ProvisionRequest{LeaseID: "lse_1", Username: "mf_b_1", ExpiresAt: time.Now().Add(time.Hour),
		Grant: mayfly.Grant{Name: "deploy", Principals: []string{"deploy"}}, PublicKey: authorizedLine(pub)}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.RevokedKeys(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStoreConnector is a connector whose CA and records are kept in a
// PostgreSQL store of its own, as replicas keep them.
func benchStoreConnector(b *testing.B) *Connector {
	b.Helper()
	st, err := postgres.Open(context.Background(), pgtest.NewDatabase(b), 4)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ca, err := OpenSharedCA(st, "", []byte("bench"))
	if err != nil {
		b.Fatal(err)
	}
	target := mayfly.Target{Name: "bench", Kind: mayfly.KindSSH, Address: "127.0.0.1:22"}
	c, err := NewShared(target, ca, b.TempDir(), st, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}
