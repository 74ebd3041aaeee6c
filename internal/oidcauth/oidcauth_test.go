package oidcauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/oidctest"
)

// fakeSessions records the sessions opened; statuses are set by tests.
type fakeSessions struct {
	mu     sync.Mutex
	opened []Login
	status map[string]string
}

func (f *fakeSessions) Open(_ context.Context, l Login) (string, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened = append(f.opened, l)
	return fmt.Sprintf("mfs_test%d", len(f.opened)), time.Now().Add(time.Hour), nil
}

func (f *fakeSessions) Close(context.Context, string) error { return nil }

func (f *fakeSessions) UserStatus(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.status[name]; s != "" {
		return s
	}
	return "active"
}

type fixture struct {
	p    *oidctest.Provider
	svc  *Service
	sess *fakeSessions
	api  *httptest.Server
}

func newFixture(t *testing.T, mod func(*config.OIDC)) *fixture {
	t.Helper()
	p := oidctest.Start(t,
		oidctest.User{Name: "alice", Email: "alice@example.com", Groups: []string{"eng"}},
		oidctest.User{Name: "mallory", Email: "mallory@example.com", Groups: []string{"contractors"}})
	p.SetUser("alice")
	o := &config.OIDC{Issuer: p.Issuer, ClientID: oidctest.PublicClient, Scopes: []string{"openid", "profile", "email"},
		UsernameClaim: "preferred_username", GroupsClaim: "groups"}
	if mod != nil {
		mod(o)
	}
	f := &fixture{p: p, sess: &fakeSessions{status: map[string]string{}}}
	f.svc = New(Options{Config: o, Sessions: f.sess})
	f.api = httptest.NewServer(f.svc.Handler())
	t.Cleanup(f.api.Close)
	return f
}

// browse follows redirects like a browser, from u until one points at a
// callback path, and returns that callback URL without fetching it.
func browse(t *testing.T, u string) *url.URL {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for range 10 {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("GET %s: %s %s; want a redirect", u, resp.Status, body)
		}
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		if loc.Path == "/callback" || loc.Path == "/v1/auth/callback" {
			return loc
		}
		u = loc.String()
	}
	t.Fatalf("too many redirects")
	return nil
}

// cliCode runs the CLI's half of a code flow (PKCE, state, the server's
// nonce) and returns what it would post to the session endpoint.
func (f *fixture) cliCode(t *testing.T, nonce string) SessionInput {
	t.Helper()
	return f.cliCodeFor(t, oidctest.PublicClient, nonce)
}

func (f *fixture) cliCodeFor(t *testing.T, clientID, nonce string) SessionInput {
	t.Helper()
	redirect := "http://127.0.0.1:45678/callback"
	cfg := &oauth2.Config{ClientID: clientID, RedirectURL: redirect, Scopes: []string{"openid", "profile", "email"},
		Endpoint: oauth2.Endpoint{AuthURL: f.p.Issuer + "/authorize"}}
	verifier := oauth2.GenerateVerifier()
	u := cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce))
	cb := browse(t, u)
	if cb.Query().Get("state") != "st" || cb.Query().Get("code") == "" {
		t.Fatalf("callback %s: want state st and a code", cb)
	}
	return SessionInput{Code: cb.Query().Get("code"), CodeVerifier: verifier, RedirectURI: redirect, Nonce: nonce}
}

func (f *fixture) nonce(t *testing.T) string {
	t.Helper()
	resp, err := http.Post(f.api.URL+"/v1/auth/oidc/start", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Nonce string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Nonce == "" {
		t.Fatalf("start: %v %+v", err, out)
	}
	return out.Nonce
}

func TestCodeFlowOpensOneSessionPerNonce(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	n := f.nonce(t)
	in := f.cliCode(t, n)
	s, err := f.svc.Session(ctx, in)
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	if s.User != "alice" || strings.Join(s.Groups, ",") != "eng" || s.Method != MethodCLI || s.Token == "" {
		t.Errorf("session = %+v; want alice in eng by oidc", s)
	}
	// The same code, verifier and nonce again: the nonce is spent.
	if _, err := f.svc.Session(ctx, in); mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED || !strings.Contains(mayfly.ErrorMessage(err), "nonce") {
		t.Errorf("replayed login: %v; want refused for its nonce", err)
	}
	// A fresh code whose token carries another nonce than the one sent.
	n1, n2 := f.nonce(t), f.nonce(t)
	in = f.cliCode(t, n1)
	in.Nonce = n2
	if _, err := f.svc.Session(ctx, in); err == nil || !strings.Contains(mayfly.ErrorMessage(err), "nonce is not the one") {
		t.Errorf("mismatched nonce: %v; want refused", err)
	}
	// A nonce the server never issued.
	in = f.cliCode(t, "made-up")
	if _, err := f.svc.Session(ctx, in); err == nil || !strings.Contains(mayfly.ErrorMessage(err), "nonce unknown") {
		t.Errorf("unissued nonce: %v; want refused", err)
	}
	// A wrong PKCE verifier.
	n = f.nonce(t)
	in = f.cliCode(t, n)
	in.CodeVerifier = oauth2.GenerateVerifier()
	if _, err := f.svc.Session(ctx, in); mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED {
		t.Errorf("wrong verifier: %v; want refused", err)
	}
	if len(f.sess.opened) != 1 {
		t.Errorf("opened %d sessions; want 1", len(f.sess.opened))
	}
}

func TestIDTokensAreVerified(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": f.p.Issuer, "aud": oidctest.PublicClient, "sub": "alice", "preferred_username": "alice",
			"groups": []string{"eng"}, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	for _, tc := range []struct {
		name, token, want string
	}{
		{"expired", f.p.Sign(t, claims(func(c map[string]any) { c["iat"] = now.Add(-time.Hour).Unix(); c["exp"] = now.Add(-time.Minute).Unix() })), "expired"},
		{"signed by another key", oidctest.SignWith(t, other, f.p.KeyID, claims(nil)), "signature"},
		{"another key id", oidctest.SignWith(t, other, "unknown-key", claims(nil)), "signature"},
		{"wrong audience", f.p.Sign(t, claims(func(c map[string]any) { c["aud"] = "someone-else" })), "audience"},
		{"wrong issuer", f.p.Sign(t, claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), "different provider"},
		{"no user claim", f.p.Sign(t, claims(func(c map[string]any) { delete(c, "preferred_username") })), "preferred_username"},
		{"not a JWT", "not-a-token", "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.Session(ctx, SessionInput{IDToken: tc.token})
			if mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED || !strings.Contains(mayfly.ErrorMessage(err), tc.want) {
				t.Errorf("Session = %v; want unauthorized mentioning %q", err, tc.want)
			}
		})
	}
	if len(f.sess.opened) != 0 {
		t.Fatalf("opened %v; want none", f.sess.opened)
	}
	// A good token opens one session, once.
	good := f.p.Sign(t, claims(nil))
	if s, err := f.svc.Session(ctx, SessionInput{IDToken: good}); err != nil || s.Method != MethodDevice {
		t.Fatalf("good token: %+v, %v", s, err)
	}
	if _, err := f.svc.Session(ctx, SessionInput{IDToken: good}); err == nil || !strings.Contains(mayfly.ErrorMessage(err), "already opened") {
		t.Errorf("replayed token: %v; want refused", err)
	}
	// A token with a nonce needs that nonce, issued and unused.
	withNonce := f.p.Sign(t, claims(func(c map[string]any) { c["nonce"] = "n-1" }))
	if _, err := f.svc.Session(ctx, SessionInput{IDToken: withNonce}); err == nil || !strings.Contains(mayfly.ErrorMessage(err), "carries a nonce") {
		t.Errorf("token with nonce, none sent: %v; want refused", err)
	}
	n := f.nonce(t)
	tok := f.p.Sign(t, claims(func(c map[string]any) { c["nonce"] = n }))
	if _, err := f.svc.Session(ctx, SessionInput{IDToken: tok, Nonce: n}); err != nil {
		t.Fatalf("token with its issued nonce: %v", err)
	}
	tok2 := f.p.Sign(t, claims(func(c map[string]any) { c["nonce"] = n; c["iat"] = now.Add(time.Second).Unix() }))
	if _, err := f.svc.Session(ctx, SessionInput{IDToken: tok2, Nonce: n}); err == nil || !strings.Contains(mayfly.ErrorMessage(err), "already used") {
		t.Errorf("replayed nonce: %v; want refused", err)
	}
}

func TestClaimsAndStatusDecideWhoLogsIn(t *testing.T) {
	f := newFixture(t, func(o *config.OIDC) { o.AllowedGroups = []string{"eng"} })
	ctx := context.Background()
	now := time.Now()
	sign := func(user string, groups any) string {
		return f.p.Sign(t, map[string]any{"iss": f.p.Issuer, "aud": oidctest.PublicClient, "sub": user, "preferred_username": user,
			"groups": groups, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()})
	}
	if _, err := f.svc.Session(ctx, SessionInput{IDToken: sign("mallory", []string{"contractors"})}); mayfly.ErrorCode(err) != mayfly.EFORBIDDEN {
		t.Errorf("user outside allowed groups: %v; want forbidden", err)
	}
	f.sess.status["alice"] = "suspended"
	if _, err := f.svc.Session(ctx, SessionInput{IDToken: sign("alice", []string{"eng"})}); mayfly.ErrorCode(err) != mayfly.EFORBIDDEN || !strings.Contains(mayfly.ErrorMessage(err), "suspended") {
		t.Errorf("suspended user: %v; want forbidden", err)
	}
	f.sess.status["alice"] = ""
	s, err := f.svc.Session(ctx, SessionInput{IDToken: sign("alice", "eng")})
	if err != nil || strings.Join(s.Groups, ",") != "eng" {
		t.Errorf("groups as one string: %+v %v", s, err)
	}
}

func TestDeviceFlow(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	cfg := &oauth2.Config{ClientID: oidctest.PublicClient, Scopes: []string{"openid", "profile", "email"},
		Endpoint: oauth2.Endpoint{DeviceAuthURL: f.p.Issuer + "/device_authorization", TokenURL: f.p.Issuer + "/oauth/token"}}
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	if err := f.p.ApproveDevice(da.UserCode, "alice"); err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("device token: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	s, err := f.svc.Session(ctx, SessionInput{IDToken: raw})
	if err != nil || s.User != "alice" || s.Method != MethodDevice {
		t.Fatalf("device session = %+v, %v", s, err)
	}
}

func TestBrowserFlow(t *testing.T) {
	f := newFixture(t, nil)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cb := browse(t, f.api.URL+"/v1/auth/login?return=/leases")
	resp, err := c.Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/leases" {
		t.Fatalf("callback: %s to %q; want 303 to /leases", resp.Status, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "mayfly_session" {
			ck = c
		}
	}
	if ck == nil || ck.Value != "mfs_test1" || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" {
		t.Fatalf("cookie = %+v; want mayfly_session, HttpOnly, Secure, SameSite=Lax, Path=/", ck)
	}
	if f.sess.opened[0].Method != MethodBrowser {
		t.Errorf("method = %s; want %s", f.sess.opened[0].Method, MethodBrowser)
	}
	// The same callback again: its state is spent.
	resp, err = c.Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "state unknown") {
		t.Errorf("replayed callback: %s %s; want 401 for the state", resp.Status, body)
	}
	// A return address off this server is refused.
	resp, err = c.Get(f.api.URL + "/v1/auth/login?return=//evil.example/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("return to another host: %s; want 400", resp.Status)
	}
}

// TestConfidentialClient: with a client secret the server's code exchange
// authenticates with it; a wrong secret is refused by the provider.
func TestConfidentialClient(t *testing.T) {
	for _, tc := range []struct {
		secret string
		ok     bool
	}{{oidctest.ClientSecret, true}, {"wrong-secret", false}} {
		f := newFixture(t, func(o *config.OIDC) { o.ClientID = oidctest.ConfidentialClient })
		f.svc.o.Secret = tc.secret
		resp, err := http.Get(f.api.URL + "/v1/auth/oidc")
		if err != nil {
			t.Fatal(err)
		}
		var info Info
		json.NewDecoder(resp.Body).Decode(&info)
		resp.Body.Close()
		if !info.Confidential || info.ClientID != oidctest.ConfidentialClient {
			t.Errorf("info = %+v; want the confidential client", info)
		}
		n := f.nonce(t)
		in := f.cliCodeFor(t, oidctest.ConfidentialClient, n)
		s, err := f.svc.Session(context.Background(), in)
		if tc.ok && (err != nil || s.User != "alice") {
			t.Errorf("secret %q: %+v, %v; want alice's session", tc.secret, s, err)
		}
		if !tc.ok && mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED {
			t.Errorf("secret %q: %v; want refused", tc.secret, err)
		}
	}
}
