package ssh

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func revokedSerials(t *testing.T, c *Connector) []uint64 {
	t.Helper()
	b, err := c.RevokedKeys()
	if err != nil {
		t.Fatalf("RevokedKeys: %v", err)
	}
	k, err := parseKRL(b)
	if err != nil {
		t.Fatalf("parse RevokedKeys: %v", err)
	}
	var out []uint64
	for _, cc := range k.Certs {
		out = append(out, cc.Serials...)
	}
	slices.Sort(out)
	return out
}

// TestStateSharedAndPersistent: a revocation made through one connector is
// in the list of another connector on the same state directory, and in a
// connector opened later; the records survive compaction and a torn line.
func TestStateSharedAndPersistent(t *testing.T) {
	ca := sharedCA(t)
	dir := t.TempDir()
	target := mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: "127.0.0.1:22"}
	a := newConnector(t, target, ca, dir)
	b := newConnector(t, target, ca, dir)
	exp := time.Now().Add(time.Hour)
	grant := mayfly.Grant{Principals: []string{"u"}}
	cred := provisionT(t, a, mayfly.ProvisionRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp, Grant: grant})
	provisionT(t, a, mayfly.ProvisionRequest{LeaseID: "lse_2", Username: "mf_2", ExpiresAt: exp, Grant: grant})
	serial := certOf(t, cred).Serial

	accts, err := b.Accounts(testCtx(t), mayfly.AccountsRequest{Prefix: "mf_"})
	if err != nil {
		t.Fatal(err)
	}
	if len(accts) != 2 {
		t.Errorf("Accounts() through the other connector = %+v; want mf_1 and mf_2", accts)
	}
	if err := b.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if got := revokedSerials(t, a); !slices.Equal(got, []uint64{serial}) {
		t.Errorf("revoked serials through the first connector = %v; want [%d]", got, serial)
	}

	// A torn last line (a crash mid-write) is dropped.
	f, err := os.OpenFile(a.reg.j.(*fileJournal).path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"issue":{"serial":1`)
	f.Close()
	c := newConnector(t, target, ca, dir)
	if got := revokedSerials(t, c); !slices.Equal(got, []uint64{serial}) {
		t.Errorf("revoked serials after reopening = %v; want [%d]", got, serial)
	}
	provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_3", Username: "mf_3", ExpiresAt: exp, Grant: grant})

	// Compaction keeps what is live and drops what expired.
	provisionT(t, c, mayfly.ProvisionRequest{LeaseID: "lse_4", Username: "mf_4", ExpiresAt: time.Now().Add(time.Second), Grant: grant})
	if err := c.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_4", Username: "mf_4"}); err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return time.Now().Add(2 * time.Second) }
	c.mu.Lock()
	err = c.reg.locked(context.Background(), func() error { return c.reg.compact(c.now()) })
	c.mu.Unlock()
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	d := newConnector(t, target, ca, dir)
	accts, err = d.Accounts(testCtx(t), mayfly.AccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, acct := range accts {
		names = append(names, acct.Name)
	}
	if want := []string{"mf_2", "mf_3"}; !slices.Equal(names, want) {
		t.Errorf("Accounts() after compaction = %q; want %q", names, want)
	}
	if got := revokedSerials(t, d); !slices.Equal(got, []uint64{serial}) {
		t.Errorf("revoked serials after compaction = %v; want [%d]", got, serial)
	}
	// The first connector notices the replaced journal.
	if got := revokedSerials(t, a); !slices.Equal(got, []uint64{serial}) {
		t.Errorf("revoked serials in the first connector after compaction = %v; want [%d]", got, serial)
	}
}

// TestKRLFileFollowsOtherConnectors: a connector's krl_file takes in the
// revocations made through another connector sharing the records (here
// the state directory) within FollowRevocations' interval, without any
// call through the first; it stops when its context ends.
func TestKRLFileFollowsOtherConnectors(t *testing.T) {
	ca := sharedCA(t)
	dir := t.TempDir()
	target := mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: "127.0.0.1:22"}
	withFile := target
	withFile.KRLFile = filepath.Join(t.TempDir(), "revoked.krl")
	a := newConnector(t, withFile, ca, dir)
	b := newConnector(t, target, ca, dir)
	fileSerials := func() []uint64 {
		t.Helper()
		data, err := os.ReadFile(withFile.KRLFile)
		if err != nil {
			t.Fatal(err)
		}
		k, err := parseKRL(data)
		if err != nil {
			t.Fatalf("parse %s: %v", withFile.KRLFile, err)
		}
		var out []uint64
		for _, cc := range k.Certs {
			out = append(out, cc.Serials...)
		}
		return out
	}
	exp := time.Now().Add(time.Hour)
	grant := mayfly.Grant{Principals: []string{"u"}}
	cred := provisionT(t, a, mayfly.ProvisionRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp, Grant: grant})
	serial := certOf(t, cred).Serial

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.FollowRevocations(ctx, 20*time.Millisecond, func(err error) { t.Errorf("refresh: %v", err) })
	}()
	if err := b.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_1", Username: "mf_1", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !slices.Equal(fileSerials(), []uint64{serial}); {
		if time.Now().After(deadline) {
			t.Fatalf("the krl_file lists %v 5 s after another connector revoked serial %d", fileSerials(), serial)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("FollowRevocations did not return when its context ended")
	}
}
