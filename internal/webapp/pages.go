package webapp

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/policy"
)

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// signinPage offers the identity provider's login and the API-token form.
func (a *App) signinPage(w http.ResponseWriter, r *http.Request) {
	ret := safeReturn(r.URL.Query().Get("return"))
	if _, err := a.current(r); err == nil {
		http.Redirect(w, r, ret, http.StatusSeeOther)
		return
	} else if mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED {
		a.fail(w, r, nil, err)
		return
	}
	a.renderSignin(w, r, http.StatusOK, ret, "")
}

func (a *App) renderSignin(w http.ResponseWriter, r *http.Request, status int, ret, msg string) {
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: tok, Path: "/app/signin", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	a.render(w, r, status, "signin", nil, map[string]any{
		"Title": "Sign in", "SigninCSRF": tok, "Return": ret, "Error": msg,
		"LoginURL": "/v1/auth/login?return=" + url.QueryEscape(ret),
	})
}

// signin opens a browser session with a pasted API token: the API checks
// it (GET /v1/whoami) and it becomes the session cookie.
func (a *App) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	ret := safeReturn(r.PostFormValue("return"))
	ck, err := r.Cookie(signinCookie)
	if err != nil || !sameToken(r.PostFormValue(CSRFField), ck.Value) || r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		a.fail(w, r, nil, mayfly.Errorf(mayfly.EFORBIDDEN, "the sign-in form expired or was sent from another site: reload the sign-in page"))
		return
	}
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if tok == "" {
		a.renderSignin(w, r, http.StatusBadRequest, ret, "Paste an API token (mayfly tokens create prints one).")
		return
	}
	s := &session{token: tok}
	var who struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := a.call(r, s, http.MethodGet, "/v1/whoami", nil, &who); err != nil {
		a.renderSignin(w, r, statusOf[mayfly.ErrorCode(err)], ret, "That token was refused: "+mayfly.ErrorMessage(err))
		return
	}
	c := &http.Cookie{Name: SessionCookie, Value: tok, Path: "/", HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode}
	if !who.ExpiresAt.IsZero() {
		c.Expires = who.ExpiresAt
	}
	http.SetCookie(w, c)
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: "", Path: "/app/signin", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, ret, http.StatusSeeOther)
}

// signout ends a single sign-on session at the API and forgets the
// cookie (an API token pasted in stays valid: it is the person's).
func (a *App) signout(w http.ResponseWriter, r *http.Request, s *session) error {
	if strings.HasPrefix(s.Method, "oidc") {
		if err := a.call(r, s, http.MethodPost, "/v1/auth/logout", nil, nil); err != nil && mayfly.ErrorCode(err) != mayfly.EUNAUTHORIZED {
			return err
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/app/signin", http.StatusSeeOther)
	return nil
}

func (a *App) home(w http.ResponseWriter, r *http.Request, s *session) error {
	return a.accessPage(w, r, s)
}

// offerKey names an offer in the request form.
func offerKey(o policy.Offer) string { return o.Target + "/" + o.Grant }

type requestForm struct {
	Offer, Duration, Reason string
	BreakGlass              bool
}

func readRequestForm(r *http.Request) requestForm {
	return requestForm{Offer: r.PostFormValue("offer"), Duration: strings.TrimSpace(r.PostFormValue("duration")),
		Reason: r.PostFormValue("reason"), BreakGlass: r.PostFormValue("break_glass") != ""}
}

func (f requestForm) body() (httpapi.CreateRequestBody, error) {
	t, g, ok := strings.Cut(f.Offer, "/")
	if !ok || t == "" || g == "" {
		return httpapi.CreateRequestBody{}, mayfly.Errorf(mayfly.EINVALID, "choose what to request")
	}
	return httpapi.CreateRequestBody{Target: t, Grant: g, Duration: f.Duration, Reason: f.Reason, BreakGlass: f.BreakGlass}, nil
}

func (a *App) catalog(r *http.Request, s *session) ([]policy.Offer, error) {
	var offers []policy.Offer
	err := a.call(r, s, http.MethodGet, "/v1/catalog", nil, &offers)
	return offers, err
}

func (a *App) requestPage(w http.ResponseWriter, r *http.Request, s *session) error {
	f := requestForm{Offer: r.URL.Query().Get("offer")}
	return a.renderRequest(w, r, s, http.StatusOK, f, "")
}

func (a *App) renderRequest(w http.ResponseWriter, r *http.Request, s *session, status int, f requestForm, msg string) error {
	offers, err := a.catalog(r, s)
	if err != nil {
		return err
	}
	if f.Offer == "" && len(offers) > 0 {
		f.Offer = offerKey(offers[0])
	}
	anyBG := slices.ContainsFunc(offers, func(o policy.Offer) bool {
		return slices.ContainsFunc(o.Terms, func(t policy.Terms) bool { return t.BreakGlass })
	})
	a.render(w, r, status, "request", s, map[string]any{"Title": "Request access", "Offers": offers, "Form": f, "Error": msg, "BreakGlassOffered": anyBG})
	return nil
}

func (a *App) createRequest(w http.ResponseWriter, r *http.Request, s *session) error {
	f := readRequestForm(r)
	body, err := f.body()
	if err == nil {
		var resp httpapi.CreateRequestResponse
		if err = a.call(r, s, http.MethodPost, "/v1/requests", body, &resp); err == nil {
			http.Redirect(w, r, "/app/access?created="+url.QueryEscape(resp.ID)+"#req-"+url.QueryEscape(resp.ID), http.StatusSeeOther)
			return nil
		}
	}
	switch mayfly.ErrorCode(err) {
	case mayfly.EINVALID, mayfly.EFORBIDDEN, mayfly.ENOTFOUND, mayfly.ECONFLICT:
		return a.renderRequest(w, r, s, statusOf[mayfly.ErrorCode(err)], f, mayfly.ErrorMessage(err))
	}
	return err
}

// Preview is the live policy decision on a draft request.
type Preview struct {
	Decision    string        `json:"decision"`
	Policy      string        `json:"policy,omitempty"`
	Duration    string        `json:"duration,omitempty"`
	Steps       []policy.Step `json:"steps"`
	Reason      string        `json:"reason,omitempty"`
	MaxDuration string        `json:"max_duration,omitempty"`
	// ReasonPattern is the pattern of the deciding (or nearest) policy's
	// reason; ReasonMatches says whether the draft's reason matches it.
	ReasonPattern string `json:"reason_pattern,omitempty"`
	ReasonMatches *bool  `json:"reason_matches,omitempty"`
	BreakGlass    bool   `json:"break_glass"`
}

// preview decides a draft request with the API's policy explanation
// (POST /v1/policy/explain) and adds the terms of the deciding policy.
func (a *App) preview(w http.ResponseWriter, r *http.Request, s *session) error {
	f := readRequestForm(r)
	body, err := f.body()
	if err != nil {
		return err
	}
	var dec policy.Decision
	if err := a.call(r, s, http.MethodPost, "/v1/policy/explain", httpapi.ExplainBody{Target: body.Target, Grant: body.Grant,
		Duration: body.Duration, Reason: body.Reason, BreakGlass: body.BreakGlass}, &dec); err != nil {
		return err
	}
	p := Preview{Decision: dec.Decision, Duration: dec.DurationText, Steps: dec.Steps, Reason: dec.Reason, BreakGlass: f.BreakGlass}
	if p.Steps == nil {
		p.Steps = []policy.Step{}
	}
	if dec.Policy != nil {
		p.Policy = *dec.Policy
	}
	offers, err := a.catalog(r, s)
	if err != nil {
		return err
	}
	for _, o := range offers {
		if offerKey(o) != f.Offer {
			continue
		}
		for _, t := range o.Terms {
			if t.BreakGlass != f.BreakGlass || (p.Policy != "" && t.Policy != p.Policy) {
				continue
			}
			p.MaxDuration = t.MaxDuration
			if t.ReasonPattern != "" {
				p.ReasonPattern = t.ReasonPattern
				if re, err := regexp.Compile(t.ReasonPattern); err == nil {
					m := re.MatchString(f.Reason)
					p.ReasonMatches = &m
				}
			}
			break
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(p)
}

// listAll reads up to limit items of an API list.
func (a *App) list(r *http.Request, s *session, path string, out any) error {
	return a.call(r, s, http.MethodGet, path, nil, out)
}

// accessRow is a request of the person with its lease, if any.
type accessRow struct {
	httpapi.RequestView
	Lease *httpapi.LeaseView
	// TargetKind is the kind of the request's target ("ssh" asks for a
	// public key at activation).
	TargetKind string
}

func (a *App) accessPage(w http.ResponseWriter, r *http.Request, s *session) error {
	var reqs []httpapi.RequestView
	if err := a.list(r, s, "/v1/requests?limit=1000", &reqs); err != nil {
		return err
	}
	var leases []httpapi.LeaseView
	q := url.Values{"limit": {"1000"}, "user": {s.Name}}
	if err := a.list(r, s, "/v1/leases?"+q.Encode(), &leases); err != nil {
		return err
	}
	byID := map[string]*httpapi.LeaseView{}
	var live, ended []httpapi.LeaseView
	for i := range leases {
		l := &leases[i]
		if l.Requester != s.Name {
			continue
		}
		byID[l.ID] = l
		switch l.State {
		case mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking:
			live = append(live, *l)
		default:
			ended = append(ended, *l)
		}
	}
	offers, err := a.catalog(r, s)
	if err != nil {
		return err
	}
	kinds := map[string]string{}
	for _, o := range offers {
		kinds[o.Target] = o.Kind
	}
	var open, past []accessRow
	for _, rq := range reqs {
		if rq.Requester != s.Name || rq.Kind == httpapi.KindExtension && rq.State != mayfly.RequestPending {
			continue
		}
		row := accessRow{RequestView: rq, Lease: byID[rq.LeaseID], TargetKind: kinds[rq.Target]}
		if rq.State == mayfly.RequestPending || (rq.State == mayfly.RequestApproved && rq.LeaseID == "") {
			open = append(open, row)
		} else {
			past = append(past, row)
		}
	}
	newestFirst := func(x, y accessRow) int { return y.CreatedAt.Compare(x.CreatedAt) }
	slices.SortFunc(open, newestFirst)
	slices.SortFunc(past, newestFirst)
	slices.SortFunc(ended, func(x, y httpapi.LeaseView) int { return cmp.Compare(y.EndedAt.Unix(), x.EndedAt.Unix()) })
	past = past[:min(len(past), 15)]
	ended = ended[:min(len(ended), 10)]
	q2 := r.URL.Query()
	a.render(w, r, http.StatusOK, "access", s, map[string]any{"Title": "My access", "Open": open, "Past": past, "Live": live, "Ended": ended,
		"Created": q2.Get("created"), "Notice": notice(q2)})
	return nil
}

// notice is the message of a redirect after an action.
func notice(q url.Values) string {
	switch {
	case q.Get("ended") != "":
		return "Lease " + q.Get("ended") + " ended: its account is being removed."
	case q.Get("extended") != "":
		return "Lease " + q.Get("extended") + " extended."
	case q.Get("extension") != "":
		return "Extension requested (" + q.Get("extension") + "): it waits for approval."
	case q.Get("cancelled") != "":
		return "Request " + q.Get("cancelled") + " cancelled."
	case q.Get("decided") != "":
		return "Request " + q.Get("decided") + " " + q.Get("outcome") + "."
	case q.Get("user") != "":
		return "User " + q.Get("user") + " is now " + q.Get("status") + "."
	}
	return ""
}

// activate issues the credential of an approved request and shows it this
// once; the API refuses a second activation, so it is never shown again.
func (a *App) activate(w http.ResponseWriter, r *http.Request, s *session) error {
	var body httpapi.ActivateBody
	body.PublicKey = strings.TrimSpace(r.PostFormValue("public_key"))
	var cv httpapi.CredsView
	if err := a.call(r, s, http.MethodPost, "/v1/requests/"+url.PathEscape(r.PathValue("id"))+"/activate", body, &cv); err != nil {
		if mayfly.ErrorCode(err) == mayfly.ECONFLICT {
			return mayfly.Errorf(mayfly.ECONFLICT, "%s — a credential is shown only once, when it is issued; end the lease and request access again if it was lost", mayfly.ErrorMessage(err))
		}
		return err
	}
	a.render(w, r, http.StatusOK, "creds", s, map[string]any{"Title": "Your credential", "C": cv, "Command": connectCommand(cv)})
	return nil
}

func (a *App) cancel(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	if err := a.call(r, s, http.MethodPost, "/v1/requests/"+url.PathEscape(id)+"/cancel", httpapi.DecisionBody{Reason: r.PostFormValue("reason")}, nil); err != nil {
		return err
	}
	http.Redirect(w, r, "/app/access?cancelled="+url.QueryEscape(id), http.StatusSeeOther)
	return nil
}

func (a *App) endLease(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	if err := a.call(r, s, http.MethodPost, "/v1/leases/"+url.PathEscape(id)+"/done", httpapi.DecisionBody{Reason: r.PostFormValue("reason")}, nil); err != nil {
		return err
	}
	http.Redirect(w, r, "/app/access?ended="+url.QueryEscape(id), http.StatusSeeOther)
	return nil
}

func (a *App) extendLease(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	var resp httpapi.ExtendResponse
	if err := a.call(r, s, http.MethodPost, "/v1/leases/"+url.PathEscape(id)+"/extend",
		httpapi.ExtendBody{Duration: strings.TrimSpace(r.PostFormValue("duration")), Reason: r.PostFormValue("reason")}, &resp); err != nil {
		return err
	}
	if resp.Request != nil {
		http.Redirect(w, r, "/app/access?extension="+url.QueryEscape(resp.Request.ID), http.StatusSeeOther)
		return nil
	}
	http.Redirect(w, r, "/app/access?extended="+url.QueryEscape(id), http.StatusSeeOther)
	return nil
}

// maxInbox bounds the requests the inbox shows at once, oldest first;
// deciding them brings the next.
const maxInbox = 50

// inboxRow is a request the person may decide now.
type inboxRow struct {
	httpapi.RequestView
	History []httpapi.RequestView
}

func (a *App) approvalsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	var pending, all []httpapi.RequestView
	if err := a.list(r, s, "/v1/requests?pending=true&limit=1000", &pending); err != nil {
		return err
	}
	if err := a.list(r, s, "/v1/requests?limit=1000", &all); err != nil {
		return err
	}
	var rows []inboxRow
	for _, rq := range pending {
		if rq.State != mayfly.RequestPending || slices.Contains(rq.Approvers, s.Name) {
			continue
		}
		// The broker's own eligibility rule: never the requester, only
		// the current step's groups.
		if ok, _ := policy.CanApprove(policy.Step{Approvals: rq.ApprovalsRequired, ApproverGroups: rq.ApproverGroups}, s.Name, s.Groups, rq.Requester); !ok {
			continue
		}
		row := inboxRow{RequestView: rq}
		for _, h := range all {
			if h.ID != rq.ID && h.Requester == rq.Requester && h.Target == rq.Target {
				row.History = append(row.History, h)
			}
		}
		slices.SortFunc(row.History, func(x, y httpapi.RequestView) int { return y.CreatedAt.Compare(x.CreatedAt) })
		row.History = row.History[:min(len(row.History), 5)]
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(x, y inboxRow) int { return x.CreatedAt.Compare(y.CreatedAt) })
	total := len(rows)
	rows = rows[:min(len(rows), maxInbox)]
	a.render(w, r, http.StatusOK, "approvals", s, map[string]any{"Title": "Approvals", "Rows": rows, "Total": total, "Notice": notice(r.URL.Query())})
	return nil
}

func (a *App) decide(action string) func(w http.ResponseWriter, r *http.Request, s *session) error {
	return func(w http.ResponseWriter, r *http.Request, s *session) error {
		id := r.PathValue("id")
		var rv httpapi.RequestView
		if err := a.call(r, s, http.MethodPost, "/v1/requests/"+url.PathEscape(id)+"/"+action, httpapi.DecisionBody{Reason: r.PostFormValue("reason")}, &rv); err != nil {
			return err
		}
		outcome := string(rv.State)
		if rv.State == mayfly.RequestPending {
			outcome = "approved by you; it waits for more approvals"
		}
		http.Redirect(w, r, "/app/approvals?decided="+url.QueryEscape(id)+"&outcome="+url.QueryEscape(outcome), http.StatusSeeOther)
		return nil
	}
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// connectCommand is a command that connects with the credential, ready to
// paste into a shell.
func connectCommand(c httpapi.CredsView) string {
	port := func(def int) string { return fmt.Sprint(cmp.Or(c.Port, def)) }
	switch c.Kind {
	case "postgres":
		db := cmp.Or(c.Database, "postgres")
		return fmt.Sprintf("PGPASSWORD=%s psql -h %s -p %s -U %s %s", shellQuote(c.Password), shellQuote(c.Host), port(5432), shellQuote(c.Username), shellQuote(db))
	case "mysql":
		cmd := fmt.Sprintf("MYSQL_PWD=%s mysql -h %s -P %s -u %s", shellQuote(c.Password), shellQuote(c.Host), port(3306), shellQuote(c.Username))
		if c.Database != "" {
			cmd += " " + shellQuote(c.Database)
		}
		return cmd
	case "redis":
		return fmt.Sprintf("REDISCLI_AUTH=%s redis-cli -h %s -p %s --user %s", shellQuote(c.Password), shellQuote(c.Host), port(6379), shellQuote(c.Username))
	case "ssh":
		ssh := fmt.Sprintf("ssh -o CertificateFile=mayfly-cert.pub -p %s %s@%s", port(22), shellQuote(c.Username), shellQuote(c.Host))
		if c.Certificate != "" {
			ssh = fmt.Sprintf("printf '%%s\\n' %s > mayfly-cert.pub && %s", shellQuote(strings.TrimSpace(c.Certificate)), ssh)
		}
		return ssh
	}
	return ""
}
