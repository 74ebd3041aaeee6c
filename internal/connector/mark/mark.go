// Package mark derives the mark a Mayfly installation puts on every account
// it creates, so that the reconciler removes only what this installation
// made: not accounts that merely share the prefix, not another broker's
// accounts, and still its own leftovers after its store was lost.
//
// The mark of an account is an HMAC-SHA256 of the account name keyed with
// the installation key, which the admin keeps outside the store (in the
// environment variable named by instance_key_env). Another broker with a
// different key, or a person creating an account by hand, cannot produce
// it; a broker whose store was lost but whose key survives recognises it.
// Each connector stores the mark where its target keeps something beside
// the account (a comment, a second credential nobody knows, a GECOS field)
// and reports Account.Marked when the mark it reads back is valid.
package mark

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/mayflyhq/mayfly"
)

// MinKeyLen is the shortest installation key accepted, in bytes.
const MinKeyLen = 16

// Key is an installation's marking key. The zero Key marks nothing and
// recognises nothing.
type Key struct{ k []byte }

// NewKey returns the key for secret, which must have at least MinKeyLen
// bytes.
func NewKey(secret string) (Key, error) {
	if len(secret) < MinKeyLen {
		return Key{}, mayfly.Errorf(mayfly.EINVALID, "the installation key must have at least %d bytes", MinKeyLen)
	}
	return Key{k: []byte(secret)}, nil
}

// FromTarget resolves the installation key named by t.InstanceKeyEnv; the
// zero Key when t names none.
func FromTarget(t mayfly.Target, getenv func(string) string) (Key, error) {
	if t.InstanceKeyEnv == "" {
		return Key{}, nil
	}
	var secret string
	if getenv != nil {
		secret = getenv(t.InstanceKeyEnv)
	}
	if secret == "" {
		return Key{}, mayfly.Errorf(mayfly.EINVALID, "target %q: environment variable %q named by instance_key_env is empty", t.Name, t.InstanceKeyEnv)
	}
	k, err := NewKey(secret)
	if err != nil {
		return Key{}, mayfly.Errorf(mayfly.EINVALID, "target %q: %s (instance_key_env %q)", t.Name, mayfly.ErrorMessage(err), t.InstanceKeyEnv)
	}
	return k, nil
}

// Zero reports whether k is the zero Key.
func (k Key) Zero() bool { return len(k.k) == 0 }

// Tag returns the mark of the account name: 64 lowercase hex digits, or ""
// for the zero Key.
func (k Key) Tag(name string) string {
	if k.Zero() {
		return ""
	}
	m := hmac.New(sha256.New, k.k)
	m.Write([]byte("mayfly account mark\x00"))
	m.Write([]byte(name))
	return hex.EncodeToString(m.Sum(nil))
}

// Valid reports whether tag is the mark of name under k, compared without
// regard to case. Nothing is valid under the zero Key.
func (k Key) Valid(name, tag string) bool {
	if k.Zero() || tag == "" {
		return false
	}
	return hmac.Equal([]byte(k.Tag(name)), []byte(strings.ToLower(tag)))
}

// ValidPrefix reports whether tag is a prefix of at least n hex digits of
// the mark of name, for targets that keep only part of it.
func (k Key) ValidPrefix(name, tag string, n int) bool {
	if k.Zero() || len(tag) < n || len(tag) > 64 {
		return false
	}
	want := k.Tag(name)[:len(tag)]
	return hmac.Equal([]byte(want), []byte(strings.ToLower(tag)))
}
