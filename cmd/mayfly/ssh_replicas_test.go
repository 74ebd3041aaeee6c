package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/httpapi"
	gossh "golang.org/x/crypto/ssh"
)

// TestReplicasShareSSHStateThroughTheStore: replicas of a PostgreSQL store,
// each with a state_dir of its own, keep one SSH CA, one record of issued and
// revoked certificates and one SSH gateway host key in the store: a
// certificate issued through one is revoked through the other and in the
// revocation list of both, and nothing of the CA is written to either
// state_dir.
func TestReplicasShareSSHStateThroughTheStore(t *testing.T) {
	t.Setenv("MAYFLY_SSH_CA_PASSPHRASE", "correct horse battery staple")
	a, b, _ := twoReplicas(t, worldOpts{
		// krl_file is relative to each replica's config: a file each.
		targets:   "  - {name: local-ssh, kind: ssh, address: \"127.0.0.1:2222\", prefix: mfsd_, krl_file: revoked.krl, grants: {deploy: {principals: [deploy]}}}\n",
		extraYAML: "  - {name: ssh, groups: [eng], targets: [local-ssh], grants: [deploy], max_duration: 1h, approvals: 0}\ngateway:\n  ssh: {listen: \"127.0.0.1:0\"}\n",
	})
	if n := strings.Count(a.stderr.String()+b.stderr.String(), "ssh ca: made a new CA in the store"); n != 1 {
		t.Errorf("%d replicas logged making a new CA in the store; want the first alone", n)
	}
	hostKey := regexp.MustCompile(`ssh gateway ready.*host_key=(SHA256:\S+)`)
	ka, kb := hostKey.FindStringSubmatch(a.stderr.String()), hostKey.FindStringSubmatch(b.stderr.String())
	if ka == nil || kb == nil || ka[1] != kb[1] {
		t.Errorf("the replicas' SSH gateways present host keys %q and %q; want one, kept in the store", ka, kb)
	}
	for _, w := range []*world{a, b} {
		if b, err := os.ReadFile(w.cfg); err != nil || strings.Contains(string(b), "state_dir") {
			t.Fatalf("replica config names a state_dir (%v); want each its own default", err)
		}
	}
	if a.ok("carol", nil, "ssh", "ca") != b.ok("carol", nil, "ssh", "ca") {
		t.Fatalf("the replicas list different CA keys")
	}
	var r reqOut
	a.ok("alice", &r, "request", "local-ssh/deploy", "--for", "10m", "--reason", "INC-5 ssh", "-o", "json")
	var c credsOut2
	a.ok("alice", &c, "creds", r.ID, "-o", "json")
	// Revoked through B, which never saw the certificate issued.
	b.ok("carol", nil, "revoke", c.LeaseID)
	// A's krl_file follows within seconds, before anything asks A for
	// the list (which would rewrite the file too). B's is current at once.
	fileOf := func(w *world) string {
		k, err := os.ReadFile(filepath.Join(filepath.Dir(w.cfg), "revoked.krl"))
		if err != nil {
			t.Fatalf("krl_file: %v", err)
		}
		return string(k)
	}
	if !krlRevokes(t, fileOf(b), c.Certificate) {
		t.Errorf("B's krl_file does not revoke the certificate B revoked")
	}
	deadline := time.Now().Add(3 * krlFollowEvery)
	for !krlRevokes(t, fileOf(a), c.Certificate) {
		if time.Now().After(deadline) {
			t.Fatalf("A's krl_file still accepts the certificate revoked through B after %s", 3*krlFollowEvery)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, w := range map[string]*world{"A": a, "B": b} {
		krl := w.ok("carol", nil, "ssh", "revoked-keys", "--target", "local-ssh")
		if !krlRevokes(t, krl, c.Certificate) {
			t.Errorf("the revocation list from %s does not revoke the certificate issued through A and revoked through B", name)
		}
	}
	for _, w := range []*world{a, b} {
		dir := filepath.Join(filepath.Dir(w.cfg), "mayfly-state")
		if files, _ := filepath.Glob(filepath.Join(dir, "ssh-ca", "*")); len(files) != 0 {
			t.Errorf("CA files in a replica's state_dir: %q; want the CA in the store alone", files)
		}
	}
}

// TestReplicasShareTheSSHCA: replicas of a PostgreSQL store are one SSH CA.
// A key published or activated through one replica is what every other
// replica lists for the hosts and signs with from the next call, and
// replicas that sign meanwhile never undo the rotation.
func TestReplicasShareTheSSHCA(t *testing.T) {
	t.Setenv("MAYFLY_SSH_CA_PASSPHRASE", "correct horse battery staple")
	a, b, _ := twoReplicas(t, worldOpts{
		targets:   "  - {name: local-ssh, kind: ssh, address: \"127.0.0.1:2222\", prefix: mfsd_, grants: {deploy: {principals: [deploy]}}}\n",
		extraYAML: "  - {name: ssh, groups: [eng], targets: [local-ssh], grants: [deploy], max_duration: 1h, approvals: 0}\n",
	})
	getCA := func(w *world) (c httpapi.CAView) {
		t.Helper()
		w.ok("carol", &c, "ssh", "ca", "-o", "json")
		return c
	}
	signedBy := func(w *world, what string) string {
		t.Helper()
		var r reqOut
		w.ok("alice", &r, "request", "local-ssh/deploy", "--for", "10m", "--reason", "INC-6 "+what, "-o", "json")
		var c credsOut2
		w.ok("alice", &c, "creds", r.ID, "-o", "json")
		pub, _, _, _, err := gossh.ParseAuthorizedKey([]byte(c.Certificate))
		if err != nil {
			t.Fatalf("%s: certificate does not parse: %v", what, err)
		}
		return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(pub.(*gossh.Certificate).SignatureKey)))
	}
	keyOf := func(line string) string { return strings.Join(strings.Fields(line)[:2], " ") }

	first := getCA(b)
	if got := getCA(a); got.SigningKey != first.SigningKey {
		t.Fatalf("the replicas sign with different keys: %s and %s", got.SigningKey, first.SigningKey)
	}
	if got := signedBy(b, "before"); got != keyOf(first.SigningKey) {
		t.Fatalf("B signed with %s; want %s", got, first.SigningKey)
	}

	var prep httpapi.CAView
	a.ok("carol", &prep, "ssh", "ca", "rotate", "--reason", "yearly rotation", "-o", "json")
	// B signs again (its certificate is valid longer than any before), then
	// lists what hosts must trust: the next key A published must be there.
	signedBy(b, "while the next key is published")
	if got := getCA(b); got.NextKey != prep.NextKey || !slices.Contains(got.PublicKeys, prep.NextKey) {
		t.Fatalf("after A published the next key, B lists %+v; want next key %s", got, prep.NextKey)
	}
	if got := getCA(a); got.NextKey != prep.NextKey {
		t.Fatalf("after B signed, A lists %+v; want next key %s still published", got, prep.NextKey)
	}

	a.ok("carol", nil, "ssh", "ca", "rotate", "--activate", "--reason", "yearly rotation")
	if got := signedBy(b, "after activation"); got != keyOf(prep.NextKey) {
		t.Fatalf("after A activated the next key, B signed with %s; want %s", got, prep.NextKey)
	}
	for name, w := range map[string]*world{"A": a, "B": b} {
		got := getCA(w)
		if got.SigningKey != prep.NextKey || got.NextKey != "" || !slices.Contains(got.PublicKeys, first.SigningKey) {
			t.Errorf("after activation, %s lists %+v; want %s signing and the old key still trusted (its certificates are valid)", name, got, prep.NextKey)
		}
	}
}

// TestGatewayHostKeyMadeOnce: replicas that share a state_dir and start at
// once present one SSH gateway host key, not one each.
func TestGatewayHostKeyMadeOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "ssh-gateway-host-key")
	keys := make(chan string, 8)
	for range cap(keys) {
		go func() {
			s, err := loadOrCreateHostKey(path)
			if err != nil {
				keys <- "error: " + err.Error()
				return
			}
			keys <- string(gossh.MarshalAuthorizedKey(s.PublicKey()))
		}()
	}
	first := <-keys
	for range cap(keys) - 1 {
		if k := <-keys; k != first {
			t.Fatalf("replicas starting at once got host keys %q and %q; want one", first, k)
		}
	}
	if strings.HasPrefix(first, "error") {
		t.Fatal(first)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("host key file: %v, %v; want mode 600", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

// krlRevokes asks ssh-keygen whether the key revocation list krl revokes
// the certificate (an authorized_keys line).
func krlRevokes(t *testing.T, krl, cert string) bool {
	t.Helper()
	dir := t.TempDir()
	kf, cf := filepath.Join(dir, "krl"), filepath.Join(dir, "cert.pub")
	if err := os.WriteFile(kf, []byte(krl), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cf, []byte(cert+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ssh-keygen", "-Q", "-f", kf, cf).CombinedOutput()
	switch {
	case err == nil && strings.Contains(string(out), "ok"):
		return false
	case exitCode(err) == 1 && strings.Contains(string(out), "REVOKED"):
		return true
	}
	t.Fatalf("ssh-keygen -Q: %v\n%s", err, out)
	return false
}
