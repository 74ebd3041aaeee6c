package seal

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func openSQLite(t *testing.T) (mayfly.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mayfly.db")
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, path
}

// stores runs fn against a SQLite store and a PostgreSQL store.
func stores(t *testing.T, fn func(t *testing.T, st mayfly.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		st, _ := openSQLite(t)
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.NewDatabase(t)
		st, err := postgres.Open(context.Background(), dsn, 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
}

func TestSealOpenRoundTrip(t *testing.T) {
	stores(t, func(t *testing.T, st mayfly.Store) {
		ctx := context.Background()
		kr, err := Open(ctx, st, key(1))
		if err != nil {
			t.Fatal(err)
		}
		secret := []byte("postgres://admin:hunter2@db/app")
		s := kr.Seal("target-credential/pg", secret)
		if strings.Contains(s, "hunter2") {
			t.Fatalf("sealed value shows the secret: %s", s)
		}
		if s2 := kr.Seal("target-credential/pg", secret); s2 == s {
			t.Fatal("two seals of one value are equal; the nonce is not random")
		}
		got, err := kr.Open("target-credential/pg", s)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Open = %q, %v; want %q", got, err, secret)
		}
		// Bound to its purpose.
		if _, err := kr.Open("target-credential/other", s); err == nil {
			t.Fatal("a value sealed for one target opened for another")
		}
		// Tampering is detected.
		b := []byte(s)
		b[len(b)-3] ^= 1
		if _, err := kr.Open("target-credential/pg", string(b)); err == nil {
			t.Fatal("a tampered value opened")
		}
		// A second start with the same key reads the same data key.
		kr2, err := Open(ctx, st, key(1))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := kr2.Open("target-credential/pg", s); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("reopened keyring: Open = %q, %v", got, err)
		}
	})
}

func TestWrongMasterKeyFails(t *testing.T) {
	stores(t, func(t *testing.T, st mayfly.Store) {
		ctx := context.Background()
		if _, err := Open(ctx, st, key(1)); err != nil {
			t.Fatal(err)
		}
		_, err := Open(ctx, st, key(2))
		if !errors.Is(err, ErrWrongKey) || mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Fatalf("Open with a wrong key = %v; want EINVALID ErrWrongKey", err)
		}
		if !strings.Contains(mayfly.ErrorMessage(err), "rotate-key") {
			t.Errorf("message %q does not say what to do", mayfly.ErrorMessage(err))
		}
	})
}

// TestOpenExistingChangesNothing: a diagnosis run's OpenExisting on a store
// without keys fails with ErrNoKeys and writes nothing, so that a wrong
// master key it was given cannot become the store's; once a server made
// the keys, it opens them with the right key and refuses a wrong one.
func TestOpenExistingChangesNothing(t *testing.T) {
	stores(t, func(t *testing.T, st mayfly.Store) {
		ctx := context.Background()
		if _, err := OpenExisting(ctx, st, key(2)); !errors.Is(err, ErrNoKeys) || mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Fatalf("OpenExisting on a store without keys = %v; want ENOTFOUND ErrNoKeys", err)
		}
		// Nothing was written: the right key still makes the store's keys.
		kr, err := Open(ctx, st, key(1))
		if err != nil {
			t.Fatalf("Open with the right key after OpenExisting with a wrong one: %v", err)
		}
		s := kr.Seal("target-credential/pg", []byte("secret"))
		kr2, err := OpenExisting(ctx, st, key(1))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := kr2.Open("target-credential/pg", s); err != nil || string(got) != "secret" {
			t.Fatalf("OpenExisting's keyring: Open = %q, %v", got, err)
		}
		if _, err := OpenExisting(ctx, st, key(2)); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("OpenExisting with a wrong key = %v; want ErrWrongKey", err)
		}
	})
}

func TestRotateMaster(t *testing.T) {
	stores(t, func(t *testing.T, st mayfly.Store) {
		ctx := context.Background()
		kr, err := Open(ctx, st, key(1))
		if err != nil {
			t.Fatal(err)
		}
		s := kr.Seal("p", []byte("secret"))

		// A rotation stopped half way (after re-wrapping, before commit)
		// leaves the old key in force.
		crash := errors.New("crash")
		for _, at := range []string{"rewrapped", "check"} {
			_, err := RotateMaster(ctx, st, key(1), key(2), func(step string) error {
				if strings.HasPrefix(step, at) {
					return crash
				}
				return nil
			})
			if !errors.Is(err, crash) {
				t.Fatalf("RotateMaster stopped at %s = %v; want the crash", at, err)
			}
			if _, err := Open(ctx, st, key(2)); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("after a rotation stopped at %s the new key opens the store: %v", at, err)
			}
			kr, err := Open(ctx, st, key(1))
			if err != nil {
				t.Fatalf("after a rotation stopped at %s the old key fails: %v", at, err)
			}
			if got, err := kr.Open("p", s); err != nil || string(got) != "secret" {
				t.Fatalf("after a rotation stopped at %s: Open = %q, %v", at, got, err)
			}
		}

		if _, err := RotateMaster(ctx, st, key(3), key(2), nil); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("RotateMaster from a wrong key = %v; want ErrWrongKey", err)
		}
		n, err := RotateMaster(ctx, st, key(1), key(2), nil)
		if err != nil || n != 1 {
			t.Fatalf("RotateMaster = %d, %v; want 1 data key", n, err)
		}
		if _, err := Open(ctx, st, key(1)); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("the old key still opens the store after rotation: %v", err)
		}
		kr2, err := Open(ctx, st, key(2))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := kr2.Open("p", s); err != nil || string(got) != "secret" {
			t.Fatalf("after rotation: Open = %q, %v", got, err)
		}
		evs := auditActions(t, st)
		if !strings.Contains(evs, "seal.master_key_rotated") {
			t.Errorf("no audit event for the rotation: %s", evs)
		}
	})
}

func auditActions(t *testing.T, st mayfly.Store) string {
	t.Helper()
	var out []string
	err := st.View(context.Background(), func(tx mayfly.Tx) error {
		evs, err := tx.ListAudit(mayfly.AuditFilter{})
		for _, e := range evs {
			out = append(out, e.Action)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

func TestParseKey(t *testing.T) {
	k := key(7)
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{hex.EncodeToString(k), ""},
		{hex.EncodeToString(k) + "\n", ""},
		{base64.StdEncoding.EncodeToString(k), ""},
		{base64.RawURLEncoding.EncodeToString(k), ""},
		{"", "empty"},
		{"  \n", "empty"},
		{hex.EncodeToString(k[:16]), "16 bytes"},
		{"not a key at all!", "not 64 hex digits"},
	} {
		got, err := ParseKey([]byte(tc.in))
		if tc.wantErr == "" {
			if err != nil || !bytes.Equal(got, k) {
				t.Errorf("ParseKey(%q) = %x, %v; want %x", tc.in, got, err, k)
			}
			continue
		}
		if err == nil || !strings.Contains(mayfly.ErrorMessage(err), tc.wantErr) {
			t.Errorf("ParseKey(%q) error = %v; want one saying %q", tc.in, err, tc.wantErr)
		}
		if err != nil && tc.in != "" && strings.TrimSpace(tc.in) != "" && strings.Contains(err.Error(), strings.TrimSpace(tc.in)) {
			t.Errorf("ParseKey(%q) error quotes the input: %v", tc.in, err)
		}
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte(NewKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(Config{KeyFile: file}, nil); err != nil {
		t.Fatalf("LoadKey(file) = %v", err)
	}
	env := map[string]string{"K": NewKey()}
	if _, err := LoadKey(Config{KeyEnv: "K"}, func(k string) string { return env[k] }); err != nil {
		t.Fatalf("LoadKey(env) = %v", err)
	}
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{KeyFile: filepath.Join(dir, "missing")}, "does not exist"},
		{Config{KeyEnv: "UNSET"}, "UNSET is not set"},
		{Config{KeyEnv: "K", KeyFile: file}, "not both"},
		{Config{KeyEnv: "1X"}, "not an environment variable name"},
		{Config{}, "no master key"},
	} {
		_, err := LoadKey(tc.c, func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadKey(%+v) = %v; want an error saying %q", tc.c, err, tc.want)
		}
	}
}

func FuzzParseKey(f *testing.F) {
	f.Add([]byte(NewKey()))
	f.Add([]byte(base64.StdEncoding.EncodeToString(key(1))))
	f.Add([]byte(""))
	f.Add([]byte("zz"))
	f.Fuzz(func(t *testing.T, in []byte) {
		k, err := ParseKey(in)
		if err == nil && len(k) != KeySize {
			t.Fatalf("ParseKey accepted a %d-byte key", len(k))
		}
	})
}

func FuzzOpen(f *testing.F) {
	st, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "f.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	kr, err := Open(context.Background(), st, key(1))
	if err != nil {
		f.Fatal(err)
	}
	good := kr.Seal("p", []byte("x"))
	f.Add(good)
	f.Add("")
	f.Add(".")
	f.Add("abc.v1.")
	f.Add(kr.active + ".v1.AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := kr.Open("p", s)
		if err == nil && s != good && string(p) != "x" {
			t.Fatalf("Open(%q) = %q: a value not sealed by the keyring opened", s, p)
		}
	})
}
