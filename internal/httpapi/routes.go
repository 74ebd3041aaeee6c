package httpapi

import (
	"net/http"
	"sort"
	"sync"
	"time"
)

// registered holds every pattern a server registered, for the test that
// compares them with the API description.
var (
	registeredMu sync.Mutex
	registered   = map[string]bool{}
)

// RegisteredRoutes returns the patterns servers registered so far in
// this process ("GET /v1/whoami", and prefixes such as "/v1/auth/").
func RegisteredRoutes() []string {
	registeredMu.Lock()
	defer registeredMu.Unlock()
	out := make([]string, 0, len(registered))
	for p := range registered {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// routes lists every endpoint in one place.
func (s *server) routes(mux0 *http.ServeMux) {
	mux := instrumented{mux0, s}
	mux.Handle("GET /healthz", s.handleHealthz())
	mux.Handle("GET /readyz", s.handleReadyz())
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.metricsAuth(s.Metrics.Handler()))
	}

	if s.SCIM != nil {
		mux.Handle("/scim/v2/", http.StripPrefix("/scim/v2", s.SCIM))
	}
	if s.Login != nil {
		mux.Handle("/v1/auth/", s.Login)
	}
	a := s.authed
	mux.Handle("GET /v1/openapi.json", s.handleOpenAPI())
	mux.Handle("GET /v1/whoami", a(s.handleWhoami()))
	mux.Handle("POST /v1/requests", a(s.handleCreateRequest()))
	mux.Handle("GET /v1/requests", a(s.handleListRequests()))
	mux.Handle("GET /v1/requests/{id}", a(s.handleGetRequest()))
	mux.Handle("POST /v1/requests/{id}/approve", a(s.handleApprove()))
	mux.Handle("POST /v1/requests/{id}/deny", a(s.handleDeny()))
	mux.Handle("POST /v1/requests/{id}/cancel", a(s.handleCancel()))
	mux.Handle("POST /v1/requests/{id}/activate", a(s.handleActivate()))
	mux.Handle("POST /v1/requests/{id}/done", a(s.handleEnd("done")))
	mux.Handle("GET /v1/leases", a(s.handleListLeases()))
	mux.Handle("GET /v1/leases/{id}", a(s.handleGetLease()))
	mux.Handle("POST /v1/leases/{id}/done", a(s.handleEnd("done")))
	mux.Handle("POST /v1/leases/{id}/revoke", a(s.handleEnd("revoked")))
	mux.Handle("GET /v1/audit", a(s.handleAudit()))
	mux.Handle("GET /v1/audit/verify", a(s.handleAuditVerify()))
	mux.Handle("GET /v1/audit/stream", a(adminOnly(s.handleAuditStream())))
	mux.Handle("POST /v1/audit/hash", a(adminOnly(s.handleAuditHash())))
	mux.Handle("POST /v1/audit/prune", a(adminOnly(s.handleAuditPrune())))
	mux.Handle("POST /v1/policy/explain", a(s.handleExplain()))
	mux.Handle("GET /v1/catalog", a(s.handleCatalog()))
	mux.Handle("GET /v1/ssh/ca", a(s.handleSSHCA()))
	mux.Handle("POST /v1/ssh/ca/rotate", a(adminOnly(s.handleSSHRotate())))
	mux.Handle("GET /v1/ssh/revoked-keys", s.revokedKeysAuth(s.handleRevokedKeys()))
	mux.Handle("POST /v1/leases/{id}/extend", a(s.handleExtend()))
	mux.Handle("POST /v1/leases/{id}/heartbeat", a(s.handleHeartbeat()))
	mux.Handle("POST /v1/leases/{id}/review", a(adminOnly(s.handleReview())))
	mux.Handle("POST /v1/policy/reload", a(adminOnly(s.handleReload())))
	mux.Handle("GET /v1/reports/access", a(adminOnly(s.handleAccessReport())))
	mux.Handle("GET /v1/reports/standing", a(adminOnly(s.handleStanding())))
	mux.Handle("GET /v1/users", a(s.handleUsers()))
	mux.Handle("POST /v1/users/{name}/suspend", a(adminOnly(s.handleUserStatus("suspended"))))
	mux.Handle("POST /v1/users/{name}/resume", a(adminOnly(s.handleUserStatus("active"))))
	mux.Handle("POST /v1/users/{name}/remove", a(adminOnly(s.handleUserStatus("deprovisioned"))))
	mux.Handle("POST /v1/tokens", a(s.handleCreateToken()))
	mux.Handle("GET /v1/tokens", a(s.handleListTokens()))
	mux.Handle("DELETE /v1/tokens/{id}", a(s.handleRevokeToken()))
	mux.Handle("POST /v1/tokens/{id}/revoke", a(s.handleRevokeToken()))
	mux.Handle("POST /v1/reconcile", a(adminOnly(s.handleReconcile())))
	mux.Handle("GET /v1/targets/{name}/inventory", a(adminOnly(s.handleInventory())))
	mux.Handle("GET /v1/cluster", a(adminOnly(s.handleCluster())))
	mux.Handle("GET /v1/sessions", a(s.handleListSessions()))
	mux.Handle("GET /v1/sessions/{id}", a(s.handleGetSession()))
	mux.Handle("GET /v1/sessions/{id}/verify", a(s.handleVerifySession()))
	mux.Handle("PUT /v1/targets/{name}/credential", a(adminOnly(s.handleSetCredential())))
	mux.Handle("POST /v1/targets/{name}/credential/rotate", a(adminOnly(s.handleRotateCredential())))
	mux.Handle("GET /v1/sessions/{id}/cast", a(s.handleSessionCast()))
	mux.Handle("/v1/", a(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errNoRoute(r))
	})))
}

// instrumented registers handlers with per-route latency metrics.
type instrumented struct {
	mux *http.ServeMux
	s   *server
}

func (m instrumented) Handle(pattern string, h http.Handler) {
	registeredMu.Lock()
	registered[pattern] = true
	registeredMu.Unlock()
	if m.s.Metrics == nil {
		m.mux.Handle(pattern, h)
		return
	}
	m.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: 200}
		h.ServeHTTP(sw, r)
		m.s.Metrics.ObserveAPI(pattern, sw.status, time.Since(start))
	}))
}
