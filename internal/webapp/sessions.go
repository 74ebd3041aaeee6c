package webapp

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
)

// Session logs: what people did through the gateways. The API decides who
// sees what (admins every session, others their own); these pages show it.

// playerCSP is the policy of the session page: the app's own, plus
// WebAssembly, which the asciicast player's terminal emulator is compiled
// to (no eval of script text; still nothing inline).
const playerCSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func (a *App) sessionsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	f := url.Values{}
	for _, k := range []string{"lease", "user", "kind", "cursor"} {
		if v := q.Get(k); v != "" {
			f.Set(k, v)
		}
	}
	f.Set("limit", "100")
	var ss []*mayfly.Session
	hd, err := a.callHeader(r, s, http.MethodGet, "/v1/sessions?"+f.Encode(), nil, &ss)
	if err != nil {
		return err
	}
	next := ""
	if c := hd.Get(httpapi.NextCursorHeader); c != "" {
		nq := url.Values{}
		for k := range f {
			if k != "limit" {
				nq.Set(k, f.Get(k))
			}
		}
		nq.Set("cursor", c)
		next = "/app/sessions?" + nq.Encode()
	}
	a.render(w, r, http.StatusOK, "sessions", s, map[string]any{"Title": "Sessions", "Sessions": ss, "Filter": f, "Next": next})
	return nil
}

func (a *App) sessionPage(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	var v httpapi.SessionView
	if err := a.call(r, s, http.MethodGet, "/v1/sessions/"+url.PathEscape(id), nil, &v); err != nil {
		return err
	}
	var verify sessionlog.Result
	verr := a.call(r, s, http.MethodGet, "/v1/sessions/"+url.PathEscape(id)+"/verify", nil, &verify)
	data := map[string]any{"Title": "Session " + v.ID, "S": v, "Verify": verify}
	if verr != nil {
		data["VerifyError"] = mayfly.ErrorMessage(verr)
	}
	if v.SSH != nil {
		for _, c := range v.SSH.Channels {
			if c.Recorded {
				data["Player"] = true
				w.Header().Set("Content-Security-Policy", playerCSP)
				break
			}
		}
	}
	a.render(w, r, http.StatusOK, "session", s, data)
	return nil
}

// sessionCast serves a terminal recording to the page's player (the
// browser holds the app's cookie, not an API token).
func (a *App) sessionCast(w http.ResponseWriter, r *http.Request, s *session) error {
	ch := r.URL.Query().Get("channel")
	if _, err := strconv.Atoi(ch); err != nil {
		return mayfly.Errorf(mayfly.EINVALID, "channel %q: want a number", ch)
	}
	var cast []byte
	if err := a.call(r, s, http.MethodGet, "/v1/sessions/"+url.PathEscape(r.PathValue("id"))+"/cast?channel="+ch, nil, &cast); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(cast)
	return nil
}
