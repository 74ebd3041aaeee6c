// Package seal encrypts the small secrets Mayfly keeps in its store (the
// admin credentials of targets) with envelope keys: every value is sealed
// with AES-256-GCM under a data-encryption key (DEK) and bound to its
// purpose as additional data, so a sealed value copied to another purpose
// does not open; the DEKs are kept in the store wrapped (AES-256-GCM) by a
// master key that never enters the store, read from a file or an
// environment variable named in the configuration. A key-check value in
// the store tells a wrong master key at start-up. Rotating the master key
// re-wraps the DEKs in one store transaction, so a crash leaves either the
// old key or the new one in force, never a mix.
package seal

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// KeySize is the size of the master key and of every DEK: AES-256.
const KeySize = 32

// Settings keys in the store.
const (
	checkKey  = "seal/check"  // key-check value: a constant sealed by the master key
	activeKey = "seal/active" // id of the DEK new values are sealed with
	dekPrefix = "seal/dek/"   // + id: a DEK wrapped by the master key
	version   = "v1"          // format of sealed values
	checkAD   = "mayfly seal key check"
	dekAD     = "mayfly seal dek\x00"
	valueAD   = "mayfly seal value\x00"
)

// ErrWrongKey is returned when the master key does not open the store's
// key-check value.
var ErrWrongKey = errors.New("the master key is not the one this store's secrets are sealed with")

// Config locates the master key: exactly one of KeyFile and KeyEnv.
type Config struct {
	// KeyFile is a file holding the master key: 32 bytes written as 64
	// hex digits or in base64 (`mayfly seal new-key` makes one). Keep it
	// readable by the broker only.
	KeyFile string `yaml:"key_file"`
	// KeyEnv names the environment variable holding the master key, in
	// the same form.
	KeyEnv string `yaml:"key_env"`
}

// Enabled reports whether a master key is configured.
func (c Config) Enabled() bool { return c.KeyFile != "" || c.KeyEnv != "" }

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks the configuration without reading the key.
func (c Config) Validate() error {
	switch {
	case c.KeyFile != "" && c.KeyEnv != "":
		return mayfly.Errorf(mayfly.EINVALID, "seal: set one of key_file and key_env, not both")
	case c.KeyEnv != "" && !envNameRE.MatchString(c.KeyEnv):
		return mayfly.Errorf(mayfly.EINVALID, "seal.key_env %q is not an environment variable name", c.KeyEnv)
	}
	return nil
}

// Source names where the key comes from, for messages (never the key).
func (c Config) Source() string {
	if c.KeyFile != "" {
		return "seal.key_file " + c.KeyFile
	}
	return "seal.key_env $" + c.KeyEnv
}

// LoadKey reads and parses the master key c names.
func LoadKey(c Config, getenv func(string) string) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var raw []byte
	switch {
	case c.KeyFile != "":
		b, err := os.ReadFile(c.KeyFile)
		if err != nil {
			if os.IsNotExist(err) {
				return nil, mayfly.Errorf(mayfly.EINVALID, "seal.key_file %s does not exist (`mayfly seal new-key --out FILE` makes one)", c.KeyFile)
			}
			return nil, mayfly.Errorf(mayfly.EINVALID, "seal.key_file %s cannot be read: %v", c.KeyFile, errors.Unwrap(err))
		}
		raw = b
	case c.KeyEnv != "":
		v := getenv(c.KeyEnv)
		if v == "" {
			return nil, mayfly.Errorf(mayfly.EINVALID, "seal.key_env: environment variable %s is not set", c.KeyEnv)
		}
		raw = []byte(v)
	default:
		return nil, mayfly.Errorf(mayfly.EINVALID, "seal: no master key configured (seal.key_file or seal.key_env)")
	}
	k, err := ParseKey(raw)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "%s: %s", c.Source(), mayfly.ErrorMessageOrText(err))
	}
	return k, nil
}

// ParseKey parses a master key: 32 bytes written as 64 hex digits or in
// base64 (standard or URL alphabet, padded or not), surrounding white
// space ignored. The error never quotes the input.
func ParseKey(b []byte) ([]byte, error) {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "the key is empty")
	}
	if k, err := hex.DecodeString(s); err == nil {
		if len(k) != KeySize {
			return nil, mayfly.Errorf(mayfly.EINVALID, "the key is %d bytes in hex; want %d (64 hex digits)", len(k), KeySize)
		}
		return k, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != KeySize {
				return nil, mayfly.Errorf(mayfly.EINVALID, "the key is %d bytes; want %d (64 hex digits or base64 of 32 bytes)", len(k), KeySize)
			}
			return k, nil
		}
	}
	return nil, mayfly.Errorf(mayfly.EINVALID, "the key is not 64 hex digits or base64 of 32 bytes")
}

// NewKey returns a new random master key as 64 hex digits.
func NewKey() string {
	k := make([]byte, KeySize)
	rand.Read(k)
	return hex.EncodeToString(k)
}

func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(fmt.Sprintf("seal: %v", err)) // only a wrong key size; checked before
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic(fmt.Sprintf("seal: %v", err))
	}
	return g
}

// box encrypts plaintext with a random nonce: version "." base64url(nonce||ciphertext).
func box(a cipher.AEAD, plaintext []byte, ad string) string {
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(plaintext)+a.Overhead())
	rand.Read(nonce)
	out := a.Seal(nonce, nonce, plaintext, []byte(ad))
	return version + "." + base64.RawURLEncoding.EncodeToString(out)
}

var errBadBox = errors.New("malformed sealed value")

func unbox(a cipher.AEAD, s, ad string) ([]byte, error) {
	body, ok := strings.CutPrefix(s, version+".")
	if !ok {
		return nil, errBadBox
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil || len(raw) < a.NonceSize()+a.Overhead() {
		return nil, errBadBox
	}
	return a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], []byte(ad))
}

// Keyring holds the store's DEKs, unwrapped, for sealing and opening
// values. It is safe for concurrent use.
type Keyring struct {
	active string
	deks   map[string]cipher.AEAD
}

// Open checks master against the store's key-check value and returns the
// store's DEKs. On a store that has none yet, it creates the key-check
// value and a first DEK. A master key that does not match fails with an
// EINVALID error wrapping ErrWrongKey.
func Open(ctx context.Context, st mayfly.Store, master []byte) (*Keyring, error) {
	return open(ctx, st, master, true)
}

// ErrNoKeys is what OpenExisting returns for a store whose keys were
// never made (no server has started on it with a seal key).
var ErrNoKeys = mayfly.Errorf(mayfly.ENOTFOUND, "seal: the store holds no data key yet (the server makes the first at its first start with seal configured)")

// OpenExisting is Open for a caller that must change nothing, such as a
// diagnosis run: it only reads, and on a store that has no key-check value
// yet it fails with ErrNoKeys instead of creating one, so that a wrong
// master key cannot become the store's.
func OpenExisting(ctx context.Context, st mayfly.Store, master []byte) (*Keyring, error) {
	return open(ctx, st, master, false)
}

func open(ctx context.Context, st mayfly.Store, master []byte, create bool) (*Keyring, error) {
	if len(master) != KeySize {
		return nil, mayfly.Errorf(mayfly.EINVALID, "seal: the master key must be %d bytes", KeySize)
	}
	mk := newAEAD(master)
	kr := &Keyring{deks: map[string]cipher.AEAD{}}
	run := st.Update
	if !create {
		run = st.View
	}
	err := run(ctx, func(tx mayfly.Tx) error {
		kr.active, kr.deks = "", map[string]cipher.AEAD{}
		check, err := getSetting(tx, checkKey)
		if err != nil {
			return err
		}
		if check == "" {
			wrapped, err := listDEKs(tx)
			if err != nil {
				return err
			}
			if len(wrapped) > 0 {
				return mayfly.Errorf(mayfly.EINTERNAL, "seal: the store holds data keys but no key-check value; it was altered")
			}
			if !create {
				return ErrNoKeys
			}
			if err := tx.PutSetting(checkKey, box(mk, make([]byte, KeySize), checkAD)); err != nil {
				return err
			}
			id, dek := newDEKID(), make([]byte, KeySize)
			rand.Read(dek)
			if err := tx.PutSetting(dekPrefix+id, box(mk, dek, dekAD+id)); err != nil {
				return err
			}
			kr.active, kr.deks[id] = id, newAEAD(dek)
			return tx.PutSetting(activeKey, id)
		}
		if _, err := unbox(mk, check, checkAD); err != nil {
			return wrongKey()
		}
		wrapped, err := listDEKs(tx)
		if err != nil {
			return err
		}
		for id, w := range wrapped {
			dek, err := unbox(mk, w, dekAD+id)
			if err != nil || len(dek) != KeySize {
				return mayfly.Errorf(mayfly.EINTERNAL, "seal: data key %s does not open with the master key that opens the key check; the store was altered", id)
			}
			kr.deks[id] = newAEAD(dek)
		}
		if kr.active, err = getSetting(tx, activeKey); err != nil {
			return err
		}
		if kr.deks[kr.active] == nil {
			return mayfly.Errorf(mayfly.EINTERNAL, "seal: the active data key %q is missing from the store", kr.active)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return kr, nil
}

type wrongKeyError struct{ e *mayfly.Error }

func (e wrongKeyError) Error() string   { return e.e.Message }
func (e wrongKeyError) Unwrap() []error { return []error{e.e, ErrWrongKey} }

func wrongKey() error {
	return wrongKeyError{mayfly.Errorf(mayfly.EINVALID, "seal: %s (the key check in the store does not open with it); "+
		"if it was rotated with `mayfly seal rotate-key`, configure the new key", ErrWrongKey.Error())}
}

func getSetting(tx mayfly.Tx, key string) (string, error) {
	v, err := tx.GetSetting(key)
	if err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		return "", err
	}
	return v, nil
}

func listDEKs(tx mayfly.Tx) (map[string]string, error) {
	m, err := tx.ListSettings(dekPrefix)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.TrimPrefix(k, dekPrefix)] = v
	}
	return out, nil
}

func newDEKID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Seal encrypts plaintext for purpose (for example
// "target-credential/pg1"); only Open with the same purpose opens it.
func (k *Keyring) Seal(purpose string, plaintext []byte) string {
	return k.active + "." + box(k.deks[k.active], plaintext, valueAD+k.active+"\x00"+purpose)
}

// Open decrypts a value Seal made for purpose. The error says why it
// does not open, never what it holds.
func (k *Keyring) Open(purpose, sealed string) ([]byte, error) {
	id, rest, ok := strings.Cut(sealed, ".")
	if !ok {
		return nil, mayfly.Errorf(mayfly.EINTERNAL, "seal: %s: malformed sealed value", purpose)
	}
	a := k.deks[id]
	if a == nil {
		return nil, mayfly.Errorf(mayfly.EINTERNAL, "seal: %s: sealed with a data key this store does not have", purpose)
	}
	p, err := unbox(a, rest, valueAD+id+"\x00"+purpose)
	if err != nil {
		if errors.Is(err, errBadBox) {
			return nil, mayfly.Errorf(mayfly.EINTERNAL, "seal: %s: malformed sealed value", purpose)
		}
		return nil, mayfly.Errorf(mayfly.EINTERNAL, "seal: %s: the sealed value does not authenticate (altered, or sealed for another purpose)", purpose)
	}
	return p, nil
}

// RotateHook, when not nil, is called by RotateMaster after it re-wrapped
// each data key and before it commits; an error aborts the rotation. Tests
// use it to stop a rotation half way.
type RotateHook func(step string) error

// RotateMaster re-wraps every DEK of the store, and its key-check value,
// under newMaster, after checking oldMaster against the key-check value.
// It runs in one store transaction: a crash or an error leaves oldMaster
// in force. It returns how many data keys it re-wrapped.
func RotateMaster(ctx context.Context, st mayfly.Store, oldMaster, newMaster []byte, hook RotateHook) (int, error) {
	if len(oldMaster) != KeySize || len(newMaster) != KeySize {
		return 0, mayfly.Errorf(mayfly.EINVALID, "seal: master keys must be %d bytes", KeySize)
	}
	if string(oldMaster) == string(newMaster) {
		return 0, mayfly.Errorf(mayfly.EINVALID, "seal: the new master key is the current one")
	}
	om, nm := newAEAD(oldMaster), newAEAD(newMaster)
	n := 0
	err := st.Update(ctx, func(tx mayfly.Tx) error {
		n = 0
		check, err := getSetting(tx, checkKey)
		if err != nil {
			return err
		}
		if check == "" {
			return mayfly.Errorf(mayfly.EINVALID, "seal: the store holds no sealed keys yet; nothing to rotate (start the server with the new key instead)")
		}
		if _, err := unbox(om, check, checkAD); err != nil {
			return wrongKey()
		}
		wrapped, err := listDEKs(tx)
		if err != nil {
			return err
		}
		for id, w := range wrapped {
			dek, err := unbox(om, w, dekAD+id)
			if err != nil {
				return mayfly.Errorf(mayfly.EINTERNAL, "seal: data key %s does not open with the current master key; the store was altered", id)
			}
			if err := tx.PutSetting(dekPrefix+id, box(nm, dek, dekAD+id)); err != nil {
				return err
			}
			n++
			if hook != nil {
				if err := hook("rewrapped " + id); err != nil {
					return err
				}
			}
		}
		if err := tx.PutSetting(checkKey, box(nm, make([]byte, KeySize), checkAD)); err != nil {
			return err
		}
		if hook != nil {
			if err := hook("check"); err != nil {
				return err
			}
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: time.Now().UTC(), Actor: "mayfly", Action: "seal.master_key_rotated", Subject: "seal",
			Data: map[string]string{"data_keys": fmt.Sprint(n)}})
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
