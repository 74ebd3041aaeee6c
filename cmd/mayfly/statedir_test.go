package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly/internal/httpapi"
	gossh "golang.org/x/crypto/ssh"
)

// TestReplicasShareTheStateDir: on a PostgreSQL store, replicas with an SSH
// target and one state_dir start, and the store records that directory's
// id. A replica with a state_dir of its own logs why and serves no SSH lease
// (it makes no CA there, which hosts would not trust, nor revocation lists
// lacking the others' revocations), while its other targets work.
func TestReplicasShareTheStateDir(t *testing.T) {
	t.Setenv("MAYFLY_SSH_CA_PASSPHRASE", "correct horse battery staple")
	shared := t.TempDir()
	a, _, _ := twoReplicas(t, worldOpts{
		targets:   "  - {name: local-ssh, kind: ssh, address: \"127.0.0.1:2222\", prefix: mfsd_, grants: {deploy: {principals: [deploy]}}}\n",
		extraYAML: "  - {name: ssh, groups: [eng], targets: [local-ssh], grants: [deploy], max_duration: 1h, approvals: 0}\nstate_dir: " + shared + "\n",
	})
	id, err := readStateID(filepath.Join(shared, stateIDFile))
	if err != nil || len(id) != 32 {
		t.Fatalf("state id in the shared state_dir = %q, %v; want 32 hex digits", id, err)
	}
	if _, err := os.Stat(filepath.Join(shared, "ssh-ca")); err != nil {
		t.Fatalf("no SSH CA in the shared state_dir: %v", err)
	}

	// A third replica with a state_dir of its own starts, but serves no SSH
	// lease; everything else works through it.
	own := t.TempDir()
	b, err := os.ReadFile(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &world{t: t, dir: t.TempDir(), addr: freeAddr(t), tokens: a.tokens, stderr: &syncBuffer{}}
	cfg := strings.Replace(string(b), "state_dir: "+shared, "state_dir: "+own, 1)
	cfg = strings.Replace(cfg, "listen: "+a.addr, "listen: "+c.addr, 1)
	c.cfg = filepath.Join(c.dir, "mayfly.yaml")
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c.startInProcess()
	t.Cleanup(c.stop)
	if !strings.Contains(c.stderr.String(), "state_dir "+own+" holds no state-id, but the replicas of this store use the one with state id "+id) {
		t.Errorf("the log of a replica with a state_dir of its own does not say so:\n%s", c.stderr.String())
	}
	var r reqOut
	c.ok("alice", &r, "request", "local-pg/readonly", "--for", "10m", "--reason", "INC-5 other kinds", "--creds", "-o", "json")
	var lr reqOut
	c.ok("alice", &lr, "request", "local-ssh/deploy", "--for", "10m", "--reason", "INC-5 ssh", "-o", "json")
	_, err = c.try("alice", "creds", lr.ID, "-o", "json")
	if exitCode(err) != 5 || err == nil || !strings.Contains(err.Error(), "serves no SSH lease") || !strings.Contains(err.Error(), "docs/ha.md") {
		t.Errorf("creds of an SSH lease through the replica with its own state_dir: exit %d, %v; want 5 and why", exitCode(err), err)
	}
	if entries, _ := os.ReadDir(own); len(entries) != 0 {
		t.Errorf("the replica made %d entries in its own state_dir (%v); want none (no CA of its own)", len(entries), entries)
	}
	// Through a replica on the shared directory, SSH leases are served.
	var ar reqOut
	a.ok("alice", &ar, "request", "local-ssh/deploy", "--for", "10m", "--reason", "INC-5 ssh again", "-o", "json")
	var sc credsOut
	a.ok("alice", &sc, "creds", ar.ID, "-o", "json")
	if sc.LeaseID == "" {
		t.Errorf("creds of an SSH lease through a replica on the shared state_dir: %+v", sc)
	}
}

// TestReplicasShareTheSSHCA: replicas on one state_dir are one SSH CA. A
// key published or activated through one replica is what every other
// replica lists for the hosts and signs with from the next call, and
// replicas that sign meanwhile never undo the rotation.
func TestReplicasShareTheSSHCA(t *testing.T) {
	t.Setenv("MAYFLY_SSH_CA_PASSPHRASE", "correct horse battery staple")
	shared := t.TempDir()
	a, b, _ := twoReplicas(t, worldOpts{
		targets:   "  - {name: local-ssh, kind: ssh, address: \"127.0.0.1:2222\", prefix: mfsd_, grants: {deploy: {principals: [deploy]}}}\n",
		extraYAML: "  - {name: ssh, groups: [eng], targets: [local-ssh], grants: [deploy], max_duration: 1h, approvals: 0}\nstate_dir: " + shared + "\n",
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
