// Package httpapi is Mayfly's HTTP JSON API under /v1 — the only way in —
// and the small Go client the CLI uses. Errors are
// {"error": {"code", "message"}} with the status from one table.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/metrics"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// statusOf maps error codes to HTTP statuses; codeOf is its inverse.
var statusOf = map[string]int{
	mayfly.EINVALID:      http.StatusBadRequest,
	mayfly.EUNAUTHORIZED: http.StatusUnauthorized,
	mayfly.EFORBIDDEN:    http.StatusForbidden,
	mayfly.ENOTFOUND:     http.StatusNotFound,
	mayfly.ECONFLICT:     http.StatusConflict,
	mayfly.EUNAVAILABLE:  http.StatusServiceUnavailable,
	mayfly.EINTERNAL:     http.StatusInternalServerError,
}

// Identity is an authenticated API user.
type Identity struct {
	Name   string
	Groups []string
	Admin  bool
	// Method is how the token was obtained ("oidc", "oidc-device",
	// "oidc-browser", "token"); "" for a token of the configuration.
	Method string
	// ExpiresAt is when the token expires; zero for one that does not.
	ExpiresAt time.Time
}

// Authenticator resolves the hex SHA-256 of a bearer token to an identity.
type Authenticator interface {
	Authenticate(tokenSHA256 string) (Identity, bool)
}

// RefusalExplainer is implemented by an Authenticator that can say why it
// refused a valid token, e.g. that its user is suspended ("" when it
// cannot: the token is unknown, expired or revoked).
type RefusalExplainer interface {
	Refusal(tokenSHA256 string) string
}

// Deps are what the server needs.
type Deps struct {
	Broker *broker.Broker
	Auth   Authenticator
	Logger *slog.Logger
	// Ready reports whether the server can serve (store and scheduler).
	Ready func(ctx context.Context) error
	// SSH serves the SSH certificate authority; nil without SSH targets.
	SSH SSHService
	// Metrics, when set, are served at /metrics and record API latency.
	Metrics *metrics.Metrics
	// SCIM, when set, is mounted at /scim/v2/ (it authenticates itself).
	SCIM http.Handler
	// ArchiveDir receives audit events pruned by retention.
	ArchiveDir string
	// Reload re-reads the configuration file (policy reload) and says
	// what it could not apply (a restart does) and what looks wrong; nil
	// when the server has none.
	Reload func() (ReloadResult, error)
	// MetricsTokenSHA256, when set, is the hex SHA-256 of the bearer token
	// /metrics requires.
	MetricsTokenSHA256 string
	// Version is the server's version, in the API description.
	Version string
	// RevokedKeysTokenSHA256, when set, is the hex SHA-256 of a token that
	// reads the SSH revocation lists and nothing else (for hosts).
	RevokedKeysTokenSHA256 string
	// Login, when set, serves /v1/auth/ (single sign-on; it authenticates
	// itself where it needs to).
	Login http.Handler
	// ReplicaID is this server's id among the replicas sharing the store
	// (shown by /readyz).
	ReplicaID string
	// Cluster, when set, returns the replicas sharing the store and the
	// work each leads (GET /v1/cluster).
	Cluster func(ctx context.Context) (any, error)
	// Credentials, when set, keeps targets' admin credentials sealed
	// (PUT /v1/targets/{name}/credential and its rotation).
	Credentials CredentialService
}

// SSHService is the SSH certificate authority as the API exposes it.
type SSHService interface {
	// CAPublicKeys returns authorized_keys lines for TrustedUserCAKeys.
	CAPublicKeys() []string
	// RotateCA rotates the CA's signing key: step "prepare" publishes the
	// next key (trusted by hosts that fetch the keys, signing nothing yet),
	// "activate" makes it sign, "now" does both at once.
	RotateCA(step string) error
	// CANextKey returns the published next key, if any.
	CANextKey() (public string, created time.Time, ok bool)
	// RevokedKeys returns the RevokedKeys file (an OpenSSH KRL) of a target.
	RevokedKeys(target string) ([]byte, error)
}

type server struct {
	Deps
}

// NewServer returns the API handler.
func NewServer(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	s := &server{Deps: d}
	mux := http.NewServeMux()
	s.routes(mux)
	return checkResponses(s.logRequests(mux))
}

type ctxKey struct{}

// identityKey keys the request's Identity in its context.
type identityKey struct{}

func callerFrom(r *http.Request) broker.Caller {
	c, _ := r.Context().Value(ctxKey{}).(broker.Caller)
	return c
}

// authed wraps h so it runs only with a valid bearer token.
func (s *server) authed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := RequestToken(r)
		if err != nil {
			writeError(w, err)
			return
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		id, ok := s.Auth.Authenticate(hex.EncodeToString(sum[:]))
		if !ok {
			if re, ok := s.Auth.(RefusalExplainer); ok {
				if msg := re.Refusal(hex.EncodeToString(sum[:])); msg != "" {
					writeError(w, mayfly.Errorf(mayfly.EFORBIDDEN, "%s", msg))
					return
				}
			}
			writeError(w, mayfly.Errorf(mayfly.EUNAUTHORIZED, "unknown or revoked token"))
			return
		}
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		c := broker.Caller{User: id.Name, Groups: id.Groups, Admin: id.Admin, Source: host}
		ctx := context.WithValue(context.WithValue(r.Context(), ctxKey{}, c), identityKey{}, id)
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// SessionCookie holds a browser's session token.
const SessionCookie = "mayfly_session"

// CSRFHeader must accompany every state-changing request authenticated by
// the session cookie: a browser sends a custom header cross-site only after
// a CORS preflight, which the API never grants.
const CSRFHeader = "X-Mayfly-CSRF"

// RequestToken returns the bearer token of r, or else its session cookie
// (for a state-changing method only with the CSRFHeader).
func RequestToken(r *http.Request) (string, error) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && strings.TrimSpace(tok) != "" {
		return tok, nil
	}
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return "", mayfly.Errorf(mayfly.EUNAUTHORIZED, "missing bearer token (set MAYFLY_TOKEN or run mayfly login)")
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if r.Header.Get(CSRFHeader) == "" {
			return "", mayfly.Errorf(mayfly.EFORBIDDEN, "a request authenticated by the session cookie that changes state needs the %s header", CSRFHeader)
		}
	}
	return ck.Value, nil
}

// WriteError writes err as the API's error body with its status.
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

// WriteJSON writes v as a JSON answer with status.
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }

// adminOnly wraps h so only admins reach it.
func adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !callerFrom(r).Admin {
			writeError(w, mayfly.Errorf(mayfly.EFORBIDDEN, "this needs an admin"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (the audit
// stream lifts the server's deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: 200}
		h.ServeHTTP(sw, r)
		if sw.status >= 500 {
			s.Logger.Warn("api", "method", r.Method, "path", r.URL.Path, "status", sw.status, "dur", time.Since(start).String())
		} else {
			s.Logger.Debug("api", "method", r.Method, "path", r.URL.Path, "status", sw.status, "dur", time.Since(start).String())
		}
	})
}

// maxBody bounds request bodies.
const maxBody = 1 << 20

// decode reads a JSON body into v, refusing unknown fields and trailing data.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return mayfly.Errorf(mayfly.EINVALID, "request body is empty; want a JSON object")
		}
		return mayfly.Errorf(mayfly.EINVALID, "invalid JSON body: %v", err)
	}
	if dec.More() {
		return mayfly.Errorf(mayfly.EINVALID, "invalid JSON body: trailing data")
	}
	return nil
}

// decodeOptional is decode for a body that may be absent (its zero value).
func decodeOptional(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	err := decode(r, v)
	if err != nil && r.ContentLength < 0 && strings.Contains(err.Error(), "request body is empty") {
		return nil
	}
	return err
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	// Decision explains a refused request, policy by policy.
	Decision *policy.Decision `json:"decision,omitempty"`
}

// decisionError is a refusal with its policy explanation.
type decisionError struct {
	error
	decision policy.Decision
}

func (e decisionError) Unwrap() error { return e.error }

// withDecision attaches the policy explanation to a refusal.
func withDecision(err error, d policy.Decision) error {
	if mayfly.ErrorCode(err) != mayfly.EFORBIDDEN || d.Considered == nil {
		return err
	}
	return decisionError{err, d}
}

func writeError(w http.ResponseWriter, err error) {
	var b errorBody
	b.Error.Code = mayfly.ErrorCode(err)
	b.Error.Message = mayfly.ErrorMessage(err)
	var de decisionError
	if errors.As(err, &de) {
		b.Decision = &de.decision
	}
	writeJSON(w, statusOf[b.Error.Code], b)
}

// handle adapts a function returning (status, body, error) to a handler;
// internal errors are logged once here, without secrets.
func (s *server) handle(f func(w http.ResponseWriter, r *http.Request) (int, any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body, err := f(w, r)
		if err != nil {
			if mayfly.ErrorCode(err) == mayfly.EINTERNAL {
				s.Logger.Error("api internal error", "method", r.Method, "path", r.URL.Path, "err", broker.Scrub(err.Error()))
			}
			writeError(w, err)
			return
		}
		if body != nil {
			writeJSON(w, status, body)
		} else {
			w.WriteHeader(status)
		}
	})
}

// revokedKeysAuth lets the revocation-list token read the lists; any
// other caller is authenticated as everywhere else.
func (s *server) revokedKeysAuth(h http.Handler) http.Handler {
	authed := s.authed(h)
	if s.RevokedKeysTokenSHA256 == "" {
		return authed
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(s.RevokedKeysTokenSHA256)) == 1 {
				h.ServeHTTP(w, r)
				return
			}
		}
		authed.ServeHTTP(w, r)
	})
}

// metricsAuth requires the metrics token when one is configured.
func (s *server) metricsAuth(h http.Handler) http.Handler {
	if s.MetricsTokenSHA256 == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(s.MetricsTokenSHA256)) != 1 {
			writeError(w, mayfly.Errorf(mayfly.EUNAUTHORIZED, "metrics need the metrics token"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
