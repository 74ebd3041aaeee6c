package httpapi

import (
	"net/http"
	"slices"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/report"
)

// ExtendBody is the body of POST /v1/leases/{id}/extend.
type ExtendBody struct {
	Duration string `json:"duration"`
	Reason   string `json:"reason"`
}

func (s *server) handleExtend() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body ExtendBody
		if err := decode(r, &body); err != nil {
			return 0, nil, err
		}
		d, err := parseDuration(body.Duration)
		if err != nil {
			return 0, nil, err
		}
		if d == 0 {
			return 0, nil, mayfly.Errorf(mayfly.EINVALID, "duration is required")
		}
		l, req, err := s.Broker.Extend(r.Context(), callerFrom(r), r.PathValue("id"), d, body.Reason)
		if err != nil {
			return 0, nil, err
		}
		if req != nil {
			// Needs approval: the extension request waits for its approvers.
			return http.StatusAccepted, ExtendResponse{Request: ptr(requestView(req))}, nil
		}
		v := s.view(l)
		return 200, ExtendResponse{LeaseView: &v}, nil
	})
}

// ReviewBody is the body of POST /v1/leases/{id}/review.
type ReviewBody struct {
	Note string `json:"note"`
}

func (s *server) handleReview() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body ReviewBody
		if err := decode(r, &body); err != nil {
			return 0, nil, err
		}
		if err := s.Broker.Review(r.Context(), callerFrom(r), r.PathValue("id"), body.Note); err != nil {
			return 0, nil, err
		}
		return 200, map[string]string{"lease_id": r.PathValue("id"), "reviewed": "true"}, nil
	})
}

func (s *server) handleReload() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		if s.Reload == nil {
			return 0, nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "this server has no configuration file to reload")
		}
		res, err := s.Reload()
		if err != nil {
			return 0, nil, err
		}
		res.Status = "reloaded"
		if res.NeedsRestart == nil {
			res.NeedsRestart = []string{}
		}
		if res.Warnings == nil {
			res.Warnings = []string{}
		}
		return 200, res, nil
	})
}

// ReloadResult is the answer to POST /v1/policy/reload.
type ReloadResult struct {
	Status string `json:"status"`
	// NeedsRestart lists the changes the reload could not apply, each
	// saying what changed; a restart applies them.
	NeedsRestart []string `json:"needs_restart"`
	// Warnings are what the new configuration allows but looks wrong,
	// such as approver groups nobody is in.
	Warnings []string `json:"warnings"`
}

// handleAccessReport gathers the leases, requests and events of a period
// and builds the access review (admins: auditors read everything).
func (s *server) handleAccessReport() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		q := r.URL.Query()
		from, err := report.ParseDate(q.Get("from"))
		if err != nil {
			return 0, nil, err
		}
		to, err := report.ParseDate(q.Get("to"))
		if err != nil {
			return 0, nil, err
		}
		in := report.Input{From: from, To: to, Target: q.Get("target"), User: q.Get("user"), Requests: map[string]*mayfly.Request{}}
		if err := in.Validate(); err != nil {
			return 0, nil, err
		}
		err = s.Broker.Store().View(r.Context(), func(tx mayfly.Tx) error {
			ls, err := tx.ListLeases(mayfly.LeaseFilter{Target: in.Target, Requester: in.User})
			if err != nil {
				return err
			}
			var reqIDs []string
			for _, l := range ls {
				if l.CreatedAt.Before(to) && (l.EndedAt.IsZero() || l.EndedAt.After(from)) {
					in.Leases = append(in.Leases, l)
					reqIDs = append(reqIDs, l.RequestID)
				}
			}
			if len(reqIDs) > 0 {
				rs, err := tx.ListRequests(mayfly.RequestFilter{IDs: reqIDs})
				if err != nil {
					return err
				}
				for _, x := range rs {
					in.Requests[x.ID] = x
				}
			}
			for _, action := range []string{"request.create", "request.approve", "lease.review", "lease.extend", "session.start"} {
				evs, err := tx.ListAudit(mayfly.AuditFilter{Action: action})
				if err != nil {
					return err
				}
				for _, e := range evs {
					if _, ok := in.Requests[e.RequestID]; ok || slices.ContainsFunc(in.Leases, func(l *mayfly.Lease) bool { return l.ID == e.LeaseID }) {
						in.Events = append(in.Events, e)
					}
				}
			}
			return nil
		})
		if err != nil {
			return 0, nil, err
		}
		in.Now = s.Broker.Now()
		return 200, report.Build(in), nil
	})
}

// ExtendResponse is the answer to an extension: the extended lease, or the
// extension request waiting for approval.
type ExtendResponse struct {
	*LeaseView
	Request *RequestView `json:"request,omitempty"`
}

func ptr[T any](v T) *T { return &v }
