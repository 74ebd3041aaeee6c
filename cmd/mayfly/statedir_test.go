package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReplicasShareTheStateDir: on a PostgreSQL store, replicas with an SSH
// target and one state_dir start, and the store records that directory's
// id; a replica with a state_dir of its own refuses to start, saying why,
// before it makes a CA there (one that hosts would not trust, with
// revocation lists lacking the others' revocations).
func TestReplicasShareTheStateDir(t *testing.T) {
	t.Setenv("MAYFLY_SSH_CA_PASSPHRASE", "correct horse battery staple")
	shared := t.TempDir()
	a, _, _ := twoReplicas(t, worldOpts{
		targets:   "  - {name: local-ssh, kind: ssh, address: \"127.0.0.1:2222\", prefix: mfsd_, grants: {deploy: {principals: [deploy]}}}\n",
		extraYAML: "state_dir: " + shared + "\n",
	})
	id, err := readStateID(filepath.Join(shared, stateIDFile))
	if err != nil || len(id) != 32 {
		t.Fatalf("state id in the shared state_dir = %q, %v; want 32 hex digits", id, err)
	}
	if _, err := os.Stat(filepath.Join(shared, "ssh-ca")); err != nil {
		t.Fatalf("no SSH CA in the shared state_dir: %v", err)
	}

	own := t.TempDir()
	b, err := os.ReadFile(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "state_dir: "+shared, "state_dir: "+own, 1)
	cfg = strings.Replace(cfg, "listen: "+a.addr, "listen: "+freeAddr(t), 1)
	path := filepath.Join(t.TempDir(), "mayfly.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	err = run(ctx, []string{"server", "--config", path}, os.Getenv, strings.NewReader(""), &bytes.Buffer{}, &stderr)
	t.Logf("refused: %v", err)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("a replica with a state_dir of its own: %v; want it to refuse to start", err)
	}
	for _, want := range []string{"state_dir " + own + " holds no state-id", "state id " + id, "docs/ha.md", `"state_dir.id"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q; want %q in it", err, want)
		}
	}
	if entries, _ := os.ReadDir(own); len(entries) != 0 {
		t.Errorf("the refused replica made %d entries in its state_dir (%v); want none", len(entries), entries)
	}
}
