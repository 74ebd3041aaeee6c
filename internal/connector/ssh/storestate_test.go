package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	gossh "golang.org/x/crypto/ssh"
)

// testStore is a PostgreSQL store in a database of its own.
func testStore(t *testing.T) mayfly.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func settingsUnder(t *testing.T, st mayfly.Store, prefix string) map[string]string {
	t.Helper()
	var out map[string]string
	if err := st.View(context.Background(), func(tx mayfly.Tx) error {
		var err error
		out, err = tx.ListSettings(prefix)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStateSharedThroughTheStore: replicas of one store, each with a state
// directory of its own, keep one CA and one record of certificates in the
// store: what one issues the other lists, what one revokes is in the
// other's revocation list, also after a compaction, and a replica opened
// later sees all of it.
func TestStateSharedThroughTheStore(t *testing.T) {
	st := testStore(t)
	openCA := func() *CA {
		t.Helper()
		ca, err := OpenSharedCA(st, "", []byte("pw"))
		if err != nil {
			t.Fatalf("OpenSharedCA: %v", err)
		}
		t.Cleanup(func() { ca.Close() })
		return ca
	}
	target := mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: "127.0.0.1:22"}
	open := func(ca *CA) *Connector {
		t.Helper()
		c, err := NewShared(target, ca, t.TempDir(), st, nil)
		if err != nil {
			t.Fatalf("NewShared: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	caA, caB := openCA(), openCA()
	if a, b := caA.PublicKeys(), caB.PublicKeys(); !slices.Equal(a, b) {
		t.Fatalf("two replicas' CAs list %q and %q; want one CA", a, b)
	}
	a, b := open(caA), open(caB)
	exp := time.Now().Add(time.Hour)
	grant := mayfly.Grant{Principals: []string{"u"}}
	cred := provisionT(t, a, mayfly.ProvisionRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp, Grant: grant})
	provisionT(t, b, mayfly.ProvisionRequest{LeaseID: "lse_2", Username: "mf_2", ExpiresAt: exp, Grant: grant})
	serial := certOf(t, cred).Serial
	if got := keyField(caB.PublicKeys()[0]); authorizedLine(certOf(t, cred).SignatureKey) != got {
		t.Errorf("A's certificate is signed by %s; B's CA signs with %s", authorizedLine(certOf(t, cred).SignatureKey), got)
	}
	accts, err := b.Accounts(testCtx(t), mayfly.AccountsRequest{Prefix: "mf_"})
	if err != nil {
		t.Fatal(err)
	}
	if len(accts) != 2 {
		t.Errorf("Accounts() through B = %+v; want mf_1 (issued through A) and mf_2", accts)
	}
	if err := b.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if got := revokedSerials(t, a); !slices.Equal(got, []uint64{serial}) {
		t.Errorf("revoked serials through A after B revoked = %v; want [%d]", got, serial)
	}

	// A compaction through A: B notices the new epoch and reads it again.
	provisionT(t, a, mayfly.ProvisionRequest{LeaseID: "lse_3", Username: "mf_3", ExpiresAt: time.Now().Add(time.Second), Grant: grant})
	a.now = func() time.Time { return time.Now().Add(2 * time.Second) }
	a.mu.Lock()
	err = a.reg.locked(context.Background(), func() error { return a.reg.compact(a.now()) })
	a.mu.Unlock()
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	if got := revokedSerials(t, b); !slices.Equal(got, []uint64{serial}) {
		t.Errorf("revoked serials through B after A compacted = %v; want [%d]", got, serial)
	}
	c := open(openCA())
	accts, err = c.Accounts(testCtx(t), mayfly.AccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(accts) != 1 || accts[0].Name != "mf_2" {
		t.Errorf("Accounts() through a replica opened after the compaction = %+v; want mf_2 alone", accts)
	}
	if got := revokedSerials(t, c); !slices.Equal(got, []uint64{serial}) {
		t.Errorf("revoked serials through a replica opened later = %v; want [%d]", got, serial)
	}
}

// TestStateImportedIntoTheStore: a broker that kept its CA and records in
// its state directory moves to a shared store: the first replica copies
// them in, so hosts keep trusting the same CA and revoked certificates
// stay revoked.
func TestStateImportedIntoTheStore(t *testing.T) {
	dir := t.TempDir()
	ca, err := OpenCA(dir+"/ssh-ca", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	target := mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: "127.0.0.1:22"}
	c := newConnector(t, target, ca, dir)
	exp := time.Now().Add(time.Hour)
	grant := mayfly.Grant{Principals: []string{"u"}}
	cred := provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp, Grant: grant})
	provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_2", Username: "mf_2", ExpiresAt: exp, Grant: grant})
	if err := c.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	keys := ca.PublicKeys()
	c.Close()
	ca.Close()

	st := testStore(t)
	for i := range 2 { // the second start finds the store's copy
		sca, err := OpenSharedCA(st, dir+"/ssh-ca", []byte("pw"))
		if err != nil {
			t.Fatalf("OpenSharedCA: %v", err)
		}
		if got := sca.PublicKeys(); !slices.Equal(got, keys) {
			t.Fatalf("start %d: the store's CA lists %q; want the directory's %q", i, got, keys)
		}
		sc, err := NewShared(target, sca, dir, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := revokedSerials(t, sc); !slices.Equal(got, []uint64{certOf(t, cred).Serial}) {
			t.Errorf("start %d: revoked serials from the store = %v; want the directory's [%d]", i, got, certOf(t, cred).Serial)
		}
		accts, err := sc.Accounts(testCtx(t), mayfly.AccountsRequest{})
		if err != nil || len(accts) != 1 || accts[0].Name != "mf_2" {
			t.Errorf("start %d: Accounts() = %+v, %v; want mf_2", i, accts, err)
		}
		sc.Close()
		sca.Close()
	}
	if n := len(settingsUnder(t, st, "journal.ssh-web")); n != 1 {
		t.Errorf("journal heads in the store: %d; want 1", n)
	}
}

// TestSharedHostKey: the SSH gateway's host key kept in the store is the
// key of the legacy file when there is one, a new key otherwise, and the
// same key on every later call (every replica); it is stored encrypted.
func TestSharedHostKey(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "old gateway key")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ssh-gateway-host-key")
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	old, _ := gossh.NewSignerFromKey(priv)
	for name, tc := range map[string]struct {
		file string
		want gossh.PublicKey
	}{"imported": {file, old.PublicKey()}, "new": {filepath.Join(t.TempDir(), "none"), nil}} {
		t.Run(name, func(t *testing.T) {
			st := testStore(t)
			ca, err := OpenSharedCA(st, "", []byte("pw"))
			if err != nil {
				t.Fatal(err)
			}
			defer ca.Close()
			first, err := ca.SharedHostKey(st, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil && !bytes.Equal(first.PublicKey().Marshal(), tc.want.Marshal()) {
				t.Errorf("host key %s; want the legacy file's %s", gossh.FingerprintSHA256(first.PublicKey()), gossh.FingerprintSHA256(tc.want))
			}
			again, err := ca.SharedHostKey(st, tc.file)
			if err != nil || !bytes.Equal(again.PublicKey().Marshal(), first.PublicKey().Marshal()) {
				t.Errorf("second call: %v, %v; want the same key", again, err)
			}
			stored := settingsUnder(t, st, hostKeySetting)[hostKeySetting]
			if _, err := gossh.ParseRawPrivateKey([]byte(stored)); err == nil {
				t.Errorf("the host key is stored unencrypted")
			}
		})
	}
}

// TestStoreJournalRacingReplicas: replicas appending to one target's
// journal at once, through connectors of their own, lose nothing: every
// certificate issued is listed by a replica opened afterwards, and every
// revocation is in its list.
func TestStoreJournalRacingReplicas(t *testing.T) {
	st := testStore(t)
	ca, err := OpenSharedCA(st, "", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	target := mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: "127.0.0.1:22"}
	const replicas, each = 4, 10
	exp := time.Now().Add(time.Hour)
	grant := mayfly.Grant{Principals: []string{"u"}}
	errs := make(chan error, replicas)
	serials := make(chan uint64, replicas*each)
	for r := range replicas {
		c, err := NewShared(target, ca, t.TempDir(), st, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			for i := range each {
				id := fmt.Sprintf("lse_%d_%d", r, i)
				res, err := c.Provision(testCtx(t), mayfly.ProvisionRequest{LeaseID: id, Username: fmt.Sprintf("mf_%d_%d", r, i), ExpiresAt: exp, Grant: grant})
				if err != nil {
					errs <- err
					return
				}
				if i%2 == 0 {
					if err := c.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: id, Username: fmt.Sprintf("mf_%d_%d", r, i), ExpiresAt: exp}); err != nil {
						errs <- err
						return
					}
					serials <- certOf(t, res.Credential).Serial
				}
			}
			errs <- nil
		}()
	}
	for range replicas {
		if err := <-errs; err != nil {
			t.Fatalf("a replica: %v", err)
		}
	}
	close(serials)
	var want []uint64
	for s := range serials {
		want = append(want, s)
	}
	slices.Sort(want)
	later, err := NewShared(target, ca, t.TempDir(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer later.Close()
	accts, err := later.Accounts(testCtx(t), mayfly.AccountsRequest{})
	if err != nil || len(accts) != replicas*each/2 {
		t.Errorf("Accounts() after the race: %d accounts, %v; want the %d not revoked", len(accts), err, replicas*each/2)
	}
	if got := revokedSerials(t, later); !slices.Equal(got, want) {
		t.Errorf("revoked serials after the race = %d of them; want the %d revoked", len(got), len(want))
	}
}

// updateCounting counts the write transactions run on a store.
type updateCounting struct {
	mayfly.Store
	updates atomic.Int64
}

func (s *updateCounting) Update(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	s.updates.Add(1)
	return s.Store.Update(ctx, fn)
}

// TestRevocationListReadWithoutLockWhenUnchanged: reading the revocation
// list (a host's GET, the krl_file follower every 2 s) takes no locking
// transaction while nothing was written since it was made, and still
// sees at once a revocation made through another replica.
func TestRevocationListReadWithoutLockWhenUnchanged(t *testing.T) {
	st := testStore(t)
	counted := &updateCounting{Store: st}
	ca, err := OpenSharedCA(st, "", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })
	target := mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: "127.0.0.1:22"}
	a, err := NewShared(target, ca, t.TempDir(), counted, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := NewShared(target, ca, t.TempDir(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	exp := time.Now().Add(time.Hour)
	cred := provisionT(t, b, mayfly.ProvisionRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp, Grant: mayfly.Grant{Principals: []string{"u"}}})

	if got := revokedSerials(t, a); len(got) != 0 {
		t.Fatalf("revoked before any revocation: %v", got)
	}
	before := counted.updates.Load()
	for range 3 {
		revokedSerials(t, a)
	}
	if n := counted.updates.Load() - before; n != 0 {
		t.Errorf("3 reads of an unchanged list ran %d write transactions; want 0", n)
	}
	if err := b.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if got, want := revokedSerials(t, a), []uint64{certOf(t, cred).Serial}; !slices.Equal(got, want) {
		t.Errorf("revoked through A after B revoked = %v; want %v", got, want)
	}
	if n := counted.updates.Load() - before; n != 1 {
		t.Errorf("reading the list after a change ran %d write transactions; want 1", n)
	}
}
