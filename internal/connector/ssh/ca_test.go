package ssh

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
)

func TestOpenCAStoresEncryptedKey(t *testing.T) {
	dir := t.TempDir()
	ca, err := OpenCA(dir, []byte("s3cret"))
	if err != nil {
		t.Fatalf("OpenCA: %v", err)
	}
	keys := ca.PublicKeys()
	if len(keys) != 1 {
		t.Fatalf("PublicKeys() = %q; want one key", keys)
	}
	if pub, _, _, _, err := gossh.ParseAuthorizedKey([]byte(keys[0])); err != nil || pub.Type() != gossh.KeyAlgoED25519 {
		t.Fatalf("PublicKeys()[0] = %q (%v); want an ed25519 authorized_keys line", keys[0], err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.key"))
	if len(files) != 1 {
		t.Fatalf("key files = %q; want one", files)
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode = %o; want 600", got)
	}
	b, _ := os.ReadFile(files[0])
	var missing *gossh.PassphraseMissingError
	if _, err := gossh.ParseRawPrivateKey(b); !errors.As(err, &missing) {
		t.Errorf("ParseRawPrivateKey(key file) = %v; want it encrypted", err)
	}

	again, err := OpenCA(dir, []byte("s3cret"))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if got := again.PublicKeys(); len(got) != 1 || got[0] != keys[0] {
		t.Errorf("reopened PublicKeys() = %q; want %q", got, keys)
	}
	_, err = OpenCA(dir, []byte("wrong"))
	if got := mayfly.ErrorCode(err); got != mayfly.EINVALID {
		t.Errorf("OpenCA(wrong passphrase) = %v (code %q); want %s", err, got, mayfly.EINVALID)
	}
	for _, tc := range []struct {
		dir  string
		pass []byte
	}{{"", []byte("x")}, {t.TempDir(), nil}} {
		if _, err := OpenCA(tc.dir, tc.pass); mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Errorf("OpenCA(%q, %q) = %v; want %s", tc.dir, tc.pass, err, mayfly.EINVALID)
		}
	}
}

func TestRotateKeepsOldKeyUntilItsCertificatesExpire(t *testing.T) {
	dir := t.TempDir()
	ca, err := OpenCA(dir, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	ca.now = func() time.Time { return now }
	pub, _ := newKeyPair(t)
	sign := func(until time.Time) *gossh.Certificate {
		t.Helper()
		c, err := ca.Sign(CertRequest{Key: pub, KeyID: "k", Principals: []string{"u"}, ValidAfter: now.Add(-time.Minute), ValidBefore: until})
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		return c
	}
	first := ca.PublicKeys()[0]
	sign(now.Add(30 * time.Minute))

	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	second := ca.PublicKeys()[0]
	if got := ca.PublicKeys(); len(got) != 2 || got[1] != first {
		t.Fatalf("after Rotate PublicKeys() = %q; want [new, %q]", got, first)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.key")); len(files) != 1 {
		t.Errorf("after Rotate key files = %q; want only the current key", files)
	}
	c := sign(now.Add(10 * time.Minute))
	if got := authorizedLine(c.SignatureKey); got != keyField(second) {
		t.Errorf("signed by %s; want the new key", got)
	}

	// The state survives a reopen.
	reopened, err := OpenCA(dir, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	reopened.now = ca.now
	if got := reopened.PublicKeys(); len(got) != 2 {
		t.Errorf("reopened PublicKeys() = %q; want two keys", got)
	}

	// Past the last certificate of the first key (rounded up to a minute),
	// only the current key is trusted.
	now = now.Add(32 * time.Minute)
	if got := ca.PublicKeys(); len(got) != 1 || got[0] != second {
		t.Errorf("after the old key's certificates expired PublicKeys() = %q; want [%q]", got, second)
	}
	// A retired key whose certificates all expired is dropped on rotation.
	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	if got := ca.PublicKeys(); len(got) != 1 {
		t.Errorf("rotating from a key with only expired certificates: PublicKeys() = %q; want one", got)
	}
}

func TestSignRejects(t *testing.T) {
	ca := sharedCA(t)
	pub, _ := newKeyPair(t)
	now := time.Now()
	cert, err := ca.Sign(CertRequest{Key: pub, Principals: []string{"u"}, ValidAfter: now, ValidBefore: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]CertRequest{
		"no key":             {Principals: []string{"u"}, ValidAfter: now, ValidBefore: now.Add(time.Hour)},
		"certificate as key": {Key: cert, Principals: []string{"u"}, ValidAfter: now, ValidBefore: now.Add(time.Hour)},
		"no principals":      {Key: pub, ValidAfter: now, ValidBefore: now.Add(time.Hour)},
		"empty validity":     {Key: pub, Principals: []string{"u"}, ValidAfter: now, ValidBefore: now},
	} {
		if _, err := ca.Sign(req); mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Errorf("Sign(%s) = %v; want %s", name, err, mayfly.EINVALID)
		}
	}
	// Serials are random.
	other, err := ca.Sign(CertRequest{Key: pub, Principals: []string{"u"}, ValidAfter: now, ValidBefore: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if cert.Serial == other.Serial {
		t.Errorf("two certificates share serial %d", cert.Serial)
	}
}

// TestRotationInTwoSteps: a prepared next key is published at once (second
// in PublicKeys, kept across a reopen) but signs nothing; activating it
// makes it sign, keeps the previous key while its certificates live, and
// deletes the previous private key. Activating with nothing prepared is a
// conflict.
func TestRotationInTwoSteps(t *testing.T) {
	dir := t.TempDir()
	ca, err := OpenCA(dir, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.ActivateRotation(); mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Fatalf("ActivateRotation with nothing prepared = %v; want %s", err, mayfly.ECONFLICT)
	}
	pub, _ := newKeyPair(t)
	sign := func(c *CA) *gossh.Certificate {
		t.Helper()
		cert, err := c.Sign(CertRequest{Key: pub, KeyID: "k", Principals: []string{"u"}, ValidAfter: time.Now().Add(-time.Minute), ValidBefore: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		return cert
	}
	current := ca.PublicKeys()[0]
	next, err := ca.PrepareRotation()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := ca.PrepareRotation(); again != next {
		t.Errorf("a second PrepareRotation made another key %q; want %q kept", again, next)
	}
	if got := ca.PublicKeys(); len(got) != 2 || got[0] != current || got[1] != next {
		t.Fatalf("after PrepareRotation PublicKeys() = %q; want [current, next]", got)
	}
	if c := sign(ca); authorizedLine(c.SignatureKey) != keyField(current) {
		t.Errorf("signed by the next key before activation")
	}
	// The next key survives a restart.
	ca, err = OpenCA(dir, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _, ok := ca.NextKey(); !ok || got != next {
		t.Fatalf("after reopening NextKey() = %q, %v; want %q", got, ok, next)
	}
	if err := ca.ActivateRotation(); err != nil {
		t.Fatal(err)
	}
	if c := sign(ca); authorizedLine(c.SignatureKey) != keyField(next) {
		t.Errorf("after activation signed by %s; want the next key", authorizedLine(c.SignatureKey))
	}
	if got := ca.PublicKeys(); len(got) != 2 || got[0] != next || got[1] != current {
		t.Errorf("after activation PublicKeys() = %q; want [next, previous (its certificate is valid)]", got)
	}
	if _, _, ok := ca.NextKey(); ok {
		t.Errorf("a next key is still published after activation")
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.key")); len(files) != 1 {
		t.Errorf("key files after activation = %q; want only the current key", files)
	}
}

// TestCASharedByProcesses: CAs opened on one directory (replicas that share
// a state_dir; the file lock is per open file, so instances in one process
// stand for processes) are one CA: all first opens at once make one key,
// a rotation through one is what the others list and sign with, and a
// certificate one signs keeps its key trusted after another rotates.
func TestCASharedByProcesses(t *testing.T) {
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		testCAShared(t, func() (*CA, error) { return OpenCA(dir, []byte("pw")) }, func() int {
			files, _ := filepath.Glob(filepath.Join(dir, "*.key"))
			return len(files)
		})
	})
	t.Run("store", func(t *testing.T) {
		st := testStore(t)
		testCAShared(t, func() (*CA, error) { return OpenSharedCA(st, "", []byte("pw")) }, func() int {
			return len(settingsUnder(t, st, caKeySettingPre))
		})
	})
}

func testCAShared(t *testing.T, open func() (*CA, error), keys func() int) {
	cas := make([]*CA, 4)
	errs := make(chan error, len(cas))
	for i := range cas {
		go func() {
			var err error
			cas[i], err = open()
			errs <- err
		}()
	}
	for range cas {
		if err := <-errs; err != nil {
			t.Fatalf("OpenCA: %v", err)
		}
	}
	for _, ca := range cas {
		t.Cleanup(func() { ca.Close() })
	}
	a, b := cas[0], cas[1]
	first := a.PublicKeys()
	for i, ca := range cas {
		if got := ca.PublicKeys(); len(got) != 1 || got[0] != first[0] {
			t.Fatalf("CA %d opened at once with the others lists %q; want %q", i, got, first)
		}
	}
	if n := keys(); n != 1 {
		t.Fatalf("keys after opening at once: %d; want one", n)
	}

	pub, _ := newKeyPair(t)
	sign := func(c *CA, valid time.Duration) *gossh.Certificate {
		t.Helper()
		cert, err := c.Sign(CertRequest{Key: pub, KeyID: "k", Principals: []string{"u"}, ValidAfter: time.Now().Add(-time.Minute), ValidBefore: time.Now().Add(valid)})
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		return cert
	}
	sign(a, time.Hour)
	next, err := a.PrepareRotation()
	if err != nil {
		t.Fatal(err)
	}
	// b signs a certificate valid longer than any before: it records that
	// on the state a wrote, keeping the next key.
	sign(b, 3*time.Hour)
	if got, _, ok := b.NextKey(); !ok || got != next {
		t.Fatalf("NextKey() through b = %q, %v; want %q published through a", got, ok, next)
	}
	if got := a.PublicKeys(); len(got) != 2 || got[1] != next {
		t.Fatalf("PublicKeys() through a after b signed = %q; want the next key kept", got)
	}
	if err := b.ActivateRotation(); err != nil {
		t.Fatalf("activate through b the key a published: %v", err)
	}
	if c := sign(a, time.Hour); authorizedLine(c.SignatureKey) != keyField(next) {
		t.Errorf("after b activated, a signed with %s; want %s", authorizedLine(c.SignatureKey), next)
	}
	// The old key signed b's 3-hour certificate: every instance keeps it
	// trusted.
	for i, ca := range cas {
		if got := ca.PublicKeys(); len(got) != 2 || got[0] != next || got[1] != first[0] {
			t.Errorf("CA %d after the rotation lists %q; want [%s, %s]", i, got, next, first[0])
		}
	}
	ca, err := open()
	if err != nil {
		t.Fatalf("reopen after the shared rotation: %v", err)
	}
	defer ca.Close()
	if n := keys(); n != 1 {
		t.Errorf("keys after the rotation: %d; want the current one alone (the retired key's private half is deleted)", n)
	}
	if got := ca.PublicKeys(); len(got) != 2 || got[0] != next {
		t.Errorf("reopened CA lists %q; want %s first", got, next)
	}
}
