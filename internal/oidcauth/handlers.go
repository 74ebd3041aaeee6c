package oidcauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/httpapi"
)

// Info is what GET /v1/auth/oidc tells a CLI about the provider.
type Info struct {
	Issuer   string   `json:"issuer"`
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
	// Confidential is true when the client has a secret: the server then
	// does every code exchange and the device flow is not offered.
	Confidential bool `json:"confidential"`
}

// SessionInput is the body of POST /v1/auth/oidc/session: either the code
// of a loopback code flow (the server exchanges it, with the CLI's PKCE
// verifier), or an ID token the CLI obtained with the device flow.
type SessionInput struct {
	Code         string `json:"code,omitempty"`
	CodeVerifier string `json:"code_verifier,omitempty"`
	RedirectURI  string `json:"redirect_uri,omitempty"`
	// Nonce is the one POST /v1/auth/oidc/start issued for this login.
	Nonce   string `json:"nonce,omitempty"`
	IDToken string `json:"id_token,omitempty"`
}

type route struct {
	pattern string
	h       http.HandlerFunc
}

func (s *Service) routes() []route {
	return []route{
		{"GET /v1/auth/oidc", s.handleInfo},
		{"POST /v1/auth/oidc/start", s.handleStart},
		{"POST /v1/auth/oidc/session", s.handleSession},
		{"POST /v1/auth/oidc/remote", s.handleRemoteStart},
		{"POST /v1/auth/oidc/remote/session", s.handleRemoteSession},
		{"GET /v1/auth/login", s.handleLogin},
		{"GET /v1/auth/callback", s.handleCallback},
		{"POST /v1/auth/logout", s.handleLogout},
	}
}

// Routes lists the endpoints Handler serves ("GET /v1/auth/login", ...).
func Routes() []string {
	var out []string
	for _, r := range (&Service{}).routes() {
		out = append(out, r.pattern)
	}
	return out
}

// Handler serves the single sign-on endpoints under /v1/auth/.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routes() {
		mux.HandleFunc(r.pattern, r.h)
	}
	mux.HandleFunc("/v1/auth/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, mayfly.Errorf(mayfly.ENOTFOUND, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func (s *Service) handleInfo(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, Info{Issuer: s.o.Config.Issuer, ClientID: s.o.Config.ClientID, Scopes: s.o.Config.Scopes,
		Confidential: s.o.Secret != ""})
}

// handleStart issues a nonce for a CLI login: single-use, for 10 minutes.
func (s *Service) handleStart(w http.ResponseWriter, r *http.Request) {
	nonce := randomString(32)
	p := pending{nonce: nonce, expires: s.o.Now().Add(pendingTTL)}
	if err := s.states.put(s.o.Now(), "nonce:"+nonce, p, p.expires); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"nonce": nonce})
}

func (s *Service) handleSession(w http.ResponseWriter, r *http.Request) {
	var in SessionInput
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		httpapi.WriteError(w, mayfly.Errorf(mayfly.EINVALID, "invalid JSON body: %v", err))
		return
	}
	sess, err := s.Session(r.Context(), in)
	if err != nil {
		s.refused(r, err)
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sess)
}

// Session verifies a CLI login and opens its session.
func (s *Service) Session(ctx context.Context, in SessionInput) (*Session, error) {
	now := s.o.Now()
	switch {
	case in.Code != "" && in.IDToken != "":
		return nil, mayfly.Errorf(mayfly.EINVALID, "send either code or id_token, not both")
	case in.Code != "":
		if in.CodeVerifier == "" || in.Nonce == "" || in.RedirectURI == "" {
			return nil, mayfly.Errorf(mayfly.EINVALID, "a code needs code_verifier, redirect_uri and nonce")
		}
		if err := checkLoopback(in.RedirectURI); err != nil {
			return nil, err
		}
		if !s.states.take(now, "nonce:"+in.Nonce, &pending{}) {
			return nil, errLogin("nonce unknown, expired or already used (start again with mayfly login)")
		}
		tok, err := s.exchange(ctx, in.RedirectURI, in.Code, in.CodeVerifier, in.Nonce)
		if err != nil {
			return nil, err
		}
		return s.finish(ctx, tok, MethodCLI)
	case in.IDToken != "":
		if in.Nonce != "" {
			if !s.states.take(now, "nonce:"+in.Nonce, &pending{}) {
				return nil, errLogin("nonce unknown, expired or already used (start again with mayfly login)")
			}
			tok, err := s.verify(ctx, in.IDToken, in.Nonce)
			if err != nil {
				return nil, err
			}
			return s.finish(ctx, tok, MethodCLI)
		}
		// The device flow has no nonce: the token must be fresh, and
		// opens one session only.
		tok, err := s.verify(ctx, in.IDToken, "")
		if err != nil {
			return nil, err
		}
		if tok.Nonce != "" {
			return nil, errLogin("this ID token carries a nonce: send the nonce its login was started with")
		}
		if tok.IssuedAt.Before(now.Add(-pendingTTL)) {
			return nil, errLogin("the ID token was issued at %s, over %s ago; log in again", tok.IssuedAt.UTC().Format(time.RFC3339), pendingTTL)
		}
		sum := sha256.Sum256([]byte(in.IDToken))
		key := "idtoken:" + hex.EncodeToString(sum[:])
		if s.states.has(now, key) {
			return nil, errLogin("this ID token has already opened a session")
		}
		if err := s.states.put(now, key, pending{expires: tok.Expiry}, tok.Expiry); err != nil {
			if mayfly.ErrorCode(err) == mayfly.ECONFLICT {
				return nil, errLogin("this ID token has already opened a session")
			}
			return nil, err
		}
		return s.finish(ctx, tok, MethodDevice)
	}
	return nil, mayfly.Errorf(mayfly.EINVALID, "send code (with code_verifier, redirect_uri and nonce) or id_token")
}

// checkLoopback accepts only the CLI's loopback redirect URIs.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err == nil && u.Scheme == "http" && u.Path == "/callback" {
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
			return nil
		}
	}
	return mayfly.Errorf(mayfly.EINVALID, "redirect_uri %q: want http://127.0.0.1:PORT/callback", raw)
}

// exchange trades a code for tokens at the provider (with the PKCE
// verifier and, for a confidential client, the secret) and verifies the ID
// token, with nonce.
func (s *Service) exchange(ctx context.Context, redirect, code, verifier, nonce string) (*oidc.IDToken, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.o.httpClient())
	cfg, err := s.oauth2Config(ctx, redirect)
	if err != nil {
		return nil, err
	}
	t, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, errLogin("the provider refused the code: %s %s", re.ErrorCode, re.ErrorDescription)
		}
		return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "exchange the code at the provider: %v", err)
	}
	raw, _ := t.Extra("id_token").(string)
	if raw == "" {
		return nil, errLogin("the provider returned no ID token (is the openid scope granted?)")
	}
	return s.verify(ctx, raw, nonce)
}

func (s *Service) finish(ctx context.Context, tok *oidc.IDToken, method string) (*Session, error) {
	l, err := s.login(tok, method)
	if err != nil {
		return nil, err
	}
	return s.open(ctx, l)
}

// refused logs a refused login once, without tokens.
func (s *Service) refused(r *http.Request, err error) {
	if mayfly.ErrorCode(err) == mayfly.EINTERNAL {
		s.o.Logger.Error("login failed", "path", r.URL.Path, "err", err)
		return
	}
	s.o.Logger.Warn("login refused", "path", r.URL.Path, "reason", mayfly.ErrorMessage(err))
}

// browserRedirect is the redirect URI of the browser flow.
func (s *Service) browserRedirect(r *http.Request) string {
	if s.o.Config.RedirectURL != "" {
		return s.o.Config.RedirectURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/v1/auth/callback"
}

// handleLogin starts the browser flow: state, nonce and PKCE verifier stay
// on the server, single-use, for 10 minutes.
func (s *Service) handleLogin(w http.ResponseWriter, r *http.Request) {
	ret := r.URL.Query().Get("return")
	if ret != "" && (!strings.HasPrefix(ret, "/") || strings.HasPrefix(ret, "//") || strings.Contains(ret, "\\")) {
		httpapi.WriteError(w, mayfly.Errorf(mayfly.EINVALID, "return %q: want a path on this server", ret))
		return
	}
	p := pending{nonce: randomString(32), verifier: oauth2.GenerateVerifier(), redirect: s.browserRedirect(r), returnTo: ret,
		expires: s.o.Now().Add(pendingTTL)}
	cfg, err := s.oauth2Config(r.Context(), p.redirect)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	state := randomString(32)
	if err := s.states.put(s.o.Now(), "state:"+state, p, p.expires); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	u := cfg.AuthCodeURL(state, oidc.Nonce(p.nonce), oauth2.S256ChallengeOption(p.verifier))
	http.Redirect(w, r, u, http.StatusFound)
}

// handleCallback ends the browser flow with a session cookie.
func (s *Service) handleCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var pollID string
	err := func() error {
		var p pending
		if !s.states.take(s.o.Now(), "state:"+q.Get("state"), &p) {
			return errLogin("state unknown, expired or already used (start again at /v1/auth/login)")
		}
		pollID = p.poll
		if e := q.Get("error"); e != "" {
			return errLogin("the provider answered %s: %s", e, q.Get("error_description"))
		}
		if q.Get("code") == "" {
			return mayfly.Errorf(mayfly.EINVALID, "the callback has no code")
		}
		tok, err := s.exchange(r.Context(), p.redirect, q.Get("code"), p.verifier, p.nonce)
		if err != nil {
			return err
		}
		if p.poll != "" {
			l, err := s.login(tok, MethodCLI)
			if err != nil {
				return err
			}
			code := confirmCode()
			s.setResult(p.poll, polled{login: l, code: code, expires: s.o.Now().Add(pendingTTL)})
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			fmt.Fprintf(w, "<p>To finish logging in to Mayfly, enter this code in your terminal:</p>\n<p><code id=\"mayfly-code\">%s</code></p>\n"+
				"<p>If you did not start <code>mayfly login</code> yourself just now, close this window: someone may be trying to use your login.</p>\n", code)
			return nil
		}
		sess, err := s.finish(r.Context(), tok, MethodBrowser)
		if err != nil {
			return err
		}
		http.SetCookie(w, &http.Cookie{Name: httpapi.SessionCookie, Value: sess.Token, Path: "/", Expires: sess.ExpiresAt,
			HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
		if p.returnTo != "" {
			http.Redirect(w, r, p.returnTo, http.StatusSeeOther)
			return nil
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user": sess.User, "groups": sess.Groups, "method": sess.Method, "expires_at": sess.ExpiresAt})
		return nil
	}()
	if err != nil {
		if pollID != "" {
			// The polling CLI learns why, too.
			s.setResult(pollID, polled{err: err, expires: s.o.Now().Add(pendingTTL)})
		}
		s.refused(r, err)
		httpapi.WriteError(w, err)
	}
}

// handleLogout revokes the session of the request's token (bearer or
// cookie) and clears the cookie.
func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) {
	tok, err := httpapi.RequestToken(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if err := s.o.Sessions.Close(r.Context(), hex.EncodeToString(sum[:])); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: httpapi.SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	w.WriteHeader(http.StatusNoContent)
}

// RemoteStart is the answer of POST /v1/auth/oidc/remote.
type RemoteStart struct {
	// URL is where the person's browser goes: the provider, which
	// redirects to this server's callback.
	URL string `json:"url"`
	// LoginID, kept secret by the CLI, names this login at
	// POST /v1/auth/oidc/remote/session.
	LoginID string `json:"login_id"`
}

// RemoteSessionInput is the body of POST /v1/auth/oidc/remote/session.
type RemoteSessionInput struct {
	LoginID string `json:"login_id"`
	// Code is what the server's callback page showed the person.
	Code string `json:"code"`
}

// handleRemoteStart starts a CLI login that comes back to the server's
// callback, for a CLI that cannot listen on loopback. The browser flow's
// state, nonce and PKCE verifier stay on the server. The callback page
// shows a code the person types into the CLI, which hands it in with the
// login id to collect the session: a login link someone else started and
// sent round gives them nothing unless the victim also reads them the code.
func (s *Service) handleRemoteStart(w http.ResponseWriter, r *http.Request) {
	p := pending{nonce: randomString(32), verifier: oauth2.GenerateVerifier(), redirect: s.browserRedirect(r),
		poll: randomString(32), expires: s.o.Now().Add(pendingTTL)}
	cfg, err := s.oauth2Config(r.Context(), p.redirect)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	state := randomString(32)
	if err := s.states.put(s.o.Now(), "state:"+state, p, p.expires); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	u := cfg.AuthCodeURL(state, oidc.Nonce(p.nonce), oauth2.S256ChallengeOption(p.verifier))
	httpapi.WriteJSON(w, http.StatusOK, RemoteStart{URL: u, LoginID: p.poll})
}

// confirmCode is a code a person types: 8 characters from an alphabet
// without look-alikes (40 bits).
func confirmCode() string {
	const alphabet = "BCDFGHJKLMNPQRSTVWXZ23456789"
	b := make([]byte, 8)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:4]) + "-" + string(b[4:])
}

// setResult keeps the outcome of the login a CLI polls for under its id.
func (s *Service) setResult(id string, res polled) {
	if err := s.states.put(s.o.Now(), "result:"+id, res, res.expires); err != nil {
		s.o.Logger.Error("oidc: keeping a finished login for its CLI", "err", mayfly.ErrorMessage(err))
	}
}

// handleRemoteSession hands the session of a finished remote login to
// the CLI that started it, once, against the code its callback showed: the
// session is opened then. A wrong code ends the login.
func (s *Service) handleRemoteSession(w http.ResponseWriter, r *http.Request) {
	var in RemoteSessionInput
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&in); err != nil || in.LoginID == "" {
		httpapi.WriteError(w, mayfly.Errorf(mayfly.EINVALID, "want {\"login_id\": \"...\", \"code\": \"...\"}"))
		return
	}
	var res polled
	ok := s.states.take(s.o.Now(), "result:"+in.LoginID, &res)
	norm := func(c string) string { return strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(c), "-", "")) }
	var err error
	switch {
	case !ok:
		err = errLogin("no finished login with this id (not finished in the browser yet, expired, or already collected)")
	case res.err != nil:
		err = res.err
	case s.o.Now().After(res.expires):
		err = errLogin("the login finished over %s ago; log in again", pendingTTL)
	case subtle.ConstantTimeCompare([]byte(norm(in.Code)), []byte(norm(res.code))) != 1:
		err = errLogin("wrong code; log in again")
	}
	var sess *Session
	if err == nil {
		sess, err = s.open(r.Context(), res.login)
	}
	if err != nil {
		s.refused(r, err)
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sess)
}
