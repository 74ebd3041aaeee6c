package broker

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

func newTokenBroker(t *testing.T) (*Broker, *fakeClock) {
	t.Helper()
	st := openSQLite(t)
	clk := &fakeClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	cfg := &Config{Users: map[string][]string{"alice": {"eng"}, "svc": nil, "root": {"admins"}},
		UserOrder: []string{"alice", "svc", "root"}, MaxTokenTTL: 24 * time.Hour}
	return New(cfg, Options{Store: st, Clock: clk}), clk
}

func auditActions(t *testing.T, b *Broker, subject string) []string {
	t.Helper()
	var out []string
	err := b.Store().View(context.Background(), func(tx mayfly.Tx) error {
		es, err := tx.ListAudit(mayfly.AuditFilter{})
		for _, e := range es {
			if e.Subject == subject {
				out = append(out, e.Action)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTokenChecks: who may create which token, and for how long.
func TestTokenChecks(t *testing.T) {
	b, _ := newTokenBroker(t)
	ctx := context.Background()
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	root := Caller{User: "root", Admin: true}
	tests := []struct {
		name string
		c    Caller
		in   TokenInput
		code string
	}{
		{"own", alice, TokenInput{Name: "ci", TTL: time.Hour}, ""},
		{"admin for a service user", root, TokenInput{User: "svc", Name: "deploy", TTL: 24 * time.Hour}, ""},
		{"other user", alice, TokenInput{User: "svc", Name: "x", TTL: time.Hour}, mayfly.EFORBIDDEN},
		{"over the maximum", alice, TokenInput{Name: "x", TTL: 25 * time.Hour}, mayfly.EINVALID},
		{"admin over the maximum", root, TokenInput{User: "svc", Name: "x", TTL: 25 * time.Hour}, mayfly.EINVALID},
		{"no ttl", alice, TokenInput{Name: "x"}, mayfly.EINVALID},
		{"no name", alice, TokenInput{TTL: time.Hour}, mayfly.EINVALID},
		{"unknown user", root, TokenInput{User: "nobody", Name: "x", TTL: time.Hour}, mayfly.ENOTFOUND},
		{"session by a person", alice, TokenInput{Kind: mayfly.TokenSession, TTL: time.Hour}, mayfly.EFORBIDDEN},
		{"session by an admin", root, TokenInput{Kind: mayfly.TokenSession, User: "alice", TTL: time.Hour}, mayfly.EFORBIDDEN},
		{"session by mayfly", System, TokenInput{Kind: mayfly.TokenSession, User: "carol", Groups: []string{"sso"}, Method: "oidc", TTL: 48 * time.Hour}, ""},
	}
	for _, tt := range tests {
		plain, tok, err := b.CreateToken(ctx, tt.c, tt.in)
		if got := mayfly.ErrorCode(err); got != tt.code {
			t.Errorf("%s: CreateToken error %v (code %q); want code %q", tt.name, err, got, tt.code)
			continue
		}
		if err != nil {
			continue
		}
		prefix := "mft_"
		if tok.Kind == mayfly.TokenSession {
			prefix = "mfs_"
		}
		if !strings.HasPrefix(plain, prefix) || len(plain) != len(prefix)+43 || tok.Hash != mayfly.TokenHash(plain) {
			t.Errorf("%s: plaintext %q (hash %s); want %s and 43 base64url characters, hashed", tt.name, plain, tok.Hash, prefix)
		}
		if got, ok := b.ResolveToken(ctx, mayfly.TokenHash(plain)); !ok || got.ID != tok.ID {
			t.Errorf("%s: ResolveToken of a new token = %v, %v", tt.name, got, ok)
		}
	}
}

// TestTokenLifecycle: a token resolves until it expires; its first use is
// audited once and its last use written at most once a minute; a revoked
// token is refused at once; suspension revokes every token of the user.
func TestTokenLifecycle(t *testing.T) {
	b, clk := newTokenBroker(t)
	ctx := context.Background()
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	root := Caller{User: "root", Admin: true}
	get := func(id string) *mayfly.Token {
		t.Helper()
		var tk *mayfly.Token
		if err := b.Store().View(ctx, func(tx mayfly.Tx) error {
			var err error
			tk, err = tx.GetToken(id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return tk
	}

	plain, tok, err := b.CreateToken(ctx, alice, TokenInput{Name: "short", TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	h := mayfly.TokenHash(plain)
	start := clk.t
	if _, ok := b.ResolveToken(ctx, h); !ok {
		t.Fatal("new token refused")
	}
	if got := get(tok.ID).LastUsedAt; !got.Equal(start) {
		t.Errorf("last used after first use = %v; want %v", got, start)
	}
	clk.t = start.Add(30 * time.Second)
	b.ResolveToken(ctx, h)
	if got := get(tok.ID).LastUsedAt; !got.Equal(start) {
		t.Errorf("last used 30s later = %v; want still %v (written once a minute)", got, start)
	}
	clk.t = start.Add(61 * time.Second)
	b.ResolveToken(ctx, h)
	if got := get(tok.ID).LastUsedAt; !got.Equal(clk.t) {
		t.Errorf("last used 61s later = %v; want %v", got, clk.t)
	}
	if got, want := auditActions(t, b, "token:"+tok.ID), []string{"token.create", "token.first_use"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("audit of the token = %v; want %v", got, want)
	}
	clk.t = start.Add(10*time.Minute - time.Nanosecond)
	if _, ok := b.ResolveToken(ctx, h); !ok {
		t.Error("token refused before its expiry")
	}
	clk.t = start.Add(10 * time.Minute)
	if _, ok := b.ResolveToken(ctx, h); ok {
		t.Error("token accepted at its expiry")
	}

	// Revocation: refused at once although cached; the owner may revoke,
	// another user may not; a second revocation is harmless.
	plain2, tok2, err := b.CreateToken(ctx, alice, TokenInput{Name: "rev", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.ResolveToken(ctx, mayfly.TokenHash(plain2)); !ok {
		t.Fatal("token refused")
	}
	if err := b.RevokeToken(ctx, Caller{User: "svc"}, tok2.ID); mayfly.ErrorCode(err) != mayfly.EFORBIDDEN {
		t.Errorf("svc revoking alice's token: %v; want forbidden", err)
	}
	if err := b.RevokeToken(ctx, alice, tok2.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.ResolveToken(ctx, mayfly.TokenHash(plain2)); ok {
		t.Error("revoked token accepted")
	}
	if err := b.RevokeToken(ctx, alice, tok2.ID); err != nil {
		t.Errorf("revoking twice: %v", err)
	}
	if err := b.RevokeToken(ctx, alice, "tok_none"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Errorf("revoking a missing token: %v; want not found", err)
	}

	// Suspension revokes the user's tokens and sessions in the store, and
	// resuming does not bring them back.
	plain3, tok3, err := b.CreateToken(ctx, alice, TokenInput{Name: "sus", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	plain4, _, err := b.CreateToken(ctx, System, TokenInput{Kind: mayfly.TokenSession, User: "alice", Method: "oidc", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{plain3, plain4} {
		if _, ok := b.ResolveToken(ctx, mayfly.TokenHash(p)); !ok {
			t.Fatal("token refused before suspension")
		}
	}
	if _, _, err := b.SetUserStatus(ctx, root, "alice", UserSuspended, "left"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.SetUserStatus(ctx, root, "alice", UserActive, "back"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{plain3, plain4} {
		if _, ok := b.ResolveToken(ctx, mayfly.TokenHash(p)); ok {
			t.Error("token of a suspended (then resumed) user accepted")
		}
	}
	if got := get(tok3.ID).RevokedAt; got.IsZero() {
		t.Error("suspension left the token unrevoked in the store")
	}
	ts, err := b.ListTokens(ctx, alice, "")
	if err != nil || len(ts) != 4 {
		t.Errorf("alice's tokens = %d, %v; want 4", len(ts), err)
	}
	if _, err := b.ListTokens(ctx, alice, "svc"); mayfly.ErrorCode(err) != mayfly.EFORBIDDEN {
		t.Errorf("alice listing svc's tokens: %v; want forbidden", err)
	}
}

// BenchmarkResolveToken: a live token served from memory, and an unknown
// token (a store read every time).
func BenchmarkResolveToken(b *testing.B) {
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	br := New(&Config{}, Options{Store: st})
	ctx := context.Background()
	plain, _, err := br.CreateToken(ctx, Caller{User: "alice"}, TokenInput{Name: "bench", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		hash string
		ok   bool
	}{{"cached", mayfly.TokenHash(plain), true}, {"unknown", mayfly.TokenHash("mft_unknown"), false}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, ok := br.ResolveToken(ctx, bc.hash); ok != bc.ok {
					b.Fatalf("ResolveToken = %v; want %v", ok, bc.ok)
				}
			}
		})
	}
}

// TestTokensOfRemovedUsers: a user dropped from the configuration loses
// their tokens at the reload; the others keep theirs.
func TestTokensOfRemovedUsers(t *testing.T) {
	b, _ := newTokenBroker(t)
	ctx := context.Background()
	pa, _, err := b.CreateToken(ctx, Caller{User: "alice"}, TokenInput{Name: "a", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ps, _, err := b.CreateToken(ctx, Caller{User: "svc"}, TokenInput{Name: "s", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pa, ps} {
		if _, ok := b.ResolveToken(ctx, mayfly.TokenHash(p)); !ok {
			t.Fatal("token refused")
		}
	}
	if _, err := b.Reconfigure(ctx, &Config{Users: map[string][]string{"svc": nil}, UserOrder: []string{"svc"}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.ResolveToken(ctx, mayfly.TokenHash(pa)); ok {
		t.Error("token of a removed user accepted")
	}
	if _, ok := b.ResolveToken(ctx, mayfly.TokenHash(ps)); !ok {
		t.Error("token of a kept user refused")
	}
	if got := auditActions(t, b, "user:alice"); len(got) != 1 || got[0] != "token.revoke" {
		t.Errorf("audit of alice = %v; want [token.revoke]", got)
	}
}

// viewCounting is a store whose reads can be made to fail, counting them.
type viewCounting struct {
	mayfly.Store
	fail  bool
	views int
}

func (s *viewCounting) View(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	s.views++
	if s.fail {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "store away")
	}
	return s.Store.View(ctx, fn)
}

// TestChangesThroughAnotherBrokerHoldWithinASecond: two brokers share a
// store, as replicas do. A token revoked and a user suspended through one
// are refused by the other once it has held what it read for
// statusRecheck; while the store cannot be read, the other keeps what it
// last read and tries again once a statusRecheck, not on every call.
func TestChangesThroughAnotherBrokerHoldWithinASecond(t *testing.T) {
	ctx := context.Background()
	shared := openSQLite(t)
	clk := &fakeClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	cfg := func() *Config {
		return &Config{Users: map[string][]string{"alice": {"eng"}, "root": {"admins"}},
			UserOrder: []string{"alice", "root"}, MaxTokenTTL: 24 * time.Hour}
	}
	a := New(cfg(), Options{Store: shared, Clock: clk})
	bStore := &viewCounting{Store: shared}
	b := New(cfg(), Options{Store: bStore, Clock: clk})
	alice := Caller{User: "alice", Groups: []string{"eng"}}
	root := Caller{User: "root", Admin: true}

	plain, tok, err := a.CreateToken(ctx, alice, TokenInput{Name: "ci", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h := mayfly.TokenHash(plain)
	if _, ok := b.ResolveToken(ctx, h); !ok {
		t.Fatal("B refuses a live token made through A")
	}
	if err := a.RevokeToken(ctx, root, tok.ID); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(statusRecheck)
	if _, ok := b.ResolveToken(ctx, h); ok {
		t.Errorf("B accepts a token revoked through A %s later", statusRecheck)
	}

	if got := b.CurrentUserStatus(ctx, "alice"); got != UserActive {
		t.Fatalf("alice on B = %s; want active", got)
	}
	if _, _, err := a.SetUserStatus(ctx, root, "alice", UserSuspended, "left"); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(statusRecheck)
	if got := b.CurrentUserStatus(ctx, "alice"); got != UserSuspended {
		t.Errorf("alice on B %s after A suspended her = %s; want suspended", statusRecheck, got)
	}
	if _, _, err := a.SetUserStatus(ctx, root, "alice", UserActive, "back"); err != nil {
		t.Fatal(err)
	}

	// The store away: what B last read holds, read again once a second.
	plain2, _, err := a.CreateToken(ctx, alice, TokenInput{Name: "laptop", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h2 := mayfly.TokenHash(plain2)
	clk.t = clk.t.Add(statusRecheck)
	if _, ok := b.ResolveToken(ctx, h2); !ok {
		t.Fatal("B refuses a live token made through A")
	}
	clk.t = clk.t.Add(statusRecheck)
	bStore.fail, bStore.views = true, 0
	for range 5 {
		if _, ok := b.ResolveToken(ctx, h2); !ok {
			t.Fatal("B refuses a token it holds while the store cannot be read")
		}
	}
	if bStore.views != 2 {
		t.Errorf("5 calls with the store away read it %d times; want 2 (the token and alice's status, once)", bStore.views)
	}
	bStore.fail = false
	clk.t = clk.t.Add(statusRecheck)
	if _, ok := b.ResolveToken(ctx, h2); !ok {
		t.Error("B refuses the token once the store is back")
	}
}
