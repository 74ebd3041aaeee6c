package mayfly

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// TokenKind says what a stored token is for.
type TokenKind string

// Token kinds: an API token a person created for a script or a service
// user, or a session token issued at login.
const (
	TokenAPI     TokenKind = "api"
	TokenSession TokenKind = "session"
)

// Token is a bearer token kept by the store. Only its hash is stored: the
// plaintext is shown once, when it is created.
type Token struct {
	ID   string    `json:"id"` // "tok_…"
	Name string    `json:"name"`
	User string    `json:"user"`
	Kind TokenKind `json:"kind"`
	// Groups are, for sessions, the groups the identity provider vouched
	// for at login.
	Groups []string `json:"groups,omitempty"`
	// Method is how the holder authenticated: "token", "oidc",
	// "oidc-device", "oidc-browser".
	Method     string    `json:"method"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	// Hash is the hex SHA-256 of the token; the plaintext is never stored.
	Hash string `json:"-"`
}

// Live reports whether t may authenticate at now: not revoked and not
// expired.
func (t *Token) Live(now time.Time) bool {
	return t.RevokedAt.IsZero() && now.Before(t.ExpiresAt)
}

// TokenHash returns the hex SHA-256 of a token's plaintext, the form in
// which the store keeps and finds it.
func TokenHash(plaintext string) string {
	h := sha256.Sum256([]byte(plaintext))
	return hex.EncodeToString(h[:])
}

// TokenFilter selects tokens; zero fields match everything.
type TokenFilter struct {
	User string
	Kind TokenKind
	// Live keeps the tokens neither revoked nor expired at Now.
	Live bool
	Now  time.Time
}
