package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
