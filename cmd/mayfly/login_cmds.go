package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/oidcauth"
)

// loginTimeout bounds how long mayfly login waits for the person.
const loginTimeout = 10 * time.Minute

// savedSession is a session kept by mayfly login for one server.
type savedSession struct {
	Server    string    `json:"server"`
	Token     string    `json:"token"`
	User      string    `json:"user"`
	Groups    []string  `json:"groups"`
	Method    string    `json:"method"`
	ExpiresAt time.Time `json:"expires_at"`
}

// serverAddr is the server the client talks to.
func (e *env) serverAddr() string {
	if a := strings.TrimSpace(e.getenv("MAYFLY_ADDR")); a != "" {
		return withScheme(a)
	}
	return "http://127.0.0.1:8765"
}

// withScheme completes an address given without a scheme: http:// for a
// loopback host (127.0.0.1:8765, localhost:8765), https:// otherwise. A
// trailing slash is dropped.
func withScheme(addr string) string {
	addr = strings.TrimRight(addr, "/")
	if strings.Contains(addr, "://") {
		return addr
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || strings.EqualFold(host, "localhost") {
		return "http://" + addr
	}
	return "https://" + addr
}

var unsafePathRE = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// sessionPath is the file holding the session for addr:
// $XDG_CONFIG_HOME/mayfly/sessions/<addr, made a file name>.
func (e *env) sessionPath(addr string) (string, error) {
	dir := e.getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := e.getenv("HOME")
		if home == "" {
			return "", mayfly.Errorf(mayfly.EINVALID, "neither XDG_CONFIG_HOME nor HOME is set: no place to keep the session")
		}
		dir = filepath.Join(home, ".config")
	}
	name := unsafePathRE.ReplaceAllString(strings.TrimRight(addr, "/"), "_")
	return filepath.Join(dir, "mayfly", "sessions", name), nil
}

// loadSession returns the live session saved for addr, if any.
func (e *env) loadSession(addr string) (*savedSession, bool) {
	p, err := e.sessionPath(addr)
	if err != nil {
		return nil, false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, false
	}
	var s savedSession
	if json.Unmarshal(b, &s) != nil || s.Token == "" || !time.Now().Before(s.ExpiresAt) {
		return nil, false
	}
	return &s, true
}

// saveSession writes s for addr: the directory 0700, the file 0600.
func (e *env) saveSession(addr string, s *savedSession) (string, error) {
	p, err := e.sessionPath(addr)
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".session-*")
	if err != nil {
		return "", fmt.Errorf("save session: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return "", err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return "", fmt.Errorf("save session: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("save session: %w", err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return "", fmt.Errorf("save session: %w", err)
	}
	return p, nil
}

// anonClient is a client of addr without a token (for logging in).
func (e *env) anonClient(addr string) (*httpapi.Client, error) {
	if err := httpapi.CheckClearText(addr); err != nil {
		return nil, err
	}
	c := httpapi.NewClient(addr, "")
	if err := c.UseTLS(httpapi.TLSOptions{CAFile: e.getenv("MAYFLY_CA_CERT"),
		CertFile: e.getenv("MAYFLY_CLIENT_CERT"), KeyFile: e.getenv("MAYFLY_CLIENT_KEY")}); err != nil {
		return nil, err
	}
	return c, nil
}

func cmdLogin(e *env, args []string) error {
	f := newFlags(e, "login", true)
	device := f.Bool("device", false, "use the device authorization grant (for a machine without a browser): enter a code on another device")
	noBrowser := f.Bool("no-browser", false, "do not open a browser; only print the address to visit")
	viaServer := f.Bool("server-callback", false, "for a machine where the CLI cannot listen on 127.0.0.1: the browser returns to the server, which shows a code to type here")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	if *device && *viaServer {
		return usageErr("login: --device and --server-callback are two different ways to log in; pick one")
	}
	addr := e.serverAddr()
	c, err := e.anonClient(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, loginTimeout)
	defer cancel()
	var info oidcauth.Info
	if err := c.Do(ctx, "GET", "/v1/auth/oidc", nil, nil, &info); err != nil {
		if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
			return mayfly.Errorf(mayfly.ENOTFOUND, "the server at %s has no single sign-on (auth.oidc); use an API token in MAYFLY_TOKEN", addr)
		}
		return err
	}
	var s oidcauth.Session
	if *viaServer {
		if err := serverCallbackLogin(ctx, e, c, !*noBrowser, &s); err != nil {
			return err
		}
	} else {
		prov, err := oidc.NewProvider(ctx, info.Issuer)
		if err != nil {
			return mayfly.Errorf(mayfly.EUNAVAILABLE, "reach the identity provider %s: %v", info.Issuer, err)
		}
		cfg := &oauth2.Config{ClientID: info.ClientID, Endpoint: prov.Endpoint(), Scopes: info.Scopes}
		var in oidcauth.SessionInput
		if *device {
			in, err = deviceLogin(ctx, e, cfg, info)
		} else {
			in, err = loopbackLogin(ctx, e, c, cfg, !*noBrowser)
		}
		if err != nil {
			return err
		}
		if err := c.Do(ctx, "POST", "/v1/auth/oidc/session", nil, in, &s); err != nil {
			return err
		}
	}
	saved := &savedSession{Server: addr, Token: s.Token, User: s.User, Groups: s.Groups, Method: s.Method, ExpiresAt: s.ExpiresAt}
	path, err := e.saveSession(addr, saved)
	if err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(map[string]any{"server": addr, "user": s.User, "groups": s.Groups, "method": s.Method,
			"expires_at": s.ExpiresAt, "session_file": path})
	}
	fmt.Fprintf(e.stdout, "Logged in to %s as %s (groups: %s) until %s.\n", addr, safeText(s.User), safeText(strings.Join(s.Groups, ", ")), fmtTime(s.ExpiresAt))
	if e.getenv("MAYFLY_TOKEN") != "" {
		fmt.Fprintln(e.stderr, "Note: MAYFLY_TOKEN is set and takes precedence over this session; unset it to use the session.")
	}
	return nil
}

// loopbackLogin runs the authorization code flow with PKCE: the browser
// goes to the provider and comes back to a listener on 127.0.0.1. The
// server exchanges the code (it holds the client secret, if any) and checks
// the nonce it issued.
func loopbackLogin(ctx context.Context, e *env, c *httpapi.Client, cfg *oauth2.Config, openBrowser bool) (oidcauth.SessionInput, error) {
	var start struct {
		Nonce string `json:"nonce"`
	}
	if err := c.Do(ctx, "POST", "/v1/auth/oidc/start", nil, nil, &start); err != nil {
		return oidcauth.SessionInput{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return oidcauth.SessionInput{}, mayfly.Errorf(mayfly.EUNAVAILABLE, "listen on 127.0.0.1 for the login's redirect: %v (use mayfly login --server-callback or --device)", err)
	}
	defer ln.Close()
	cfg.RedirectURL = fmt.Sprintf("http://%s/callback", ln.Addr())
	state, verifier := oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(start.Nonce))

	type result struct {
		code string
		err  error
	}
	done := make(chan result, 1)
	var answered atomic.Bool
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1:
			res.err = mayfly.Errorf(mayfly.EUNAUTHORIZED, "login refused: the redirect's state is not this login's")
		case q.Get("error") != "":
			res.err = mayfly.Errorf(mayfly.EUNAUTHORIZED, "the identity provider refused the login: %s %s", q.Get("error"), q.Get("error_description"))
		case q.Get("code") == "":
			res.err = mayfly.Errorf(mayfly.EUNAUTHORIZED, "the redirect carries no code")
		default:
			res.code = q.Get("code")
		}
		if !answered.CompareAndSwap(false, true) {
			// A second redirect: the login already has its answer.
			http.Error(w, "this login is over", http.StatusBadRequest)
			return
		}
		// The page is written before the login goes on, so the browser
		// gets it before the listener closes.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if res.err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "<p>Mayfly login failed: %s</p>", html.EscapeString(mayfly.ErrorMessage(res.err)))
		} else {
			fmt.Fprint(w, "<p>Mayfly received your login. You may close this window and return to the terminal.</p>")
		}
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		done <- res
	})}
	go srv.Serve(ln)
	defer func() {
		// Let the page in flight reach the browser, briefly.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()

	fmt.Fprintf(e.stderr, "To log in, visit:\n\n  %s\n\nWaiting for the login to finish...\n", authURL)
	if openBrowser {
		openURL(authURL)
	}
	select {
	case res := <-done:
		if res.err != nil {
			return oidcauth.SessionInput{}, res.err
		}
		return oidcauth.SessionInput{Code: res.code, CodeVerifier: verifier, RedirectURI: cfg.RedirectURL, Nonce: start.Nonce}, nil
	case <-ctx.Done():
		return oidcauth.SessionInput{}, mayfly.Errorf(mayfly.EUNAVAILABLE, "no login within %s", loginTimeout)
	}
}

// serverCallbackLogin logs in through the server's callback: the browser
// goes to the provider and back to the server, whose page shows a code the
// person types here; the CLI hands it in to collect the session.
func serverCallbackLogin(ctx context.Context, e *env, c *httpapi.Client, openBrowser bool, s *oidcauth.Session) error {
	var start oidcauth.RemoteStart
	if err := c.Do(ctx, "POST", "/v1/auth/oidc/remote", nil, nil, &start); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "To log in, visit:\n\n  %s\n\nthen enter the code the page shows: ", start.URL)
	if openBrowser {
		openURL(start.URL)
	}
	line := make(chan string, 1)
	go func() {
		var code string
		fmt.Fscanln(e.stdin, &code)
		line <- code
	}()
	var code string
	select {
	case code = <-line:
	case <-ctx.Done():
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "no code entered within %s", loginTimeout)
	}
	if strings.TrimSpace(code) == "" {
		return usageErr("login: no code entered")
	}
	return c.Do(ctx, "POST", "/v1/auth/oidc/remote/session", nil, oidcauth.RemoteSessionInput{LoginID: start.LoginID, Code: code}, s)
}

// deviceLogin runs the device authorization grant: the person enters a
// code on another device while the CLI polls the provider.
func deviceLogin(ctx context.Context, e *env, cfg *oauth2.Config, info oidcauth.Info) (oidcauth.SessionInput, error) {
	if info.Confidential {
		return oidcauth.SessionInput{}, mayfly.Errorf(mayfly.EINVALID, "the server's OIDC client is confidential (it has a secret), so the device flow is not offered; use mayfly login")
	}
	if cfg.Endpoint.DeviceAuthURL == "" {
		return oidcauth.SessionInput{}, mayfly.Errorf(mayfly.EUNAVAILABLE, "the identity provider %s publishes no device authorization endpoint; use mayfly login", info.Issuer)
	}
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return oidcauth.SessionInput{}, providerErr("device authorization", err)
	}
	fmt.Fprintf(e.stderr, "To log in, visit %s and enter the code:\n\n  %s\n\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(e.stderr, "(or open %s)\n", da.VerificationURIComplete)
	}
	fmt.Fprintln(e.stderr, "Waiting for the login to finish...")
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		return oidcauth.SessionInput{}, providerErr("device login", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return oidcauth.SessionInput{}, mayfly.Errorf(mayfly.EUNAUTHORIZED, "the identity provider returned no ID token (is the openid scope granted?)")
	}
	return oidcauth.SessionInput{IDToken: raw}, nil
}

func providerErr(what string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return mayfly.Errorf(mayfly.EUNAUTHORIZED, "%s refused by the identity provider: %s %s", what, re.ErrorCode, re.ErrorDescription)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "%s: no login within %s", what, loginTimeout)
	}
	return mayfly.Errorf(mayfly.EUNAVAILABLE, "%s: %v", what, err)
}

// openURL opens u in the person's browser when a way to do so exists; the
// address is always printed as well.
func openURL(u string) {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	}
	if p, err := exec.LookPath(name); err == nil {
		cmd := exec.Command(p, u)
		if cmd.Start() == nil {
			go cmd.Wait()
		}
	}
}

func cmdLogout(e *env, args []string) error {
	f := newFlags(e, "logout", false)
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	addr := e.serverAddr()
	path, err := e.sessionPath(addr)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return mayfly.Errorf(mayfly.ENOTFOUND, "not logged in to %s", addr)
	}
	if err != nil {
		return fmt.Errorf("read session: %w", err)
	}
	var s savedSession
	if err := json.Unmarshal(b, &s); err == nil && s.Token != "" && time.Now().Before(s.ExpiresAt) {
		c, err := e.anonClient(addr)
		if err != nil {
			return err
		}
		c.Token = s.Token
		// A session the server no longer knows (expired, revoked) is
		// already over.
		if err := c.Do(e.ctx, "POST", "/v1/auth/logout", nil, nil, nil); err != nil && mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED {
			return err
		}
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove session: %w", err)
	}
	fmt.Fprintf(e.stdout, "Logged out of %s.\n", addr)
	return nil
}
