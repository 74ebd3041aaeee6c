package ssh

import (
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
// A CA directory belongs to one process at a time.
type CA struct {
	dir string
	now func() time.Time
	// passphrase encrypts the keys that rotations create.
	passphrase []byte

	mu     sync.Mutex
	signer gossh.Signer
	keys   []caKey // current first
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
	if len(passphrase) == 0 {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: passphrase is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ssh ca: %w", err)
	}
	ca := &CA{dir: dir, now: time.Now, passphrase: append([]byte(nil), passphrase...)}
	b, err := os.ReadFile(filepath.Join(dir, caStateFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := ca.Rotate(); err != nil {
			return nil, err
		}
		return ca, nil
	case err != nil:
		return nil, fmt.Errorf("ssh ca: %w", err)
	}
	if err := json.Unmarshal(b, &ca.keys); err != nil {
		return nil, fmt.Errorf("ssh ca: read %s: %w", caStateFile, err)
	}
	if len(ca.keys) == 0 || ca.keys[0].File == "" {
		return nil, fmt.Errorf("ssh ca: %s names no current signing key", caStateFile)
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, ca.keys[0].File))
	if err != nil {
		return nil, fmt.Errorf("ssh ca: %w", err)
	}
	raw, err := gossh.ParseRawPrivateKeyWithPassphrase(pemBytes, passphrase)
	if err != nil {
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, mayfly.Errorf(mayfly.EINVALID, "ssh ca: cannot decrypt the signing key: wrong passphrase")
		}
		return nil, fmt.Errorf("ssh ca: signing key: %w", err)
	}
	signer, err := gossh.NewSignerFromKey(raw)
	if err != nil {
		return nil, fmt.Errorf("ssh ca: signing key: %w", err)
	}
	if authorizedLine(signer.PublicKey()) != keyField(ca.keys[0].Public) {
		return nil, fmt.Errorf("ssh ca: signing key %s does not match %s", ca.keys[0].File, caStateFile)
	}
	ca.signer = signer
	return ca, nil
}

// Rotate makes a new signing key current at once: the previous public key
// stays in PublicKeys until every certificate it signed has expired, and
// its private key is deleted. Hosts that have not fetched the new public
// key refuse its certificates until they do: PrepareRotation, then, once
// every host has the next key, ActivateRotation avoids that.
func (ca *CA) Rotate() error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if _, err := ca.prepareLocked(); err != nil {
		return err
	}
	return ca.activateLocked()
}

// PrepareRotation publishes the next signing key: PublicKeys lists it from
// now on, but it signs nothing until ActivateRotation. It returns the
// key's authorized_keys line; a next key already published is kept.
func (ca *CA) PrepareRotation() (string, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	k, err := ca.prepareLocked()
	return k.Public, err
}

// ActivateRotation makes the published next key the signing key (the
// previous one is retired as Rotate does). ECONFLICT when no next key was
// published.
func (ca *CA) ActivateRotation() error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.nextLocked() < 0 {
		return mayfly.Errorf(mayfly.ECONFLICT, "ssh ca: no next key is published; prepare one first (mayfly ssh ca rotate), let hosts fetch it, then activate it")
	}
	return ca.activateLocked()
}

// NextKey returns the published next key and when it was made; ok is false
// when there is none.
func (ca *CA) NextKey() (public string, created time.Time, ok bool) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if i := ca.nextLocked(); i >= 0 {
		return ca.keys[i].Public, ca.keys[i].Created, true
	}
	return "", time.Time{}, false
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
	ca.mu.Lock()
	defer ca.mu.Unlock()
	now := ca.now()
	var out []string
	for i, k := range ca.keys {
		if i == 0 || k.Next || k.SignedUntil.After(now) {
			out = append(out, k.Public)
		}
	}
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
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if record {
		if err := ca.markLocked(req.ValidBefore); err != nil {
			return nil, err
		}
	}
	if err := cert.SignCert(rand.Reader, ca.signer); err != nil {
		return nil, fmt.Errorf("ssh ca: sign: %w", err)
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
	if err := writeFileAtomic(filepath.Join(ca.dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
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
		os.Remove(filepath.Join(ca.dir, file))
		return caKey{}, err
	}
	return k, nil
}

// activateLocked makes the next key current; the previous current key is
// kept, public half only, while certificates it signed are valid.
func (ca *CA) activateLocked() error {
	i := ca.nextLocked()
	next := ca.keys[i]
	pemBytes, err := os.ReadFile(filepath.Join(ca.dir, next.File))
	if err != nil {
		return fmt.Errorf("ssh ca: next key: %w", err)
	}
	raw, err := gossh.ParseRawPrivateKeyWithPassphrase(pemBytes, ca.passphrase)
	if err != nil {
		return fmt.Errorf("ssh ca: next key: %w", err)
	}
	signer, err := gossh.NewSignerFromKey(raw)
	if err != nil {
		return fmt.Errorf("ssh ca: next key: %w", err)
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
	ca.signer = signer
	for _, f := range retired {
		os.Remove(filepath.Join(ca.dir, f))
	}
	return nil
}

func (ca *CA) saveLocked() error {
	b, err := json.MarshalIndent(ca.keys, "", "  ")
	if err != nil {
		return fmt.Errorf("ssh ca: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(ca.dir, caStateFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("ssh ca: %w", err)
	}
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
