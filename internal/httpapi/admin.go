package httpapi

import (
	"net/http"

	"github.com/mayflyhq/mayfly"
)

func (s *server) handleUsers() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		us, err := s.Broker.ListUsers(r.Context(), callerFrom(r))
		if err != nil {
			return 0, nil, err
		}
		return 200, us, nil
	})
}

// UserStatusResult is the answer to a suspend/resume/remove.
type UserStatusResult struct {
	Name              string `json:"name"`
	Status            string `json:"status"`
	LeasesRevoked     int    `json:"leases_revoked"`
	RequestsCancelled int    `json:"requests_cancelled"`
}

func (s *server) handleUserStatus(status string) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body DecisionBody
		if err := optionalBody(r, &body); err != nil {
			return 0, nil, err
		}
		name := r.PathValue("name")
		nl, nr, err := s.Broker.SetUserStatus(r.Context(), callerFrom(r), name, status, body.Reason)
		if err != nil {
			return 0, nil, err
		}
		return 200, UserStatusResult{Name: name, Status: status, LeasesRevoked: nl, RequestsCancelled: nr}, nil
	})
}

// ReconcileBody is the optional body of POST /v1/reconcile.
type ReconcileBody struct {
	Target string `json:"target"`
}

func (s *server) handleReconcile() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body ReconcileBody
		if err := optionalBody(r, &body); err != nil {
			return 0, nil, err
		}
		res, err := s.Broker.Reconcile(r.Context(), callerFrom(r), body.Target)
		if err != nil {
			return 0, nil, err
		}
		return 200, res, nil
	})
}

func (s *server) handleInventory() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		inv, err := s.Broker.Inventory(r.Context(), callerFrom(r), r.PathValue("name"))
		if err != nil {
			return 0, nil, err
		}
		if inv == nil {
			return 0, nil, mayfly.Errorf(mayfly.EINTERNAL, "no inventory")
		}
		return 200, inv, nil
	})
}

func (s *server) handleStanding() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		res, err := s.Broker.Standing(r.Context(), callerFrom(r))
		if err != nil {
			return 0, nil, err
		}
		return 200, res, nil
	})
}
