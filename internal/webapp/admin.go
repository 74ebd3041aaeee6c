package webapp

import (
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/report"
)

// admin refuses the admin pages to non-admins (as the admin API does for
// what they show).
func (a *App) admin(h func(w http.ResponseWriter, r *http.Request, s *session) error) func(w http.ResponseWriter, r *http.Request, s *session) error {
	return func(w http.ResponseWriter, r *http.Request, s *session) error {
		if !s.Admin {
			return mayfly.Errorf(mayfly.EFORBIDDEN, "the admin pages need an admin")
		}
		return h(w, r, s)
	}
}

func (a *App) adminAudit(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	f := url.Values{}
	for _, k := range []string{"actor", "action", "target", "since", "until", "cursor"} {
		if v := q.Get(k); v != "" {
			f.Set(k, v)
		}
	}
	if f.Get("since") == "" && f.Get("cursor") == "" {
		f.Set("since", time.Now().UTC().Add(-24*time.Hour).Format(time.RFC3339))
	}
	f.Set("limit", "200")
	var events []*mayfly.AuditEvent
	hd, err := a.callHeader(r, s, http.MethodGet, "/v1/audit?"+f.Encode(), nil, &events)
	if err != nil {
		return err
	}
	var verify audit.Result
	verr := a.call(r, s, http.MethodGet, "/v1/audit/verify", nil, &verify)
	next := ""
	if c := hd.Get(httpapi.NextCursorHeader); c != "" {
		nq := url.Values{}
		for k := range f {
			if k != "limit" {
				nq.Set(k, f.Get(k))
			}
		}
		nq.Set("cursor", c)
		next = "/app/admin/audit?" + nq.Encode()
	}
	data := map[string]any{"Title": "Audit trail", "Events": events, "Filter": f, "Verify": verify, "Next": next}
	if verr != nil {
		data["VerifyError"] = mayfly.ErrorMessage(verr)
	}
	a.render(w, r, http.StatusOK, "admin_audit", s, data)
	return nil
}

func (a *App) adminUsers(w http.ResponseWriter, r *http.Request, s *session) error {
	var users []broker.UserView
	if err := a.list(r, s, "/v1/users", &users); err != nil {
		return err
	}
	a.render(w, r, http.StatusOK, "admin_users", s, map[string]any{"Title": "Users", "Users": users, "Notice": notice(r.URL.Query())})
	return nil
}

func (a *App) userStatus(w http.ResponseWriter, r *http.Request, s *session) error {
	name, action := r.PathValue("name"), r.PathValue("action")
	if action != "suspend" && action != "resume" {
		return mayfly.Errorf(mayfly.ENOTFOUND, "no such action %q: want suspend or resume", action)
	}
	var res httpapi.UserStatusResult
	if err := a.call(r, s, http.MethodPost, "/v1/users/"+url.PathEscape(name)+"/"+action, httpapi.DecisionBody{Reason: r.PostFormValue("reason")}, &res); err != nil {
		return err
	}
	http.Redirect(w, r, "/app/admin/users?user="+url.QueryEscape(name)+"&status="+url.QueryEscape(res.Status), http.StatusSeeOther)
	return nil
}

func (a *App) adminReview(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	now := time.Now().UTC()
	from, to := q.Get("from"), q.Get("to")
	if from == "" {
		from = now.AddDate(0, 0, -30).Format("2006-01-02")
	}
	if to == "" {
		to = now.AddDate(0, 0, 1).Format("2006-01-02")
	}
	f := url.Values{"from": {from}, "to": {to}}
	for _, k := range []string{"target", "user"} {
		if v := q.Get(k); v != "" {
			f.Set(k, v)
		}
	}
	var rep report.Report
	if err := a.list(r, s, "/v1/reports/access?"+f.Encode(), &rep); err != nil {
		return err
	}
	a.render(w, r, http.StatusOK, "admin_review", s, map[string]any{"Title": "Access review", "R": rep, "Filter": f})
	return nil
}

func (a *App) adminStanding(w http.ResponseWriter, r *http.Request, s *session) error {
	var st []broker.StandingTarget
	if err := a.list(r, s, "/v1/reports/standing", &st); err != nil {
		return err
	}
	a.render(w, r, http.StatusOK, "admin_standing", s, map[string]any{"Title": "Standing accounts", "Targets": st})
	return nil
}

// overdueGrace is how long past its expiry a lease may still be live
// before the page calls its revocation overdue.
const overdueGrace = time.Minute

func (a *App) adminLeases(w http.ResponseWriter, r *http.Request, s *session) error {
	var leases []httpapi.LeaseView
	if err := a.list(r, s, "/v1/leases?active=true&limit=1000", &leases); err != nil {
		return err
	}
	now := a.o.Now()
	var overdue []httpapi.LeaseView
	for _, l := range leases {
		if l.ExpiresAt.Add(overdueGrace).Before(now) {
			overdue = append(overdue, l)
		}
	}
	slices.SortFunc(leases, func(x, y httpapi.LeaseView) int { return x.ExpiresAt.Compare(y.ExpiresAt) })
	a.render(w, r, http.StatusOK, "admin_leases", s, map[string]any{"Title": "Live leases", "Leases": leases, "Overdue": overdue, "Grace": overdueGrace})
	return nil
}
