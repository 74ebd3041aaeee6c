package ssh

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
)

func parseKRLFile(t *testing.T, path string) *krl {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := parseKRL(b)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return k
}

func TestKRLRoundTrip(t *testing.T) {
	caPub, _ := newKeyPair(t)
	key, _ := newKeyPair(t)
	in := &krl{
		Version: 7, Generated: time.Unix(1700000000, 0), Comment: "mayfly",
		Certs: []krlCerts{
			{CA: caPub.Marshal(), Serials: []uint64{9, 3, 9, 1 << 63}},
			{KeyIDs: []string{"lse_b", "lse_a"}},
		},
		Keys: [][]byte{key.Marshal()},
	}
	data := in.marshal()
	if !strings.HasPrefix(string(data), "SSHKRL\n\x00") {
		t.Fatalf("KRL starts %q; want the SSHKRL magic", data[:8])
	}
	out, err := parseKRL(data)
	if err != nil {
		t.Fatalf("parseKRL: %v", err)
	}
	if out.Version != 7 || !out.Generated.Equal(in.Generated) || out.Comment != "mayfly" {
		t.Errorf("header = %d %v %q; want 7 %v mayfly", out.Version, out.Generated, out.Comment, in.Generated)
	}
	// Canonical order: the wildcard CA (empty) sorts first; serials sorted
	// and deduplicated.
	if len(out.Certs) != 2 {
		t.Fatalf("certificate sections = %d; want 2", len(out.Certs))
	}
	if got, want := out.Certs[0].KeyIDs, []string{"lse_a", "lse_b"}; out.Certs[0].CA != nil || !slices.Equal(got, want) {
		t.Errorf("wildcard section = %x %q; want key IDs %q", out.Certs[0].CA, got, want)
	}
	if got, want := out.Certs[1].Serials, []uint64{3, 9, 1 << 63}; !slices.Equal(got, want) {
		t.Errorf("serials = %v; want %v", got, want)
	}
	if len(out.Keys) != 1 || string(out.Keys[0]) != string(key.Marshal()) {
		t.Errorf("explicit keys = %x; want the key", out.Keys)
	}
	if string((&krl{Version: 7, Generated: in.Generated, Comment: "mayfly", Certs: []krlCerts{in.Certs[1], in.Certs[0]}, Keys: in.Keys}).marshal()) != string(data) {
		t.Errorf("the same content in another order encodes differently")
	}
	for _, cut := range []int{4, 20, len(data) - 3} {
		if _, err := parseKRL(data[:cut]); err == nil {
			t.Errorf("parseKRL(truncated to %d) succeeded", cut)
		}
	}
}

// TestKRLAgainstSSHKeygen has OpenSSH's own reader (ssh-keygen -Q) check
// the list: revoked certificates are reported, others are not.
func TestKRLAgainstSSHKeygen(t *testing.T) {
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		needSSHD(t)
		t.Fatalf("ssh-keygen: %v", err)
	}
	ca := sharedCA(t)
	dir := t.TempDir()
	krlFile := filepath.Join(dir, "revoked.krl")
	c := newConnector(t, mayfly.Target{Name: "k", Kind: mayfly.KindSSH, Address: "127.0.0.1:22", KRLFile: krlFile}, ca, t.TempDir())
	exp := time.Now().Add(time.Hour)
	grant := mayfly.Grant{Principals: []string{"u"}}
	ownPub, _ := newKeyPair(t)
	creds := map[string]mayfly.Credential{}
	for _, lease := range []string{"gen_revoked", "gen_live", "own_revoked"} {
		req := mayfly.ProvisionRequest{LeaseID: "lse_" + lease, Username: "mf_" + lease, ExpiresAt: exp, Grant: grant}
		if strings.HasPrefix(lease, "own") {
			req.PublicKey = authorizedLine(ownPub)
		}
		creds[lease] = provisionT(t, c, req)
	}
	for _, lease := range []string{"gen_revoked", "own_revoked"} {
		if err := c.Revoke(testCtx(t), mayfly.RevokeRequest{LeaseID: "lse_" + lease, Username: "mf_" + lease, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	// A certificate revoked only by its key ID: same lease ID, signed
	// outside the connector's records.
	stray, err := ca.Sign(CertRequest{Key: ownPub, KeyID: "lse_own_revoked", Principals: []string{"u"}, ValidAfter: time.Now(), ValidBefore: exp})
	if err != nil {
		t.Fatal(err)
	}
	creds["stray_same_lease"] = mayfly.Credential{Certificate: authorizedLine(stray)}

	got, err := c.RevokedKeys()
	if err != nil {
		t.Fatal(err)
	}
	if file, _ := os.ReadFile(krlFile); string(file) != string(got) {
		t.Errorf("RevokedKeys() differs from the krl_file content")
	}
	for name, want := range map[string]bool{"gen_revoked": true, "own_revoked": true, "stray_same_lease": true, "gen_live": false} {
		certFile := filepath.Join(dir, name+"-cert.pub")
		writeFile(t, certFile, []byte(creds[name].Certificate+"\n"), 0o644)
		out, err := exec.Command(keygen, "-Q", "-f", krlFile, certFile).CombinedOutput()
		revoked := strings.Contains(string(out), "REVOKED")
		if revoked != want || (err == nil) == want {
			t.Errorf("ssh-keygen -Q %s: revoked=%v (err %v, %q); want revoked=%v", name, revoked, err, out, want)
		}
	}
	// The key the user brought is not revoked as a plain key.
	ownFile := filepath.Join(dir, "own.pub")
	writeFile(t, ownFile, []byte(authorizedLine(ownPub)+"\n"), 0o644)
	if out, err := exec.Command(keygen, "-Q", "-f", krlFile, ownFile).CombinedOutput(); err != nil {
		t.Errorf("ssh-keygen -Q (plain key the user brought): %v: %s; want not revoked", err, out)
	}
	// A generated key is revoked as a plain key too.
	genKey, err := gossh.ParsePrivateKey([]byte(creds["gen_revoked"].PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	genFile := filepath.Join(dir, "gen.pub")
	writeFile(t, genFile, []byte(authorizedLine(genKey.PublicKey())+"\n"), 0o644)
	if out, err := exec.Command(keygen, "-Q", "-f", krlFile, genFile).CombinedOutput(); err == nil {
		t.Errorf("ssh-keygen -Q (generated key of a revoked lease): %s; want revoked", out)
	}
}
