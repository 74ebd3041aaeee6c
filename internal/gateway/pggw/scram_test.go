package pggw

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly/internal/connector/postgres"
)

// clientProof computes the client side of SCRAM-SHA-256 (RFC 5802) for
// the test, independently of the server code.
func clientProof(t *testing.T, password, clientFirstBare, serverFirst, withoutProof string) string {
	t.Helper()
	var salt64, iter string
	for _, a := range strings.Split(serverFirst, ",") {
		switch {
		case strings.HasPrefix(a, "s="):
			salt64 = a[2:]
		case strings.HasPrefix(a, "i="):
			iter = a[2:]
		}
	}
	salt, _ := base64.StdEncoding.DecodeString(salt64)
	n := 0
	for _, c := range iter {
		n = n*10 + int(c-'0')
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, n, 32)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(k []byte, m string) []byte { h := hmac.New(sha256.New, k); h.Write([]byte(m)); return h.Sum(nil) }
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	sig := mac(stored[:], clientFirstBare+","+serverFirst+","+withoutProof)
	for i := range clientKey {
		clientKey[i] ^= sig[i]
	}
	return base64.StdEncoding.EncodeToString(clientKey)
}

func exchange(t *testing.T, v verifier, password, gs2 string) (string, error) {
	t.Helper()
	s := &scramServer{v: v}
	bare := "n=,r=rOprNGfwEbeRWgbNEkqO"
	sf, err := s.clientFirst([]byte(gs2 + bare))
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(sf, "r=rOprNGfwEbeRWgbNEkqO") {
		t.Fatalf("server-first %q does not extend the client nonce", sf)
	}
	nonce := strings.TrimPrefix(strings.Split(sf, ",")[0], "r=")
	without := "c=" + base64.StdEncoding.EncodeToString([]byte(gs2)) + ",r=" + nonce
	return s.clientFinal([]byte(without + ",p=" + clientProof(t, password, bare, sf, without)))
}

func TestSCRAM(t *testing.T) {
	v, err := parseVerifier(postgres.SCRAMVerifier("s3cret", []byte("0123456789abcdef"), 4096))
	if err != nil {
		t.Fatal(err)
	}
	for _, gs2 := range []string{"n,,", "y,,"} {
		final, err := exchange(t, v, "s3cret", gs2)
		if err != nil || !strings.HasPrefix(final, "v=") {
			t.Errorf("right password (%s): %q, %v; want a server signature", gs2, final, err)
		}
	}
	if _, err := exchange(t, v, "wrong", "n,,"); err != errBadProof {
		t.Errorf("wrong password: %v; want errBadProof", err)
	}
	if _, err := exchange(t, decoyVerifier(), "s3cret", "n,,"); err != errBadProof {
		t.Errorf("decoy verifier: %v; want errBadProof", err)
	}
	s := &scramServer{v: v}
	if _, err := s.clientFirst([]byte("p=tls-server-end-point,,n=,r=abc")); err == nil || !strings.Contains(err.Error(), "channel binding") {
		t.Errorf("channel binding request: %v; want refused with a reason", err)
	}
}

func TestParseVerifier(t *testing.T) {
	good := postgres.SCRAMVerifier("x", []byte("saltsaltsaltsalt"), 2)
	if v, err := parseVerifier(good); err != nil || v.iterations != 2 {
		t.Fatalf("parseVerifier(%q) = %+v, %v", good, v, err)
	}
	for _, bad := range []string{"", "md5abc", "SCRAM-SHA-256$", "SCRAM-SHA-256$0:c2FsdA==$a:b", "SCRAM-SHA-256$4096:!!$a:b",
		strings.Replace(good, "$2:", "$-1:", 1), good[:len(good)-4]} {
		if _, err := parseVerifier(bad); err == nil {
			t.Errorf("parseVerifier(%q) = nil error; want refused", bad)
		}
	}
}

func FuzzParseVerifier(f *testing.F) {
	f.Add(postgres.SCRAMVerifier("x", []byte("saltsaltsaltsalt"), 4096))
	f.Add("SCRAM-SHA-256$1:AA==$AA==:AA==")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseVerifier(s)
		if err == nil && (v.iterations < 1 || len(v.storedKey) != 32 || len(v.serverKey) != 32 || len(v.salt) == 0) {
			t.Fatalf("parseVerifier(%q) accepted %+v", s, v)
		}
	})
}

// FuzzSCRAMMessages feeds arbitrary client messages to the server side:
// it never panics and never accepts a proof it did not check.
func FuzzSCRAMMessages(f *testing.F) {
	f.Add([]byte("n,,n=,r=abc"), []byte("c=biws,r=abcXYZ,p=AAAA"))
	f.Add([]byte("y,,n=user,r=x"), []byte("c=eSws,r=x,p="))
	f.Add([]byte("p=tls,,n=,r=a"), []byte(""))
	f.Add([]byte("n,a=admin,n=,r=a"), []byte("c=,r=,p=,p="))
	v, _ := parseVerifier(postgres.SCRAMVerifier("s3cret", []byte("0123456789abcdef"), 1))
	f.Fuzz(func(t *testing.T, first, final []byte) {
		s := &scramServer{v: v}
		if _, err := s.clientFirst(first); err != nil {
			return
		}
		out, err := s.clientFinal(final)
		if err == nil && !strings.HasPrefix(out, "v=") {
			t.Fatalf("accepted with %q", out)
		}
		if err == nil {
			// Only a proof made from the password passes.
			t.Fatalf("a fuzzed final message %q passed the proof check", final)
		}
	})
}
