package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func tokenIDs(ts []*mayfly.Token) []string {
	ids := []string{}
	for _, tk := range ts {
		ids = append(ids, tk.ID)
	}
	return ids
}

// testTokens covers the round trip of a token, lookups by id and hash,
// filters, updates and the revocation of a user's tokens.
func testTokens(t *testing.T, s mayfly.Store) {
	full := &mayfly.Token{ID: "tok_1", Name: "ci", User: "alice", Kind: mayfly.TokenAPI, Method: "token",
		CreatedBy: "admin", CreatedAt: base, ExpiresAt: base.Add(time.Hour), Hash: mayfly.TokenHash("one")}
	sess := &mayfly.Token{ID: "tok_2", Name: "login", User: "alice", Kind: mayfly.TokenSession, Groups: []string{"dba", "ops"},
		Method: "oidc", CreatedBy: "system", CreatedAt: base.Add(time.Second), ExpiresAt: base.Add(2 * time.Hour),
		Hash: mayfly.TokenHash("two")}
	bob := &mayfly.Token{ID: "tok_3", Name: "bob", User: "bob", Kind: mayfly.TokenAPI, Method: "token",
		CreatedBy: "bob", CreatedAt: base.Add(2 * time.Second), ExpiresAt: base.Add(time.Minute), Hash: mayfly.TokenHash("three")}
	update(t, s, func(tx mayfly.Tx) error {
		for _, tk := range []*mayfly.Token{full, sess, bob} {
			if err := tx.CreateToken(tk); err != nil {
				return err
			}
		}
		return nil
	})
	norm := func(tk *mayfly.Token) *mayfly.Token {
		c := *tk
		c.CreatedAt, c.ExpiresAt, c.LastUsedAt, c.RevokedAt = utc(c.CreatedAt), utc(c.ExpiresAt), utc(c.LastUsedAt), utc(c.RevokedAt)
		return &c
	}
	view(t, s, func(tx mayfly.Tx) error {
		for _, want := range []*mayfly.Token{full, sess, bob} {
			got, err := tx.GetToken(want.ID)
			if err != nil {
				t.Fatalf("GetToken(%s): %v", want.ID, err)
			}
			checkUTC(t, "GetToken created_at", got.CreatedAt)
			if !reflect.DeepEqual(got, norm(want)) {
				t.Errorf("GetToken(%s) = %+v; want %+v", want.ID, got, norm(want))
			}
			got, err = tx.GetTokenByHash(want.Hash)
			if err != nil {
				t.Fatalf("GetTokenByHash(%s): %v", want.ID, err)
			}
			if got.ID != want.ID {
				t.Errorf("GetTokenByHash(hash of %s) = %s", want.ID, got.ID)
			}
		}
		_, err := tx.GetToken("tok_none")
		wantCode(t, "GetToken of a missing id", err, mayfly.ENOTFOUND)
		_, err = tx.GetTokenByHash(mayfly.TokenHash("none"))
		wantCode(t, "GetTokenByHash of a missing hash", err, mayfly.ENOTFOUND)

		for _, c := range []struct {
			f    mayfly.TokenFilter
			want []string
		}{
			{mayfly.TokenFilter{}, []string{"tok_1", "tok_2", "tok_3"}},
			{mayfly.TokenFilter{User: "alice"}, []string{"tok_1", "tok_2"}},
			{mayfly.TokenFilter{Kind: mayfly.TokenSession}, []string{"tok_2"}},
			{mayfly.TokenFilter{Live: true, Now: base.Add(30 * time.Minute)}, []string{"tok_1", "tok_2"}},
			{mayfly.TokenFilter{Live: true, Now: base.Add(90 * time.Minute)}, []string{"tok_2"}},
		} {
			ts, err := tx.ListTokens(c.f)
			if err != nil {
				t.Fatalf("ListTokens(%+v): %v", c.f, err)
			}
			if got := tokenIDs(ts); !reflect.DeepEqual(got, c.want) {
				t.Errorf("ListTokens(%+v) = %v; want %v", c.f, got, c.want)
			}
		}
		return nil
	})

	// Same id or same hash: conflict.
	update(t, s, func(tx mayfly.Tx) error {
		dup := *bob
		dup.Hash = mayfly.TokenHash("other")
		wantCode(t, "CreateToken of an existing id", tx.CreateToken(&dup), mayfly.ECONFLICT)
		dup = *bob
		dup.ID = "tok_4"
		wantCode(t, "CreateToken of an existing hash", tx.CreateToken(&dup), mayfly.ECONFLICT)
		missing := *bob
		missing.ID = "tok_none"
		wantCode(t, "UpdateToken of a missing id", tx.UpdateToken(&missing), mayfly.ENOTFOUND)
		return nil
	})

	used := base.Add(5 * time.Minute)
	update(t, s, func(tx mayfly.Tx) error {
		tk, err := tx.GetToken("tok_3")
		if err != nil {
			return err
		}
		tk.LastUsedAt = used
		tk.Name = "ignored" // only LastUsedAt and RevokedAt are written
		return tx.UpdateToken(tk)
	})
	at := base.Add(10 * time.Minute)
	update(t, s, func(tx mayfly.Tx) error {
		n, err := tx.RevokeUserTokens("alice", at)
		if err != nil {
			return err
		}
		if n != 2 {
			t.Errorf("RevokeUserTokens(alice) = %d; want 2", n)
		}
		if n, err := tx.RevokeUserTokens("alice", at.Add(time.Minute)); err != nil || n != 0 {
			t.Errorf("RevokeUserTokens(alice) again = %d, %v; want 0", n, err)
		}
		return nil
	})
	view(t, s, func(tx mayfly.Tx) error {
		tk, err := tx.GetToken("tok_3")
		if err != nil {
			return err
		}
		if !tk.LastUsedAt.Equal(used) || tk.Name != "bob" || !tk.RevokedAt.IsZero() {
			t.Errorf("after UpdateToken: %+v; want last used %v, name bob, not revoked", tk, used)
		}
		for _, id := range []string{"tok_1", "tok_2"} {
			tk, err := tx.GetToken(id)
			if err != nil {
				return err
			}
			if !tk.RevokedAt.Equal(at) {
				t.Errorf("%s revoked at %v; want %v", id, tk.RevokedAt, at)
			}
		}
		ts, err := tx.ListTokens(mayfly.TokenFilter{Live: true, Now: base})
		if err != nil {
			return err
		}
		if got := tokenIDs(ts); !reflect.DeepEqual(got, []string{"tok_3"}) {
			t.Errorf("live tokens after revoking alice's = %v; want [tok_3]", got)
		}
		return nil
	})
}
