package httpapi

import "net/http"

// handleCatalog lists the targets and grants the caller may request, with
// the terms of each policy that covers them (GET /v1/catalog).
func (s *server) handleCatalog() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		return 200, s.Broker.Catalog(callerFrom(r)), nil
	})
}
