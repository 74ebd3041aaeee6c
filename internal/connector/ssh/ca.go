package ssh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
)

// caStateFile lists the CA's keys, current first. It holds no secret.
const caStateFile = "ca.json"

// caLockFile is locked while a process reads or changes the CA's state.
const caLockFile = "ca.lock"

// markStep rounds up the recorded latest expiry of a signing key, so that
// signing certificates with steadily growing expiries rewrites the CA state
// at most once per step. A retired key stays trusted at most this much longer
// than its last certificate.
const markStep = time.Minute

// CA is Mayfly's SSH user certificate authority. Its signing keys are
// ed25519, stored in its directory as OpenSSH private keys encrypted with
// a passphrase (file mode 0600). After a rotation the previous public key
// stays trusted until every certificate it signed has expired.
//
// Several processes may open one CA directory (replicas that share a
// state_dir): every call takes the directory's file lock and first reads
// the state again when another process changed it, so a rotation through
// one process is what all of them sign with and list from their next call,
// and none writes back a state older than what it read.
type CA struct {
	files caFiles
	now   func() time.Time
	// passphrase encrypts the keys that rotations create.
	passphrase []byte
	created    bool // by openCA

	// The fields below are guarded by mu, and match the directory while
	// the file lock is held.
	mu         sync.Mutex
	state      []byte // caStateFile as last read or written; nil before there is one
	signer     gossh.Signer
	signerFile string  // the key file signer was read from
	keys       []caKey // current first
}

// caKey is one signing key as recorded in the CA state.
type caKey struct {
	// File names the encrypted private key in the CA directory; empty once
	// the key is retired (its private half is deleted on rotation).
	File string `json:"file,omitempty"`
	// Public is the key in authorized_keys format.
	Public  string    `json:"public"`
	Created time.Time `json:"created"`
	// SignedUntil is at or after the latest ValidBefore of any certificate
	// the key signed.
	SignedUntil time.Time `json:"signed_until,omitzero"`
	// Next marks the key published for the next rotation: trusted by
	// hosts that fetch the public keys, signing nothing until activated.
	Next bool `json:"next,omitempty"`
}

// CertRequest describes a user certificate for CA.Sign.
type CertRequest struct {
	// Key is the public key to certify; it must not be a certificate.
	Key gossh.PublicKey
	// KeyID identifies the certificate in sshd logs and revocation lists.
	KeyID string
	// Principals are the user names the certificate is valid for; at least
	// one is required (an empty list would be valid for every user).
	Principals []string
	// ValidAfter and ValidBefore bound the certificate's validity.
	ValidAfter, ValidBefore time.Time
	// CriticalOptions (force-command, source-address) and Extensions
	// (permit-pty, ...) of the certificate.
	CriticalOptions map[string]string
	Extensions      map[string]string
}

// OpenCA opens the certificate authority kept in dir, creating the directory
// and a first signing key when they do not exist. The passphrase decrypts
// (and encrypts) the signing keys; it must not be empty.
func OpenCA(dir string, passphrase []byte) (*CA, error) {
	if dir == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: directory is required")
	}
	files, err := openCADirFiles(dir)
	if err != nil {
		return nil, err
	}
	return openCA(files, passphrase, true)
}

// OpenSharedCA opens the certificate authority kept in st, a store that
// replicas share, creating a first signing key when there is none. A CA
// found in legacyDir (its state directory before the store kept it) is
// copied into the store first; legacyDir may be empty.
func OpenSharedCA(st mayfly.Store, legacyDir string, passphrase []byte) (*CA, error) {
	return openCA(&storeCA{st: st, legacy: legacyDir}, passphrase, true)
}

// OpenExistingCA is OpenCA for a caller that must change nothing, such as
// a diagnosis run: it creates neither the directory nor a key, and fails
// with an ENOTFOUND error when dir holds no CA yet.
func OpenExistingCA(dir string, passphrase []byte) (*CA, error) {
	if dir == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: directory is required")
	}
	if _, err := os.Stat(filepath.Join(dir, caStateFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, noCA(dir)
	}
	// The lock file is made with the CA; read access is enough to lock it.
	lf, err := os.Open(filepath.Join(dir, caLockFile))
	if err != nil {
		return nil, fmt.Errorf("ssh ca: %w", err)
	}
	return openCA(&caDirFiles{dir: dir, lockFile: lf}, passphrase, false)
}

// OpenExistingSharedCA is OpenSharedCA for a caller that must change
// nothing: it only reads the store, and fails with an ENOTFOUND error when
// neither the store nor legacyDir holds a CA yet. A CA only in legacyDir
// (which a server copies into the store as it starts) is opened there.
func OpenExistingSharedCA(st mayfly.Store, legacyDir string, passphrase []byte) (*CA, error) {
	ca, err := openCA(&storeCA{st: st}, passphrase, false)
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND && legacyDir != "" {
		if ca, err = OpenExistingCA(legacyDir, passphrase); mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
			err = noCA("")
		}
	}
	return ca, err
}

// noCA is the error of OpenExistingCA and OpenExistingSharedCA when there
// is no CA yet: in dir, or in the store when dir is empty.
func noCA(dir string) error {
	where := "in the store"
	if dir != "" {
		where = "in " + dir
	}
	return mayfly.Errorf(mayfly.ENOTFOUND, "ssh ca: there is no CA %s yet (the server makes it at its first start)", where)
}

func openCA(files caFiles, passphrase []byte, create bool) (*CA, error) {
	if len(passphrase) == 0 {
		files.close()
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: passphrase is required")
	}
	ca := &CA{files: files, now: time.Now, passphrase: append([]byte(nil), passphrase...)}
	// An existing CA is read under a shared lock, so that processes opening
	// it at once decrypt its key side by side; the exclusive lock is for
	// making (or importing) one.
	err := ca.locked(false, func() error { return nil })
	if err == nil && ca.state == nil && !create {
		dir := ""
		if d, ok := files.(*caDirFiles); ok {
			dir = d.dir
		}
		err = noCA(dir)
	}
	if err == nil && ca.state == nil {
		err = ca.locked(true, func() error {
			if ca.state != nil {
				return nil
			}
			ca.created = true
			if _, err := ca.prepareLocked(); err != nil {
				return err
			}
			return ca.activateLocked()
		})
	}
	if err == nil {
		// The key is decrypted once at open, so that a wrong passphrase
		// fails here.
		err = ca.locked(false, func() error { _, err := ca.signerLocked(); return err })
	}
	if err != nil {
		files.close()
		return nil, err
	}
	return ca, nil
}

// Created reports whether opening the CA made it (there was none).
func (ca *CA) Created() bool { return ca.created }

// Close releases what the CA holds open.
func (ca *CA) Close() error { return ca.files.close() }

// locked runs fn under mu and the CA's lock across processes (exclusive
// or shared), after reading the state again if another process changed
// it.
func (ca *CA) locked(exclusive bool, fn func() error) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.files.locked(exclusive, func() error {
		if err := ca.refreshLocked(); err != nil {
			return err
		}
		return fn()
	})
}

// view runs fn on the state as locked does; when the directory cannot be
// read, fn sees the state as last read, which is the best answer left to
// a caller that has no error to return.
func (ca *CA) view(fn func()) {
	if err := ca.locked(false, func() error { fn(); return nil }); err != nil {
		ca.mu.Lock()
		defer ca.mu.Unlock()
		fn()
	}
}

// refreshLocked reads the CA's state file and, when it changed since this
// process last read or wrote it, takes its keys, loading the current
// signing key when that changed too. It leaves a missing state alone (a
// new CA) unless this process has seen one.
func (ca *CA) refreshLocked() error {
	b, err := ca.files.readState()
	switch {
	case err != nil:
		return fmt.Errorf("ssh ca: %w", err)
	case b == nil && ca.state == nil:
		return nil
	case b == nil:
		return fmt.Errorf("ssh ca: its state (%s) is gone", caStateFile)
	case bytes.Equal(b, ca.state):
		return nil
	}
	var keys []caKey
	if err := json.Unmarshal(b, &keys); err != nil {
		return fmt.Errorf("ssh ca: read %s: %w", caStateFile, err)
	}
	if len(keys) == 0 || keys[0].File == "" {
		return fmt.Errorf("ssh ca: %s names no current signing key", caStateFile)
	}
	ca.keys, ca.state = keys, b
	return nil
}

// signerLocked returns the current signing key, decrypting it when the
// current key changed since it was last decrypted (only when something is
// to be signed: listing the keys decrypts nothing).
func (ca *CA) signerLocked() (gossh.Signer, error) {
	cur := ca.keys[0]
	if ca.signer != nil && ca.signerFile == cur.File {
		return ca.signer, nil
	}
	signer, err := ca.loadKey(cur.File)
	if err != nil {
		return nil, err
	}
	if authorizedLine(signer.PublicKey()) != keyField(cur.Public) {
		return nil, fmt.Errorf("ssh ca: signing key %s does not match %s", cur.File, caStateFile)
	}
	ca.signer, ca.signerFile = signer, cur.File
	return signer, nil
}

// loadKey reads and decrypts the private key in file.
func (ca *CA) loadKey(file string) (gossh.Signer, error) {
	pemBytes, err := ca.files.readKey(file)
	if err != nil {
		return nil, fmt.Errorf("ssh ca: %w", err)
	}
	raw, err := gossh.ParseRawPrivateKeyWithPassphrase(pemBytes, ca.passphrase)
	if err != nil {
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: cannot decrypt the signing key: wrong passphrase")
		}
		return nil, fmt.Errorf("ssh ca: key %s: %w", file, err)
	}
	signer, err := gossh.NewSignerFromKey(raw)
	if err != nil {
		return nil, fmt.Errorf("ssh ca: key %s: %w", file, err)
	}
	return signer, nil
}

// Rotate makes a new signing key current at once: the previous public key
// stays in PublicKeys until every certificate it signed has expired, and
// its private key is deleted. Hosts that have not fetched the new public
// key refuse its certificates until they do: PrepareRotation, then, once
// every host has the next key, ActivateRotation avoids that.
func (ca *CA) Rotate() error {
	return ca.locked(true, func() error {
		if _, err := ca.prepareLocked(); err != nil {
			return err
		}
		return ca.activateLocked()
	})
}

// PrepareRotation publishes the next signing key: PublicKeys lists it from
// now on, but it signs nothing until ActivateRotation. It returns the
// key's authorized_keys line; a next key already published is kept.
func (ca *CA) PrepareRotation() (string, error) {
	var k caKey
	err := ca.locked(true, func() error {
		var err error
		k, err = ca.prepareLocked()
		return err
	})
	return k.Public, err
}

// ActivateRotation makes the published next key the signing key (the
// previous one is retired as Rotate does). ECONFLICT when no next key was
// published.
func (ca *CA) ActivateRotation() error {
	return ca.locked(true, func() error {
		if ca.nextLocked() < 0 {
			return mayfly.Errorf(mayfly.ECONFLICT, "ssh ca: no next key is published; prepare one first (mayfly ssh ca rotate), let hosts fetch it, then activate it")
		}
		return ca.activateLocked()
	})
}

// NextKey returns the published next key and when it was made; ok is false
// when there is none.
func (ca *CA) NextKey() (public string, created time.Time, ok bool) {
	ca.view(func() {
		if i := ca.nextLocked(); i >= 0 {
			public, created, ok = ca.keys[i].Public, ca.keys[i].Created, true
		}
	})
	return public, created, ok
}

func (ca *CA) nextLocked() int {
	for i, k := range ca.keys {
		if k.Next {
			return i
		}
	}
	return -1
}

// PublicKeys returns the trusted CA keys as authorized_keys lines, for
// sshd's TrustedUserCAKeys file: the current key first, then the next key
// when one is published, then retired keys that signed certificates which
// have not expired yet.
func (ca *CA) PublicKeys() []string {
	var out []string
	ca.view(func() {
		now := ca.now()
		for i, k := range ca.keys {
			if i == 0 || k.Next || k.SignedUntil.After(now) {
				out = append(out, k.Public)
			}
		}
	})
	return out
}

// Sign issues a user certificate for req.Key, signed by the current key,
// with a random serial number.
func (ca *CA) Sign(req CertRequest) (*gossh.Certificate, error) {
	return ca.sign(req, true)
}

// SignProbe is Sign without recording the certificate's expiry in the CA
// state, for a probe by another process than the broker that owns the CA
// (mayfly doctor): its certificate is short-lived and needs no trust kept
// after a rotation.
func (ca *CA) SignProbe(req CertRequest) (*gossh.Certificate, error) {
	return ca.sign(req, false)
}

func (ca *CA) sign(req CertRequest, record bool) (*gossh.Certificate, error) {
	if req.Key == nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: a public key is required")
	}
	if _, ok := req.Key.(*gossh.Certificate); ok {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: the key to sign is already a certificate")
	}
	if len(req.Principals) == 0 {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: at least one principal is required")
	}
	if !req.ValidBefore.After(req.ValidAfter) || req.ValidAfter.Unix() < 0 {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: validity must end after it starts")
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, fmt.Errorf("ssh ca: serial: %w", err)
	}
	cert := &gossh.Certificate{
		Key:             req.Key,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        gossh.UserCert,
		KeyId:           req.KeyID,
		ValidPrincipals: req.Principals,
		ValidAfter:      uint64(req.ValidAfter.Unix()),
		ValidBefore:     uint64(req.ValidBefore.Unix()),
		Permissions: gossh.Permissions{
			CriticalOptions: req.CriticalOptions,
			Extensions:      req.Extensions,
		},
	}
	// Under a shared lock unless the expiry must be recorded first, which
	// happens at most once a minute (markStep).
	mark := false
	sign := func() error {
		if mark {
			if err := ca.markLocked(req.ValidBefore); err != nil {
				return err
			}
		} else if record && req.ValidBefore.After(ca.keys[0].SignedUntil) {
			mark = true
			return nil
		}
		signer, err := ca.signerLocked()
		if err != nil {
			return err
		}
		if err := cert.SignCert(rand.Reader, signer); err != nil {
			return fmt.Errorf("ssh ca: sign: %w", err)
		}
		return nil
	}
	err := ca.locked(false, sign)
	if err == nil && mark {
		err = ca.locked(true, sign)
	}
	if err != nil {
		return nil, err
	}
	return cert, nil
}

// markLocked records that the current key signs a certificate valid until
// t, before the certificate exists, so a rotation never drops trust in a
// key whose certificates are still valid.
func (ca *CA) markLocked(t time.Time) error {
	if !t.After(ca.keys[0].SignedUntil) {
		return nil
	}
	prev := ca.keys[0].SignedUntil
	ca.keys[0].SignedUntil = t.Truncate(markStep).Add(markStep).UTC()
	if err := ca.saveLocked(); err != nil {
		ca.keys[0].SignedUntil = prev
		return err
	}
	return nil
}

// prepareLocked publishes a next key (second in the list) unless one is.
func (ca *CA) prepareLocked() (caKey, error) {
	if i := ca.nextLocked(); i >= 0 {
		return ca.keys[i], nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return caKey{}, fmt.Errorf("ssh ca: generate key: %w", err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return caKey{}, fmt.Errorf("ssh ca: %w", err)
	}
	now := ca.now().UTC()
	var suffix [4]byte
	rand.Read(suffix[:])
	file := "ca-" + now.Format("20060102T150405Z") + "-" + hex.EncodeToString(suffix[:]) + ".key"
	comment := "mayfly-ca-" + now.Format("20060102T150405Z")
	block, err := gossh.MarshalPrivateKeyWithPassphrase(priv, comment, ca.passphrase)
	if err != nil {
		return caKey{}, fmt.Errorf("ssh ca: encrypt key: %w", err)
	}
	if err := ca.files.writeKey(file, pem.EncodeToMemory(block)); err != nil {
		return caKey{}, fmt.Errorf("ssh ca: %w", err)
	}
	k := caKey{File: file, Public: authorizedLine(signer.PublicKey()) + " " + comment, Created: now, Next: true}
	old := ca.keys
	if len(ca.keys) == 0 {
		ca.keys = []caKey{k}
	} else {
		ca.keys = append([]caKey{ca.keys[0], k}, ca.keys[1:]...)
	}
	if err := ca.saveLocked(); err != nil {
		ca.keys = old
		ca.files.removeKey(file)
		return caKey{}, err
	}
	return k, nil
}

// activateLocked makes the next key current; the previous current key is
// kept, public half only, while certificates it signed are valid.
func (ca *CA) activateLocked() error {
	i := ca.nextLocked()
	next := ca.keys[i]
	signer, err := ca.loadKey(next.File)
	if err != nil {
		return err
	}
	now := ca.now().UTC()
	next.Next = false
	keys := []caKey{next}
	var retired []string
	for j, k := range ca.keys {
		if j == i {
			continue
		}
		if k.File != "" {
			retired = append(retired, k.File)
			k.File = ""
		}
		if k.SignedUntil.After(now) {
			keys = append(keys, k)
		}
	}
	old := ca.keys
	ca.keys = keys
	if err := ca.saveLocked(); err != nil {
		ca.keys = old
		return err
	}
	ca.signer, ca.signerFile = signer, next.File
	for _, f := range retired {
		ca.files.removeKey(f)
	}
	return nil
}

func (ca *CA) saveLocked() error {
	b, err := json.MarshalIndent(ca.keys, "", "  ")
	if err != nil {
		return fmt.Errorf("ssh ca: %w", err)
	}
	b = append(b, '\n')
	if err := ca.files.writeState(b); err != nil {
		return fmt.Errorf("ssh ca: %w", err)
	}
	ca.state = b
	return nil
}

// authorizedLine returns k in authorized_keys format without a newline.
func authorizedLine(k gossh.PublicKey) string {
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
}

// keyField returns the "type base64" part of an authorized_keys line.
func keyField(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return line
	}
	return f[0] + " " + f[1]
}
