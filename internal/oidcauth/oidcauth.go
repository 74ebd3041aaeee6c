// Package oidcauth is single sign-on with OpenID Connect: it verifies the
// ID tokens an identity provider issues (with go-oidc: issuer, audience,
// expiry, signature from the provider's published keys, and our nonce),
// maps their claims to a Mayfly user and groups, and opens a Mayfly session
// for them. It serves the endpoints under /v1/auth/ that the CLI (code flow
// with PKCE on a loopback redirect, or the device authorization grant) and
// the browser (code flow with PKCE run by the server, ending in a session
// cookie) use.
package oidcauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
)

// Login methods recorded on the sessions a login opens.
const (
	MethodCLI     = "oidc"
	MethodDevice  = "oidc-device"
	MethodBrowser = "oidc-browser"
)

// CookieName is the cookie holding a browser's session token.
const CookieName = "mayfly_session"

// CSRFHeader must accompany every state-changing request authenticated by
// the session cookie. A browser sends a custom header cross-site only after
// a CORS preflight, which the API never grants, so its presence shows the
// request came from a page of Mayfly's own origin.
const CSRFHeader = "X-Mayfly-CSRF"

// Login is who the identity provider vouched for.
type Login struct {
	User   string
	Groups []string
	Method string
}

// Session is a session opened for a login.
type Session struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	Groups    []string  `json:"groups"`
	Method    string    `json:"method"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Sessions opens and ends Mayfly sessions; the broker's token store backs it.
type Sessions interface {
	// Open issues a session token for l.
	Open(ctx context.Context, l Login) (token string, expires time.Time, err error)
	// Close revokes the session whose token has the hex SHA-256 hash.
	Close(ctx context.Context, hash string) error
	// UserStatus returns active, suspended or deprovisioned.
	UserStatus(name string) string
}

// Options configure a Service.
type Options struct {
	Config   *config.OIDC
	Secret   string // client secret of a confidential client; "" for a public one
	Sessions Sessions
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// HTTPClient reaches the provider (default http.DefaultClient).
	HTTPClient *http.Client
	// Store keeps the logins in progress, shared by the replicas on it;
	// without one (or on a store that keeps none) they stay in this
	// process's memory.
	Store mayfly.Store
}

// Service verifies logins and opens sessions.
type Service struct {
	o     Options
	mu    sync.Mutex
	prov  *oidc.Provider // nil until discovered
	verif *oidc.IDTokenVerifier
	// states keeps the logins in progress: server-issued nonces and
	// browser states ("nonce:", "state:"), ID tokens that opened a session
	// without a nonce ("idtoken:"), and sessions waiting for a CLI to
	// collect them ("result:" and the login id). In the store when there
	// is one, so that any replica finishes a login another started.
	states stateSet
}

// polled is the outcome of a login a CLI polls for.
type polled struct {
	login Login
	err   error
	// code is what the browser showed; the CLI must send it back.
	code    string
	expires time.Time
}

// New returns the service. It discovers the provider at o.Config.Issuer
// on first use (and again after a failure), so the broker starts, and
// serves its other clients, while the provider is away.
func New(o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{o: o, states: stateSet{store: o.Store, log: o.Logger}}
}

// provider returns the discovered provider and its ID token verifier.
func (s *Service) provider(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prov != nil {
		return s.prov, s.verif, nil
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, s.o.httpClient()), s.o.Config.Issuer)
	if err != nil {
		return nil, nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "discover the OIDC provider %s: %v", s.o.Config.Issuer, err)
	}
	// The verifier fetches the provider's keys (and again when a token
	// names an unknown key) with a context of its own.
	s.prov = p
	s.verif = p.VerifierContext(oidc.ClientContext(context.Background(), s.o.httpClient()), &oidc.Config{ClientID: s.o.Config.ClientID, Now: s.o.Now})
	return s.prov, s.verif, nil
}

func (o *Options) httpClient() *http.Client {
	if o.HTTPClient != nil {
		return o.HTTPClient
	}
	return &http.Client{Timeout: 30 * time.Second}
}

// oauth2Config is the provider's OAuth 2.0 client for redirect.
func (s *Service) oauth2Config(ctx context.Context, redirect string) (*oauth2.Config, error) {
	p, _, err := s.provider(ctx)
	if err != nil {
		return nil, err
	}
	return &oauth2.Config{
		ClientID:     s.o.Config.ClientID,
		ClientSecret: s.o.Secret,
		Endpoint:     p.Endpoint(),
		RedirectURL:  redirect,
		Scopes:       s.o.Config.Scopes,
	}, nil
}

// errLogin is the error every refused login gets: which check failed.
func errLogin(format string, args ...any) error {
	return mayfly.Errorf(mayfly.EUNAUTHORIZED, "login refused: "+format, args...)
}

// verify checks rawIDToken (signature, issuer, audience, expiry) and, when
// nonce is set, that the token carries it.
func (s *Service) verify(ctx context.Context, rawIDToken, nonce string) (*oidc.IDToken, error) {
	_, v, err := s.provider(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := v.Verify(oidc.ClientContext(ctx, s.o.httpClient()), rawIDToken)
	if err != nil {
		return nil, errLogin("ID token: %v", err)
	}
	if nonce != "" && tok.Nonce != nonce {
		return nil, errLogin("ID token: its nonce is not the one this login sent")
	}
	return tok, nil
}

// login maps a verified token's claims to a login and checks the user may
// log in: allowed groups, and SCIM status.
func (s *Service) login(tok *oidc.IDToken, method string) (Login, error) {
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return Login{}, errLogin("ID token claims: %v", err)
	}
	c := s.o.Config
	user, _ := claims[c.UsernameClaim].(string)
	if user == "" && c.UsernameClaim == "preferred_username" {
		user, _ = claims["email"].(string)
	}
	if user == "" {
		return Login{}, errLogin("the ID token has no %q claim to name the user (set auth.oidc.username_claim)", c.UsernameClaim)
	}
	if len(user) > 128 || strings.IndexFunc(user, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return Login{}, errLogin("the ID token's user name %q is not a usable name", user)
	}
	groups, err := claimStrings(claims[c.GroupsClaim])
	if err != nil {
		return Login{}, errLogin("claim %q: %v", c.GroupsClaim, err)
	}
	slices.Sort(groups)
	groups = slices.Compact(groups)
	if len(c.AllowedGroups) > 0 && !slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(c.AllowedGroups, g) }) {
		return Login{}, mayfly.Errorf(mayfly.EFORBIDDEN, "login refused: %s is in none of the allowed groups (%s)", user, strings.Join(c.AllowedGroups, ", "))
	}
	if st := s.o.Sessions.UserStatus(user); st != "active" {
		return Login{}, mayfly.Errorf(mayfly.EFORBIDDEN, "login refused: user %s is %s", user, st)
	}
	return Login{User: user, Groups: groups, Method: method}, nil
}

// claimStrings reads a claim holding a list of strings (or one string).
func claimStrings(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return []string{}, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("want a list of strings, got an element of type %T", x)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a list of strings, got %T", v)
}

// open opens a session for l.
func (s *Service) open(ctx context.Context, l Login) (*Session, error) {
	tok, exp, err := s.o.Sessions.Open(ctx, l)
	if err != nil {
		return nil, err
	}
	s.o.Logger.Info("login", "user", l.User, "method", l.Method, "groups", l.Groups)
	return &Session{Token: tok, User: l.User, Groups: l.Groups, Method: l.Method, ExpiresAt: exp}, nil
}

// randomString returns n random bytes, base64url-encoded.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// pendingTTL bounds how long a nonce or a browser state waits for its login.
const pendingTTL = 10 * time.Minute

// pending is a login in progress: a server-issued nonce, and for the
// browser flow the PKCE verifier and where to return.
type pending struct {
	nonce    string
	verifier string
	redirect string
	returnTo string
	// poll, for a CLI login through the server's callback, is where the
	// CLI collects the session.
	poll    string
	expires time.Time
}

// errBusy refuses a login when too many are in progress.
var errBusy = mayfly.Errorf(mayfly.EUNAVAILABLE, "too many logins in progress; try again in a few minutes")
