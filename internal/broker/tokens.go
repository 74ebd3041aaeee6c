package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayflyhq/mayfly"
)

// DefaultMaxTokenTTL bounds API tokens when the configuration sets no
// maximum.
const DefaultMaxTokenTTL = 30 * 24 * time.Hour

// lastUsedEvery is how often, at most, the use of a token is written to
// the store.
const lastUsedEvery = time.Minute

// tokenCacheMax bounds the tokens kept in memory; past it the cache starts
// over (tokens are read again from the store on their next use).
const tokenCacheMax = 100_000

// Token prefixes: they tell a leaked token's kind at a glance and let
// secret scanners recognise it.
const (
	apiTokenPrefix     = "mft_"
	sessionTokenPrefix = "mfs_"
)

// TokenInput is what CreateToken needs.
type TokenInput struct {
	// User the token authenticates as (default: the caller).
	User string
	// Name says what the token is for ("ci", "laptop").
	Name string
	// Kind is TokenAPI (default) or TokenSession.
	Kind   mayfly.TokenKind
	Groups []string
	// Method is how the holder authenticated (default "token").
	Method string
	TTL    time.Duration
}

// tokenCache keeps live tokens by hash so that authenticating a request
// with a stored token costs a map lookup.
type tokenCache struct {
	mu sync.RWMutex
	m  map[string]*cachedToken
	// gen counts revocations, so a token read from the store while one
	// was being revoked is not cached.
	gen uint64
}

type cachedToken struct {
	tok *mayfly.Token // never changed once cached
	// read is when tok was read from the store: it is read again
	// statusRecheck later, for a revocation through another replica.
	read time.Time
	// used is when (unix ns) the last use was written, 0 for never.
	used atomic.Int64
}

func (tc *tokenCache) get(hash string) *cachedToken {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	return tc.m[hash]
}

func (tc *tokenCache) generation() uint64 {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	return tc.gen
}

// put caches ct unless a revocation happened since gen.
func (tc *tokenCache) put(ct *cachedToken, gen uint64) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.gen != gen {
		return
	}
	if tc.m == nil || len(tc.m) >= tokenCacheMax {
		tc.m = map[string]*cachedToken{}
	}
	tc.m[ct.tok.Hash] = ct
}

func (tc *tokenCache) drop(hash string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.gen++
	delete(tc.m, hash)
}

func (tc *tokenCache) dropUser(user string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.gen++
	for h, ct := range tc.m {
		if ct.tok.User == user {
			delete(tc.m, h)
		}
	}
}

// newTokenSecret returns a token's plaintext: a prefix and 32 random bytes
// in unpadded base64url.
func newTokenSecret(prefix string) string {
	b := make([]byte, 32)
	rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func (b *Broker) maxTokenTTL() time.Duration {
	if cfg := b.cfg.Load(); cfg != nil && cfg.MaxTokenTTL > 0 {
		return cfg.MaxTokenTTL
	}
	return DefaultMaxTokenTTL
}

// validTokenName reports whether s is a usable token name: 1 to 64
// printable characters.
func validTokenName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// CreateToken issues a token and returns its plaintext, shown this once;
// the store keeps only its hash. API tokens: anyone for themselves, admins
// for any known user, for at most the configured maximum TTL. Sessions:
// only Mayfly itself (System), for the TTL given. The token and its audit
// event (token.create or session.create) commit in one transaction.
func (b *Broker) CreateToken(ctx context.Context, c Caller, in TokenInput) (string, *mayfly.Token, error) {
	if in.Kind == "" {
		in.Kind = mayfly.TokenAPI
	}
	if in.User == "" {
		in.User = c.User
	}
	if in.TTL <= 0 {
		return "", nil, mayfly.Errorf(mayfly.EINVALID, "a token needs a positive TTL (e.g. 24h)")
	}
	prefix, action := apiTokenPrefix, "token.create"
	switch in.Kind {
	case mayfly.TokenAPI:
		if !validTokenName(in.Name) {
			return "", nil, mayfly.Errorf(mayfly.EINVALID, "token name %q: want 1 to 64 printable characters", in.Name)
		}
		if in.User != c.User && !c.Admin {
			return "", nil, mayfly.Errorf(mayfly.EFORBIDDEN, "creating a token for %s needs an admin; you may create tokens for yourself (%s)", in.User, c.User)
		}
		if max := b.maxTokenTTL(); in.TTL > max {
			return "", nil, mayfly.Errorf(mayfly.EINVALID, "token TTL %s is over the maximum of %s (auth.max_token_ttl)", in.TTL, max)
		}
		if in.User != c.User {
			if _, ok := b.cfg.Load().Users[in.User]; !ok && !b.knownUser(ctx, in.User) {
				return "", nil, mayfly.Errorf(mayfly.ENOTFOUND, "unknown user %q", in.User)
			}
		}
		if in.Method == "" {
			in.Method = "token"
		}
	case mayfly.TokenSession:
		if c.User != System.User || !c.Admin {
			return "", nil, mayfly.Errorf(mayfly.EFORBIDDEN, "sessions are opened by logging in")
		}
		if in.Name == "" {
			in.Name = "session"
		}
		prefix, action = sessionTokenPrefix, "session.create"
	default:
		return "", nil, mayfly.Errorf(mayfly.EINVALID, "token kind %q: want api or session", in.Kind)
	}
	if in.User == "" {
		return "", nil, mayfly.Errorf(mayfly.EINVALID, "a token needs a user")
	}
	if st := b.CurrentUserStatus(ctx, in.User); st != UserActive {
		return "", nil, mayfly.Errorf(mayfly.EFORBIDDEN, "user %s is %s", in.User, st)
	}
	plain := newTokenSecret(prefix)
	now := b.clock.Now().UTC()
	t := &mayfly.Token{
		ID: NewID("tok_"), Name: in.Name, User: in.User, Kind: in.Kind, Groups: in.Groups, Method: in.Method,
		CreatedBy: c.User, CreatedAt: now, ExpiresAt: now.Add(in.TTL), Hash: mayfly.TokenHash(plain),
	}
	actor := c.User
	if in.Kind == mayfly.TokenSession {
		actor = in.User // the person who logged in
	}
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		if err := tx.CreateToken(t); err != nil {
			return err
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: actor, Action: action, Subject: "token:" + t.ID,
			Source: c.Source, Data: tokenData(t)})
	})
	if err != nil {
		return "", nil, fmt.Errorf("create token: %w", err)
	}
	b.committed()
	return plain, t, nil
}

// tokenData is what an audit event records of a token (never its
// plaintext or hash).
func tokenData(t *mayfly.Token) map[string]string {
	d := map[string]string{"token_id": t.ID, "name": t.Name, "user": t.User, "kind": string(t.Kind),
		"expires_at": t.ExpiresAt.UTC().Format(time.RFC3339)}
	if t.Method != "" {
		d["method"] = t.Method
	}
	if len(t.Groups) > 0 {
		d["groups"] = strings.Join(t.Groups, ",")
	}
	return d
}

// ResolveToken returns the live token (not revoked, not expired, its user
// active) whose hash is hash. Tokens are served from memory once read,
// and read again statusRecheck later: a revocation through this broker
// drops one at once, through another replica sharing the store within
// statusRecheck. The first use of a token is audited (token.first_use);
// its last use is written at most once a minute.
func (b *Broker) ResolveToken(ctx context.Context, hash string) (*mayfly.Token, bool) {
	now := b.clock.Now()
	ct := b.tokens.get(hash)
	if ct == nil || now.Sub(ct.read) >= statusRecheck {
		gen := b.tokens.generation()
		var t *mayfly.Token
		err := b.store.View(ctx, func(tx mayfly.Tx) error {
			var err error
			t, err = tx.GetTokenByHash(hash)
			return err
		})
		switch {
		case err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND && ct != nil:
			// The store cannot say: the token stays as last read, for
			// another statusRecheck.
			b.log.Warn("read token", "err", err)
			kept := &cachedToken{tok: ct.tok, read: now}
			kept.used.Store(ct.used.Load())
			b.tokens.put(kept, gen)
			ct = kept
		case err != nil:
			if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
				b.log.Warn("read token", "err", err)
			} else if ct != nil {
				b.tokens.drop(hash)
			}
			return nil, false
		case !t.Live(now):
			if ct != nil {
				b.tokens.drop(hash)
			}
			return nil, false
		default:
			fresh := &cachedToken{tok: t, read: now}
			used := t.LastUsedAt.UnixNano()
			if t.LastUsedAt.IsZero() {
				used = 0
			}
			if ct != nil {
				used = max(used, ct.used.Load())
			}
			fresh.used.Store(used)
			b.tokens.put(fresh, gen)
			ct = fresh
		}
	}
	t := ct.tok
	if !now.Before(t.ExpiresAt) {
		b.tokens.drop(hash)
		return nil, false
	}
	if b.CurrentUserStatus(ctx, t.User) != UserActive {
		return nil, false
	}
	if last := ct.used.Load(); last == 0 || now.UnixNano()-last >= int64(lastUsedEvery) {
		if ct.used.CompareAndSwap(last, now.UnixNano()) {
			if !b.recordTokenUse(ctx, t, now) {
				b.tokens.drop(hash)
				return nil, false
			}
		}
	}
	return t, true
}

// TokenHolder returns the user of the live stored token with this hash,
// whatever the user's status: it says why ResolveToken refused a token.
func (b *Broker) TokenHolder(ctx context.Context, hash string) (string, bool) {
	if ct := b.tokens.get(hash); ct != nil {
		return ct.tok.User, ct.tok.Live(b.clock.Now())
	}
	var t *mayfly.Token
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		t, err = tx.GetTokenByHash(hash)
		return err
	})
	if err != nil || !t.Live(b.clock.Now()) {
		return "", false
	}
	return t.User, true
}

// recordTokenUse writes the use of t at now, auditing its first use. It
// reports false when the store has the token revoked (by another broker
// sharing the store); a store failure does not refuse the token.
func (b *Broker) recordTokenUse(ctx context.Context, t *mayfly.Token, now time.Time) bool {
	live := true
	err := b.store.Update(context.WithoutCancel(ctx), func(tx mayfly.Tx) error {
		cur, err := tx.GetToken(t.ID)
		if err != nil {
			return err
		}
		if live = cur.Live(now); !live {
			return nil
		}
		first := cur.LastUsedAt.IsZero()
		cur.LastUsedAt = now.UTC()
		if err := tx.UpdateToken(cur); err != nil {
			return err
		}
		if !first {
			return nil
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: now.UTC(), Actor: t.User, Action: "token.first_use",
			Subject: "token:" + t.ID, Data: tokenData(t)})
	})
	if err != nil {
		b.log.Warn("record token use", "token", t.ID, "err", err)
		return true
	}
	if live {
		b.committed()
	}
	return live
}

// RevokeToken revokes a token: admins any, others their own. Revoking a
// revoked token changes nothing and succeeds.
func (b *Broker) RevokeToken(ctx context.Context, c Caller, id string) error {
	var hash string
	changed := false
	err := b.store.Update(ctx, func(tx mayfly.Tx) error {
		changed = false
		t, err := tx.GetToken(id)
		if err != nil {
			return err
		}
		if !c.Admin && t.User != c.User {
			return mayfly.Errorf(mayfly.EFORBIDDEN, "token %s belongs to %s; revoking it needs an admin", id, t.User)
		}
		hash = t.Hash
		if !t.RevokedAt.IsZero() {
			return nil
		}
		now := b.clock.Now().UTC()
		t.RevokedAt = now
		if err := tx.UpdateToken(t); err != nil {
			return err
		}
		changed = true
		action := "token.revoke"
		if t.Kind == mayfly.TokenSession {
			action = "session.revoke"
		}
		return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: c.User, Action: action, Subject: "token:" + t.ID,
			Source: c.Source, Data: tokenData(t)})
	})
	if hash != "" {
		b.tokens.drop(hash)
	}
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if changed {
		b.committed()
	}
	return nil
}

// ListTokens lists tokens, oldest first, without their hashes: admins
// every user's (or one user's), others their own.
func (b *Broker) ListTokens(ctx context.Context, c Caller, user string) ([]*mayfly.Token, error) {
	if !c.Admin {
		if user != "" && user != c.User {
			return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "listing the tokens of %s needs an admin", user)
		}
		user = c.User
	}
	var ts []*mayfly.Token
	err := b.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		ts, err = tx.ListTokens(mayfly.TokenFilter{User: user})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	if ts == nil {
		ts = []*mayfly.Token{}
	}
	return ts, nil
}

// revokeUserTokens revokes, in tx, every token and session of user,
// auditing how many; the caller drops them from the cache after commit.
func (b *Broker) revokeUserTokens(tx mayfly.Tx, c Caller, user, why string) error {
	now := b.clock.Now().UTC()
	n, err := tx.RevokeUserTokens(user, now)
	if err != nil || n == 0 {
		return err
	}
	return tx.AppendAudit(&mayfly.AuditEvent{Time: now, Actor: c.User, Action: "token.revoke", Subject: "user:" + user,
		Reason: why, Source: c.Source, Data: map[string]string{"user": user, "count": strconv.Itoa(n)}})
}
