// Package oidctest runs a real OpenID provider (zitadel/oidc's op package)
// on loopback for tests, with an in-memory storage: users with groups, a
// public native client for the CLI's loopback and device flows and the
// browser flow, and a confidential one. Its login page signs in, without a
// form, the user the test chose; device codes are approved by the test.
// Test code only.
package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Client ids the provider knows.
const (
	PublicClient       = "mayfly-cli"
	ConfidentialClient = "mayfly-web"
	ClientSecret       = "web-client-secret-for-tests"
)

// User is a user the provider vouches for.
type User struct {
	Name   string // preferred_username
	Email  string
	Groups []string
}

// Provider is a running OpenID provider.
type Provider struct {
	Issuer string
	// Key signs the provider's tokens; KeyID names it in their header.
	Key   *rsa.PrivateKey
	KeyID string
	st    *storage
	srv   *httptest.Server
}

// Start runs a provider on 127.0.0.1 until the test ends.
func Start(t testing.TB, users ...User) *Provider {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	st := &storage{
		key: key, keyID: "test-key-1",
		users: map[string]User{}, requests: map[string]*authRequest{}, codes: map[string]string{},
		devices: map[string]*deviceEntry{}, userCodes: map[string]string{}, tokens: map[string]bool{},
	}
	for _, u := range users {
		st.users[u.Name] = u
	}
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	cfg := &op.Config{
		CryptoKey:      sha256.Sum256([]byte("mayfly oidctest")),
		CodeMethodS256: true,
		AuthMethodPost: true,
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime: 5 * time.Minute, PollInterval: time.Second, UserFormPath: "/device", UserCode: op.UserCodeBase20,
		},
	}
	prov, err := op.NewProvider(cfg, st, op.StaticIssuer(issuer), op.WithAllowInsecure())
	if err != nil {
		t.Fatalf("start OpenID provider: %v", err)
	}
	callback := op.AuthCallbackURL(prov)
	mux := http.NewServeMux()
	// The login page: sign in the chosen user and go back to the OP.
	mux.Handle("/login", op.NewIssuerInterceptor(prov.IssuerFromRequest).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		if err := st.complete(id); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		http.Redirect(w, r, callback(r.Context(), id), http.StatusFound)
	}))
	mux.Handle("/", prov)
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	return &Provider{Issuer: issuer, Key: key, KeyID: st.keyID, st: st, srv: srv}
}

// SetUser chooses who the login page signs in from now on ("" refuses
// every login).
func (p *Provider) SetUser(name string) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	p.st.current = name
}

// SetGroups changes a user's groups.
func (p *Provider) SetGroups(name string, groups ...string) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	u := p.st.users[name]
	u.Groups = groups
	p.st.users[name] = u
}

// ApproveDevice completes the device authorization with userCode as user.
func (p *Provider) ApproveDevice(userCode, user string) error {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	e, ok := p.st.devices[p.st.userCodes[userCode]]
	if !ok {
		return fmt.Errorf("no device authorization with user code %q", userCode)
	}
	if _, ok := p.st.users[user]; !ok {
		return fmt.Errorf("no user %q", user)
	}
	e.state.Subject = user
	e.state.Done = true
	return nil
}

// Sign signs claims with the provider's own key, as the provider would.
func (p *Provider) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	return SignWith(t, p.Key, p.KeyID, claims)
}

// SignWith signs claims as a JWT with key under key id kid (RS256).
func SignWith(t testing.TB, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := sig.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// storage is the provider's in-memory state.
type storage struct {
	mu        sync.Mutex
	key       *rsa.PrivateKey
	keyID     string
	users     map[string]User
	current   string
	requests  map[string]*authRequest
	codes     map[string]string // code → request id
	devices   map[string]*deviceEntry
	userCodes map[string]string // user code → device code
	tokens    map[string]bool
	seq       int
}

type deviceEntry struct {
	state *op.DeviceAuthorizationState
}

func (s *storage) newID(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s-%d", prefix, s.seq)
}

// complete signs the current user in for auth request id.
func (s *storage) complete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	if !ok {
		return errors.New("unknown auth request")
	}
	if _, ok := s.users[s.current]; !ok {
		return errors.New("nobody may log in now")
	}
	r.subject = s.current
	r.done = true
	r.authTime = time.Now()
	return nil
}

var errNotFound = errors.New("not found")

func (s *storage) CreateAuthRequest(_ context.Context, ar *oidc.AuthRequest, userID string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &authRequest{AuthRequest: ar, id: s.newID("ar"), subject: userID}
	s.requests[r.id] = r
	return r, nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	if !ok {
		return nil, errNotFound
	}
	return r, nil
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errNotFound
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for c, rid := range s.codes {
		if rid == id {
			delete(s.codes, c)
		}
	}
	return nil
}

func (s *storage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newID("at")
	s.tokens[id] = true
	return id, time.Now().Add(5 * time.Minute), nil
}

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errors.New("refresh tokens are not supported")
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errors.New("refresh tokens are not supported")
}

func (s *storage) TerminateSession(context.Context, string, string) error { return nil }

func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error { return nil }

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s.key, s.keyID}, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{s.key, s.keyID}}, nil
}

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	switch id {
	case PublicClient:
		return client{id: id, method: oidc.AuthMethodNone}, nil
	case ConfidentialClient:
		return client{id: id, method: oidc.AuthMethodBasic}, nil
	}
	return nil, errNotFound
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	if id == ConfidentialClient && secret == ClientSecret {
		return nil
	}
	return errors.New("invalid client secret")
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest fills the ID token's claims.
func (s *storage) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	return s.setUserinfo(ui, req.GetSubject(), scopes)
}

func (s *storage) setUserinfo(ui *oidc.UserInfo, subject string, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[subject]
	if !ok {
		return errNotFound
	}
	ui.Subject = subject
	if slices.Contains(scopes, oidc.ScopeProfile) {
		ui.PreferredUsername = u.Name
	}
	if slices.Contains(scopes, oidc.ScopeEmail) {
		ui.Email = u.Email
		ui.EmailVerified = true
	}
	groups := u.Groups
	if groups == nil {
		groups = []string{}
	}
	ui.AppendClaims("groups", groups)
	return nil
}

func (s *storage) SetUserinfoFromToken(_ context.Context, ui *oidc.UserInfo, _, subject, _ string) error {
	return s.setUserinfo(ui, subject, []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail})
}

func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errors.New("introspection is not supported")
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errNotFound
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("JWT profile is not supported")
}

func (s *storage) Health(context.Context) error { return nil }

// Device authorization grant.

func (s *storage) StoreDeviceAuthorization(_ context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.userCodes[userCode]; ok {
		return op.ErrDuplicateUserCode
	}
	s.devices[deviceCode] = &deviceEntry{state: &op.DeviceAuthorizationState{ClientID: clientID, Scopes: scopes, Expires: expires}}
	s.userCodes[userCode] = deviceCode
	return nil
}

func (s *storage) GetDeviceAuthorizatonState(_ context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.devices[deviceCode]
	if !ok || e.state.ClientID != clientID {
		return nil, errNotFound
	}
	st := *e.state
	return &st, nil
}

// authRequest is an authorization request in progress.
type authRequest struct {
	*oidc.AuthRequest
	id       string
	subject  string
	done     bool
	authTime time.Time
}

func (a *authRequest) GetID() string         { return a.id }
func (a *authRequest) GetACR() string        { return "" }
func (a *authRequest) GetAMR() []string      { return []string{"pwd"} }
func (a *authRequest) GetAudience() []string { return []string{a.ClientID} }
func (a *authRequest) GetAuthTime() time.Time {
	return a.authTime
}
func (a *authRequest) GetClientID() string { return a.ClientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.CodeChallenge, Method: a.CodeChallengeMethod}
}
func (a *authRequest) GetNonce() string                   { return a.Nonce }
func (a *authRequest) GetRedirectURI() string             { return a.RedirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType { return a.ResponseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return a.ResponseMode }
func (a *authRequest) GetScopes() []string                { return a.Scopes }
func (a *authRequest) GetState() string                   { return a.State }
func (a *authRequest) GetSubject() string                 { return a.subject }
func (a *authRequest) Done() bool                         { return a.done }

// client is a registered client: loopback redirects on any port (RFC
// 8252) for the CLI and the browser flow of a broker on loopback.
type client struct {
	id     string
	method oidc.AuthMethod
}

func (c client) GetID() string { return c.id }
func (c client) RedirectURIs() []string {
	return []string{"http://127.0.0.1/callback", "http://127.0.0.1/v1/auth/callback"}
}
func (c client) PostLogoutRedirectURIs() []string    { return nil }
func (c client) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (c client) AuthMethod() oidc.AuthMethod         { return c.method }
func (c client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c client) LoginURL(id string) string            { return "/login?id=" + id }
func (c client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c client) IDTokenLifetime() time.Duration       { return 5 * time.Minute }
func (c client) DevMode() bool                        { return false }
func (c client) IsScopeAllowed(string) bool           { return false }
func (c client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c client) ClockSkew() time.Duration             { return 0 }
func (c client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeDeviceCode}
}

type signingKey struct {
	key *rsa.PrivateKey
	id  string
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct {
	key *rsa.PrivateKey
	id  string
}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.key.PublicKey }
