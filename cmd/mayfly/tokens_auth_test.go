package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// tokenAuthWorld is a broker on a fresh store with the server's
// authenticator and API handler, and one configured user with a static
// token.
func tokenAuthWorld(tb testing.TB) (*broker.Broker, *authenticator, http.Handler) {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "m.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	cfg := &config.Config{
		Users:  []config.User{{Name: "alice", Groups: []string{"eng"}, TokenSHA256: sha256Hex("static-alice")}},
		Admins: config.Admins{Groups: []string{"admin"}},
	}
	bc, err := brokerConfig(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := broker.New(bc, broker.Options{Store: st, Logger: log})
	auth := &authenticator{status: b.UserStatus, tokens: b.ResolveToken}
	auth.load(cfg)
	return b, auth, httpapi.NewServer(httpapi.Deps{Broker: b, Auth: auth, Logger: log})
}

// TestAuthenticateStoredTokens: an API token takes its user's configured
// groups; a session takes the groups it carries, for a user the
// configuration need not list, and is an admin through them.
func TestAuthenticateStoredTokens(t *testing.T) {
	b, auth, _ := tokenAuthWorld(t)
	ctx := context.Background()
	api, _, err := b.CreateToken(ctx, broker.Caller{User: "alice"}, broker.TokenInput{Name: "ci", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	sess, _, err := b.CreateToken(ctx, broker.System, broker.TokenInput{Kind: mayfly.TokenSession, User: "erin",
		Groups: []string{"admin", "sre"}, Method: "oidc", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		tok    string
		user   string
		groups []string
		admin  bool
	}{
		{"static", "static-alice", "alice", []string{"eng"}, false},
		{"api token", api, "alice", []string{"eng"}, false},
		{"session of a user not in the configuration", sess, "erin", []string{"admin", "sre"}, true},
	} {
		id, ok := auth.Authenticate(sha256Hex(tt.tok))
		if !ok || id.Name != tt.user || !slices.Equal(id.Groups, tt.groups) || id.Admin != tt.admin {
			t.Errorf("%s: Authenticate = %+v, %v; want %s %v admin=%v", tt.name, id, ok, tt.user, tt.groups, tt.admin)
		}
	}
	if _, ok := auth.Authenticate(sha256Hex("mft_unknown")); ok {
		t.Error("an unknown token authenticated")
	}
}

// BenchmarkAuthenticate measures GET /v1/whoami through the API handler,
// authenticated by a static token from the configuration and by a stored
// API token (docs/benchmarks.md).
func BenchmarkAuthenticate(b *testing.B) {
	// What is measured is the server's path, not the tests' check of
	// every answer against the API description (TestMain).
	check := httpapi.ResponseCheck
	httpapi.ResponseCheck = nil
	defer func() { httpapi.ResponseCheck = check }()
	br, _, h := tokenAuthWorld(b)
	api, _, err := br.CreateToken(context.Background(), broker.Caller{User: "alice"}, broker.TokenInput{Name: "bench", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, tok string }{{"static", "static-alice"}, {"stored", api}} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/v1/whoami", nil)
			req.Header.Set("Authorization", "Bearer "+bc.tok)
			req.RemoteAddr = "127.0.0.1:5000"
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("whoami: %d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
