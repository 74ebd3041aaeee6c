package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
)

// Replicas that serve SSH leases share one state directory (docs/ha.md):
// the SSH CA, the journals the revocation lists are built from and the SSH
// gateway's host key are files in it. The directory holds a random id
// (stateIDFile) that the store records (stateDirSetting) when the first
// replica starts; a replica whose directory holds another id, or none while
// the store has one, is not using the others' directory.
const (
	stateIDFile     = "state-id"
	stateDirSetting = "state_dir.id"
)

// keepsSSHState reports whether cfg keeps files other replicas need in its
// state directory.
func keepsSSHState(cfg *config.Config) bool {
	if cfg.Gateway.SSH != nil {
		return true
	}
	for _, t := range cfg.Targets {
		if t.Kind == mayfly.KindSSH {
			return true
		}
	}
	return false
}

// checkStateDir checks that a replica of a PostgreSQL store that serves
// SSH leases uses the state directory the store's replicas use. When it
// does not, it returns a stateDirMismatch before anything (a new CA) is made
// in it, and the replica must not serve SSH.
func checkStateDir(ctx context.Context, st mayfly.Store, cfg *config.Config) error {
	if cfg.Store.Postgres == nil || !keepsSSHState(cfg) {
		return nil
	}
	dir := cfg.StateDir
	path := filepath.Join(dir, stateIDFile)
	local, err := readStateID(path)
	if err != nil {
		return err
	}
	var stored string
	err = st.Update(ctx, func(tx mayfly.Tx) error {
		v, err := tx.GetSetting(stateDirSetting)
		if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			stored = v
			return err
		}
		// The first replica to keep SSH state on this store.
		if local == "" {
			if local, err = makeStateID(dir, path); err != nil {
				return err
			}
		}
		stored = local
		return tx.PutSetting(stateDirSetting, local)
	})
	if err != nil {
		return fmt.Errorf("check the state directory: %w", err)
	}
	if local == stored {
		return nil
	}
	found := "holds no " + stateIDFile
	if local != "" {
		found = fmt.Sprintf("holds state id %s", local)
	}
	return stateDirMismatch{mayfly.Errorf(mayfly.EUNAVAILABLE, "%s: state_dir %s %s, but the replicas of this store use the one with state id %s: "+
		"replicas that serve SSH leases must share one state_dir (the SSH CA, revocation journals and gateway host key are files in it), "+
		"or this one would sign with its own CA and publish revocation lists without the others' revocations; so this replica serves no SSH lease "+
		"and no SSH gateway until the same directory is mounted here and it restarts (docs/ha.md). "+
		"If this is the only replica and its state directory was replaced on purpose, delete the setting %q from the store's settings table and restart",
		cfg.Path, dir, found, stored, stateDirSetting)}
}

// stateDirMismatch is checkStateDir's refusal: the replica runs, but not
// its SSH targets nor its SSH gateway.
type stateDirMismatch struct{ error }

func (e stateDirMismatch) Unwrap() error { return e.error }

// readStateID returns the id in path, or "" when there is none.
func readStateID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the state directory's id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// makeStateID writes a new id to path, or returns the one another replica
// sharing the directory wrote first.
func makeStateID(dir, path string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	b := make([]byte, 16)
	rand.Read(b)
	id := hex.EncodeToString(b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readStateID(path)
	}
	if err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	if _, err := f.WriteString(id + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("state directory: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("state directory: %w", err)
	}
	return id, f.Close()
}
