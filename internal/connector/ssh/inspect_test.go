package ssh

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/mayflyhq/mayfly"
)

// findingOf returns the finding of check in fs, failing the test when
// there is none.
func findingOf(t *testing.T, fs []mayfly.Finding, check string) mayfly.Finding {
	t.Helper()
	for _, f := range fs {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("no finding %q in %+v", check, fs)
	return mayfly.Finding{}
}

// mustNotExist fails the test when path exists.
func mustNotExist(t *testing.T, path, what string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s (%s) exists after a diagnosis run (stat: %v); it must change nothing", what, path, err)
	}
}

// TestInspectChangesNothing: what `mayfly doctor` opens of an SSH target
// (OpenExistingCA, OpenExistingSharedCA, Inspect) logs in to the real host
// and diagnoses it, yet creates no CA, no state directory, no revocation
// list and records no host key, in a directory or in the store; the same
// steps through New and OpenSharedCA, the server's, do create them, so
// the checks below can see a write.
func TestInspectChangesNothing(t *testing.T) {
	ca := sharedCA(t)
	srv := startSSHD(t, ca)
	ctx := testCtx(t)
	pass := []byte("pw")
	base := t.TempDir()
	stateDir, caDir, krl := filepath.Join(base, "state"), filepath.Join(base, "ca"), filepath.Join(base, "revoked.krl")
	target := hostTarget(srv, "mf_")
	target.Name, target.HostKey, target.KRLFile = "tofu", "", krl // trusted on first use
	target.Grants = map[string]mayfly.Grant{"login": {Principals: []string{testPrincipal}}}

	if _, err := OpenExistingCA(caDir, pass); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Fatalf("OpenExistingCA without a CA = %v; want ENOTFOUND", err)
	}
	c, err := Inspect(target, nil, stateDir, nil, nil)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	got := c.Diagnose(ctx, target)
	c.Close()
	if f := findingOf(t, got, "connect"); f.Status != mayfly.FindingOK {
		t.Errorf("connect: %+v; want ok (the admin logs in)", f)
	}
	if f := findingOf(t, got, "trusts the CA"); f.Status != mayfly.FindingWarn {
		t.Errorf("trusts the CA without a CA: %+v; want a warning", f)
	}
	mustNotExist(t, caDir, "the CA directory")
	mustNotExist(t, stateDir, "the state directory")
	mustNotExist(t, krl, "the revocation list")

	// With the CA the host trusts, opened as it is.
	existing, err := OpenExistingCA(ca.files.(*caDirFiles).dir, []byte("test passphrase"))
	if err != nil {
		t.Fatalf("OpenExistingCA on the test CA: %v", err)
	}
	defer existing.Close()
	c, err = Inspect(target, existing, stateDir, nil, nil)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	got = c.Diagnose(ctx, target)
	c.Close()
	if f := findingOf(t, got, "trusts the CA"); f.Status != mayfly.FindingOK {
		t.Errorf("trusts the CA: %+v; want ok", f)
	}
	mustNotExist(t, stateDir, "the state directory")
	mustNotExist(t, krl, "the revocation list")

	// A store replicas share: nothing is written to it either.
	st := testStore(t)
	if _, err := OpenExistingSharedCA(st, caDir, pass); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Fatalf("OpenExistingSharedCA without a CA = %v; want ENOTFOUND", err)
	}
	c, err = Inspect(target, existing, stateDir, st, nil)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	got = c.Diagnose(ctx, target)
	c.Close()
	if f := findingOf(t, got, "connect"); f.Status != mayfly.FindingOK {
		t.Errorf("connect with the store: %+v; want ok", f)
	}
	if s := settingsUnder(t, st, ""); len(s) != 0 {
		t.Errorf("the store holds %d settings after a diagnosis run (%v); want none", len(s), s)
	}
	mustNotExist(t, caDir, "the CA directory")

	// The server's way writes: the checks above would have seen it.
	made, err := OpenSharedCA(st, "", pass)
	if err != nil {
		t.Fatal(err)
	}
	defer made.Close()
	sc, err := NewShared(target, made, stateDir, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if s := settingsUnder(t, st, ""); len(s) == 0 {
		t.Error("the server's way wrote no setting: the check of the store above proves nothing")
	}
	if _, err := os.Stat(krl); err != nil {
		t.Errorf("the server's way wrote no revocation list: %v", err)
	}
	// Now a diagnosis run finds the CA the server made in the store.
	if found, err := OpenExistingSharedCA(st, "", pass); err != nil {
		t.Errorf("OpenExistingSharedCA after the server made the CA: %v", err)
	} else {
		found.Close()
	}
}
