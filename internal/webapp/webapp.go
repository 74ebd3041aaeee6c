// Package webapp is Mayfly's web app for requesters, approvers and
// auditors: server-rendered pages (html/template) with one small script,
// its styles and templates embedded, served by the broker under /app/.
//
// The app holds no authorization of its own. Every page and form calls the
// JSON API in-process with the signed-in person's session token as a
// bearer token, so it sees and changes exactly what that person's API
// calls would, with the API's checks. Its own concerns are the browser's:
// the session cookie, CSRF tokens bound to the session, security headers
// (a strict Content-Security-Policy with no inline script, framing
// refused) and live updates over server-sent events.
package webapp

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is the path the app is served under.
const Prefix = "/app/"

// Cookie names. The session cookie is the API's own (the single sign-on
// callback sets it too).
const (
	SessionCookie = "mayfly_session"
	// signinCookie holds the double-submitted token of the sign-in form,
	// which has no session to bind a token to yet.
	signinCookie = "mayfly_signin"
)

// CSRFField is the form field, and CSRFHeader the header of script
// requests, carrying the CSRF token.
const (
	CSRFField  = "csrf"
	CSRFHeader = "X-Mayfly-CSRF"
)

// ContentSecurityPolicy is sent with every answer of the app: scripts and
// styles only from the app's own files, nothing inline, no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Options configure the app.
type Options struct {
	// API is the JSON API handler (httpapi.NewServer); the app calls it
	// in-process for everything it shows and does.
	API http.Handler
	// Changed returns a channel closed at the next committed change on
	// this replica or, with a shared store, any replica (the broker's
	// audit watch); it drives the live pages.
	Changed func() <-chan struct{}
	// Watching, when set, is called as a live page opens and returns
	// what to call as it closes (the broker's Watching).
	Watching func() (release func())
	// SingleSignOn is true when the identity provider's browser login
	// (/v1/auth/login) is configured.
	SingleSignOn bool
	Logger       *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// App serves the web app.
type App struct {
	o     Options
	pages map[string]*template.Template
}

// New returns the app.
func New(o Options) (*App, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &App{o: o, pages: map[string]*template.Template{}}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		a.pages[base] = t
	}
	return a, nil
}

// Mount returns a handler serving the app under /app/, a redirect from /
// to it, and everything else from next (the API).
func (a *App) Mount(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(Prefix, a.Handler())
	mux.Handle("GET /{$}", secure(http.RedirectHandler(Prefix, http.StatusFound)))
	mux.Handle("/", next)
	return mux
}

// Handler serves the app's routes (under /app/).
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /app/static/", http.StripPrefix("/app/static/", staticFiles(http.FileServerFS(static))))
	mux.HandleFunc("GET /app/{$}", a.page(a.home))
	mux.HandleFunc("GET /app/signin", a.signinPage)
	mux.HandleFunc("POST /app/signin", a.signin)
	mux.HandleFunc("POST /app/signout", a.form(a.signout))
	mux.HandleFunc("GET /app/request", a.page(a.requestPage))
	mux.HandleFunc("POST /app/request", a.form(a.createRequest))
	mux.HandleFunc("POST /app/preview", a.form(a.preview))
	mux.HandleFunc("GET /app/access", a.page(a.accessPage))
	mux.HandleFunc("POST /app/requests/{id}/activate", a.form(a.activate))
	mux.HandleFunc("POST /app/requests/{id}/cancel", a.form(a.cancel))
	mux.HandleFunc("POST /app/leases/{id}/done", a.form(a.endLease))
	mux.HandleFunc("POST /app/leases/{id}/extend", a.form(a.extendLease))
	mux.HandleFunc("GET /app/approvals", a.page(a.approvalsPage))
	mux.HandleFunc("POST /app/requests/{id}/approve", a.form(a.decide("approve")))
	mux.HandleFunc("POST /app/requests/{id}/deny", a.form(a.decide("deny")))
	mux.HandleFunc("GET /app/events", a.events)
	mux.HandleFunc("GET /app/sessions", a.page(a.sessionsPage))
	mux.HandleFunc("GET /app/sessions/{id}", a.page(a.sessionPage))
	mux.HandleFunc("GET /app/sessions/{id}/cast", a.page(a.sessionCast))
	mux.HandleFunc("GET /app/admin/{$}", a.page(a.admin(a.adminAudit)))
	mux.HandleFunc("GET /app/admin/audit", a.page(a.admin(a.adminAudit)))
	mux.HandleFunc("GET /app/admin/users", a.page(a.admin(a.adminUsers)))
	mux.HandleFunc("POST /app/admin/users/{name}/{action}", a.form(a.userStatus))
	mux.HandleFunc("GET /app/admin/review", a.page(a.admin(a.adminReview)))
	mux.HandleFunc("GET /app/admin/standing", a.page(a.admin(a.adminStanding)))
	mux.HandleFunc("GET /app/admin/leases", a.page(a.admin(a.adminLeases)))
	mux.HandleFunc("/app/", func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, r, nil, mayfly.Errorf(mayfly.ENOTFOUND, "no such page: %s", r.URL.Path))
	})
	return secure(mux)
}

// secure sets the security headers of every answer of the app.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", ContentSecurityPolicy)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		if r.TLS != nil {
			hd.Set("Strict-Transport-Security", "max-age=31536000")
		}
		h.ServeHTTP(w, r)
	})
}

// staticFiles lets the browser keep the app's script and styles briefly.
func staticFiles(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		h.ServeHTTP(w, r)
	})
}

// session is the signed-in person of a request.
type session struct {
	token  string
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	Admin  bool     `json:"admin"`
	Method string   `json:"method"`
	// CSRF is the token the person's forms carry.
	CSRF string `json:"-"`
}

// csrfToken is the CSRF token bound to a session: a hash of its secret
// session token, which a page of another origin can neither read nor
// compute, and which every replica derives alike.
func csrfToken(sessionToken string) string {
	sum := sha256.Sum256([]byte("mayfly web csrf\x00" + sessionToken))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// errSignIn marks a request without a valid session.
var errSignIn = mayfly.Errorf(mayfly.EUNAUTHORIZED, "sign in to continue")

// current returns the request's session, checked by the API (GET
// /v1/whoami): a missing, expired or revoked session, or a suspended user,
// is refused there.
func (a *App) current(r *http.Request) (*session, error) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return nil, errSignIn
	}
	s := &session{token: ck.Value}
	if err := a.call(r, s, http.MethodGet, "/v1/whoami", nil, s); err != nil {
		if mayfly.ErrorCode(err) == mayfly.EUNAUTHORIZED {
			return nil, errSignIn
		}
		return nil, err
	}
	s.CSRF = csrfToken(s.token)
	return s, nil
}

// call makes an API call as s in-process: method and path (with query),
// body encoded as JSON when not nil, the answer decoded into out when not
// nil. An API error comes back as the *mayfly.Error the API answered.
func (a *App) call(r *http.Request, s *session, method, path string, body, out any) error {
	_, err := a.callHeader(r, s, method, path, body, out)
	return err
}

func (a *App) callHeader(r *http.Request, s *session, method, path string, body, out any) (http.Header, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, path, rd)
	if err != nil {
		return nil, err
	}
	req.RemoteAddr = r.RemoteAddr
	req.Host = r.Host
	req.Header.Set("Authorization", "Bearer "+s.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	a.o.API.ServeHTTP(rec, req)
	if rec.status >= 400 {
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(rec.body.Bytes(), &eb) != nil || eb.Error.Code == "" {
			return nil, mayfly.Errorf(mayfly.EINTERNAL, "the API answered %d", rec.status)
		}
		return nil, &mayfly.Error{Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = rec.body.Bytes()
	} else if out != nil {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return nil, mayfly.Errorf(mayfly.EINTERNAL, "decode the API's answer to %s %s: %v", method, path, err)
		}
	}
	return rec.header, nil
}

// recorder collects an in-process API answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	r.wrote = true
	return r.body.Write(p)
}

// checkCSRF refuses a state-changing request that does not carry the CSRF
// token of its session, or that a browser says came from another site.
func checkCSRF(r *http.Request, s *session) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" {
		return mayfly.Errorf(mayfly.EFORBIDDEN, "refused a cross-site form submission")
	}
	tok := r.Header.Get(CSRFHeader)
	if tok == "" {
		tok = r.PostFormValue(CSRFField)
	}
	if !sameToken(tok, s.CSRF) {
		return mayfly.Errorf(mayfly.EFORBIDDEN, "missing or wrong CSRF token: reload the page and try again")
	}
	return nil
}

// maxForm bounds a form body.
const maxForm = 64 << 10

// form wraps a state-changing handler: a session and its CSRF token are
// required.
func (a *App) form(h func(w http.ResponseWriter, r *http.Request, s *session) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		s, err := a.current(r)
		if err == nil {
			err = checkCSRF(r, s)
		}
		if err == nil {
			err = h(w, r, s)
		}
		if err != nil {
			a.fail(w, r, s, err)
		}
	}
}

// page wraps a page handler: without a session it sends the person to
// sign in and back.
func (a *App) page(h func(w http.ResponseWriter, r *http.Request, s *session) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := a.current(r)
		if errors.Is(err, errSignIn) {
			http.Redirect(w, r, "/app/signin?return="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if err == nil {
			err = h(w, r, s)
		}
		if err != nil {
			a.fail(w, r, s, err)
		}
	}
}

var statusOf = map[string]int{
	mayfly.EINVALID:      http.StatusBadRequest,
	mayfly.EUNAUTHORIZED: http.StatusUnauthorized,
	mayfly.EFORBIDDEN:    http.StatusForbidden,
	mayfly.ENOTFOUND:     http.StatusNotFound,
	mayfly.ECONFLICT:     http.StatusConflict,
	mayfly.EUNAVAILABLE:  http.StatusServiceUnavailable,
	mayfly.EINTERNAL:     http.StatusInternalServerError,
}

// fail renders err as an error page with its status (JSON for scripts).
func (a *App) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	code := mayfly.ErrorCode(err)
	status := statusOf[code]
	msg := mayfly.ErrorMessage(err)
	if code == mayfly.EINTERNAL {
		a.o.Logger.Error("web app internal error", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error; the server log has the details"
	}
	if r.Header.Get(CSRFHeader) != "" || strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
		return
	}
	a.render(w, r, status, "error", s, map[string]any{"Title": http.StatusText(status), "Code": code, "Message": msg, "Status": status})
}

// render writes a page.
func (a *App) render(w http.ResponseWriter, r *http.Request, status int, name string, s *session, data map[string]any) {
	t, ok := a.pages[name]
	if !ok {
		http.Error(w, "no template "+name, http.StatusInternalServerError)
		return
	}
	if data == nil {
		data = map[string]any{}
	}
	data["Session"] = s
	data["Path"] = r.URL.Path
	data["SingleSignOn"] = a.o.SingleSignOn
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		a.o.Logger.Error("web app template", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// safeReturn keeps a post-sign-in destination on the app.
func safeReturn(p string) string {
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(p, Prefix) || strings.ContainsAny(p, "\\\r\n") {
		return Prefix
	}
	return p
}

// events streams "changed" to a signed-in page each time a change commits
// (here or, with a shared store, on any replica), so that live pages
// reload what they show through the API. The stream carries no data: what
// the page then shows is what the API lets the person see.
func (a *App) events(w http.ResponseWriter, r *http.Request) {
	s, err := a.current(r)
	if err != nil {
		a.fail(w, r, s, err)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok || a.o.Changed == nil {
		a.fail(w, r, s, mayfly.Errorf(mayfly.EUNAVAILABLE, "live updates are not available"))
		return
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "retry: 2000\n: mayfly live updates\n\n")
	fl.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	if a.o.Watching != nil {
		defer a.o.Watching()()
	}
	changed := a.o.Changed()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-changed:
			changed = a.o.Changed()
			if _, err := io.WriteString(w, "event: changed\ndata: 1\n\n"); err != nil {
				return
			}
		case <-keepalive.C:
			if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil {
				return
			}
		}
		fl.Flush()
	}
}
