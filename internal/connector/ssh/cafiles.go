package ssh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/mayflyhq/mayfly"
	gossh "golang.org/x/crypto/ssh"
)

// caFiles keeps a CA's state (caStateFile) and its encrypted keys: files
// in a directory (caDirFiles) or settings of a store replicas share (storeCA).
type caFiles interface {
	// locked runs fn holding the CA's lock across processes, exclusive
	// or shared; fn calls the methods below.
	locked(exclusive bool, fn func() error) error
	// readState returns the state, nil when there is none.
	readState() ([]byte, error)
	writeState(b []byte) error
	readKey(name string) ([]byte, error)
	writeKey(name string, b []byte) error
	removeKey(name string)
	close() error
}

// caDirFiles is a CA kept in a directory, locked with flock on caLockFile.
type caDirFiles struct {
	dir      string
	lockFile *os.File
}

func openCADirFiles(dir string) (*caDirFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ssh ca: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, caLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		// A reader without write access to the directory (mayfly doctor
		// run as another user) can still lock an existing file.
		if lf, err = os.Open(filepath.Join(dir, caLockFile)); err != nil {
			return nil, fmt.Errorf("ssh ca: %w", err)
		}
	}
	return &caDirFiles{dir: dir, lockFile: lf}, nil
}

func (d *caDirFiles) close() error { return d.lockFile.Close() }

func (d *caDirFiles) locked(exclusive bool, fn func() error) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := flock(d.lockFile, how); err != nil {
		return fmt.Errorf("ssh ca: lock %s: %w", caLockFile, err)
	}
	defer flock(d.lockFile, syscall.LOCK_UN)
	return fn()
}

func (d *caDirFiles) readState() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, caStateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (d *caDirFiles) writeState(b []byte) error {
	return writeFileAtomic(filepath.Join(d.dir, caStateFile), b, 0o600)
}

func (d *caDirFiles) readKey(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(d.dir, name))
}

func (d *caDirFiles) writeKey(name string, b []byte) error {
	return writeFileAtomic(filepath.Join(d.dir, name), b, 0o600)
}

func (d *caDirFiles) removeKey(name string) { os.Remove(filepath.Join(d.dir, name)) }

// Settings of a CA kept in the store.
const (
	caStateSetting  = "ssh_ca.state"
	caKeySettingPre = "ssh_ca.key."
)

// storeCA is a CA kept in settings of a store replicas share: its state
// and each key (encrypted with the CA's passphrase, as in a directory). A
// write transaction locks the state setting as it reads it.
type storeCA struct {
	st mayfly.Store
	// legacy is the CA directory whose CA is copied into the store when
	// the store has none; empty for none.
	legacy string
	tx     mayfly.Tx // set inside locked
}

func (s *storeCA) close() error { return nil }

func (s *storeCA) locked(exclusive bool, fn func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	run := s.st.View
	if exclusive {
		run = s.st.Update
	}
	return run(ctx, func(tx mayfly.Tx) error {
		s.tx = tx
		defer func() { s.tx = nil }()
		if exclusive {
			if err := s.importLegacy(); err != nil {
				return err
			}
		}
		return fn()
	})
}

// importLegacy copies the CA of the legacy directory into the store when
// the store has no CA and the directory has one.
func (s *storeCA) importLegacy() error {
	if s.legacy == "" {
		return nil
	}
	if b, err := s.readState(); err != nil || b != nil {
		return err
	}
	d := &caDirFiles{dir: s.legacy}
	b, err := d.readState()
	if err != nil || b == nil {
		return err
	}
	var keys []caKey
	if err := json.Unmarshal(b, &keys); err != nil {
		return fmt.Errorf("ssh ca: import %s: %w", filepath.Join(s.legacy, caStateFile), err)
	}
	for _, k := range keys {
		if k.File == "" {
			continue
		}
		pemBytes, err := d.readKey(k.File)
		if err != nil {
			return fmt.Errorf("ssh ca: import: %w", err)
		}
		if err := s.writeKey(k.File, pemBytes); err != nil {
			return err
		}
	}
	return s.writeState(b)
}

func (s *storeCA) get(key string) ([]byte, error) {
	v, err := s.tx.GetSetting(key)
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []byte(v), nil
}

func (s *storeCA) readState() ([]byte, error) { return s.get(caStateSetting) }

func (s *storeCA) writeState(b []byte) error { return s.tx.PutSetting(caStateSetting, string(b)) }

func (s *storeCA) readKey(name string) ([]byte, error) {
	b, err := s.get(caKeySettingPre + name)
	if err == nil && b == nil {
		return nil, fmt.Errorf("key %s: not in the store", name)
	}
	return b, err
}

func (s *storeCA) writeKey(name string, b []byte) error {
	return s.tx.PutSetting(caKeySettingPre+name, string(b))
}

func (s *storeCA) removeKey(name string) { s.tx.DeleteSetting(caKeySettingPre + name) }

// hostKeySetting keeps the SSH gateway's host key in a store replicas
// share, encrypted with the CA's passphrase.
const hostKeySetting = "ssh_gateway.host_key"

// SharedHostKey returns the SSH gateway's host key kept in st, making it on
// first use: from legacyFile when that holds one (an unencrypted OpenSSH
// private key, the gateway's key before the store kept it), a new ed25519
// key otherwise. It is stored encrypted with the CA's passphrase. Replicas
// starting at once get one key.
func (ca *CA) SharedHostKey(st mayfly.Store, legacyFile string) (gossh.Signer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	var signer gossh.Signer
	err := st.Update(ctx, func(tx mayfly.Tx) error {
		v, err := tx.GetSetting(hostKeySetting)
		if err == nil {
			raw, err := gossh.ParseRawPrivateKeyWithPassphrase([]byte(v), ca.passphrase)
			if err != nil {
				return fmt.Errorf("ssh gateway host key in the store: %w", err)
			}
			signer, err = gossh.NewSignerFromKey(raw)
			return err
		}
		if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			return err
		}
		var priv any
		if b, err := os.ReadFile(legacyFile); err == nil && legacyFile != "" {
			if priv, err = gossh.ParseRawPrivateKey(b); err != nil {
				return fmt.Errorf("import %s: not an unencrypted OpenSSH private key", legacyFile)
			}
		} else {
			_, key, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			priv = key
		}
		block, err := gossh.MarshalPrivateKeyWithPassphrase(priv, "mayfly ssh gateway", ca.passphrase)
		if err != nil {
			return err
		}
		if signer, err = gossh.NewSignerFromKey(priv); err != nil {
			return err
		}
		return tx.PutSetting(hostKeySetting, string(pem.EncodeToMemory(block)))
	})
	if err != nil {
		return nil, err
	}
	return signer, nil
}
