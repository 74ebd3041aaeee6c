package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/policy"
)

func errNoRoute(r *http.Request) error {
	return mayfly.Errorf(mayfly.ENOTFOUND, "no such endpoint: %s %s", r.Method, r.URL.Path)
}

// RequestView is a request as the API shows it.
type RequestView struct {
	*mayfly.Request
	Duration        string  `json:"duration"`
	DurationSeconds float64 `json:"duration_seconds"`
	// Kind says what the request is for: "access" (a new lease),
	// "extension" (of lease extends_lease) or "break_glass" (emergency
	// access taken without approval).
	Kind string `json:"kind"`
}

// Request kinds.
const (
	KindAccess     = "access"
	KindExtension  = "extension"
	KindBreakGlass = "break_glass"
)

// RequestKind returns the kind of r.
func RequestKind(r *mayfly.Request) string {
	switch {
	case r.ExtendsLease != "":
		return KindExtension
	case r.BreakGlass:
		return KindBreakGlass
	}
	return KindAccess
}

func requestView(r *mayfly.Request) RequestView {
	if r.Approvers == nil {
		r.Approvers = []string{}
	}
	if r.ApproverGroups == nil {
		r.ApproverGroups = []string{}
	}
	if r.Steps == nil {
		r.Steps = []mayfly.ApprovalStep{}
	}
	return RequestView{Request: r, Duration: r.Duration.String(), DurationSeconds: r.Duration.Seconds(), Kind: RequestKind(r)}
}

// LeaseView is a lease as the API shows it; ended_at and end_reason are
// always present (null and "" while the lease lives).
type LeaseView struct {
	*mayfly.Lease
	EndedAt   *time.Time `json:"ended_at"`
	EndReason string     `json:"end_reason"`
	// BreakGlass marks a lease of break-glass access.
	BreakGlass bool `json:"break_glass"`
	// Login is the name the holder logs in as: the account's username,
	// or, for an SSH certificate, its principals (comma-separated; the
	// username then only names the certificate in logs and the KRL).
	Login string `json:"login"`
}

// view is leaseView with the login the holder uses.
func (s *server) view(l *mayfly.Lease) LeaseView {
	v := leaseView(l)
	v.Login = loginOf(s.Broker.Config(), l)
	return v
}

// setLogins sets the Login of each view.
func (s *server) setLogins(vs []LeaseView) {
	cfg := s.Broker.Config()
	for i := range vs {
		vs[i].Login = loginOf(cfg, vs[i].Lease)
	}
}

func loginOf(cfg *broker.Config, l *mayfly.Lease) string {
	t, ok := cfg.Targets[l.Target]
	if !ok || t.Kind != mayfly.KindSSH {
		return l.Username
	}
	g := t.Grants[l.Grant]
	if g.HostUser || len(g.Principals) == 0 {
		return l.Username
	}
	return strings.Join(g.Principals, ",")
}

// markBreakGlass sets BreakGlass on the views whose request was
// break-glass access.
func (s *server) markBreakGlass(ctx context.Context, vs []LeaseView) error {
	if len(vs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(vs))
	for _, v := range vs {
		ids = append(ids, v.RequestID)
	}
	bg := map[string]bool{}
	err := s.Broker.Store().View(ctx, func(tx mayfly.Tx) error {
		rs, err := tx.ListRequests(mayfly.RequestFilter{IDs: ids})
		if err != nil {
			return err
		}
		for _, r := range rs {
			bg[r.ID] = r.BreakGlass
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range vs {
		vs[i].BreakGlass = bg[vs[i].RequestID]
	}
	return nil
}

func leaseView(l *mayfly.Lease) LeaseView {
	v := LeaseView{Lease: l, EndReason: l.EndReason}
	if !l.EndedAt.IsZero() {
		t := l.EndedAt
		v.EndedAt = &t
	}
	return v
}

// CreateRequestBody is the body of POST /v1/requests.
type CreateRequestBody struct {
	Target     string `json:"target"`
	Grant      string `json:"grant"`
	Duration   string `json:"duration"`
	Reason     string `json:"reason"`
	BreakGlass bool   `json:"break_glass"`
	// Activate asks for the credential in the same call when the request
	// is approved at once.
	Activate  bool   `json:"activate"`
	PublicKey string `json:"public_key,omitempty"`
	// HeartbeatTimeout, when set (e.g. "60s"), binds the lease to the
	// client's session (mayfly connect).
	HeartbeatTimeout string `json:"heartbeat_timeout,omitempty"`
}

func heartbeatTimeout(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := mayfly.ParseDuration(s)
	if err != nil || d < 5*time.Second || d > time.Hour {
		return 0, mayfly.Errorf(mayfly.EINVALID, "heartbeat_timeout %q: want a duration between 5s and 1h", s)
	}
	return d, nil
}

// CreateRequestResponse is the answer to POST /v1/requests.
type CreateRequestResponse struct {
	RequestView
	Decision    policy.Decision `json:"decision"`
	Credentials *CredsView      `json:"credentials,omitempty"`
}

// CredsView is a credential as shown once to the requester.
type CredsView struct {
	LeaseID   string    `json:"lease_id"`
	RequestID string    `json:"request_id"`
	Target    string    `json:"target"`
	Kind      string    `json:"kind"`
	ExpiresAt time.Time `json:"expires_at"`
	mayfly.Credential
}

func (s *server) credsView(a *broker.Activation) *CredsView {
	return &CredsView{LeaseID: a.Lease.ID, RequestID: a.Lease.RequestID, Target: a.Lease.Target,
		Kind: s.Broker.Config().Targets[a.Lease.Target].Kind, ExpiresAt: a.Lease.ExpiresAt.UTC(), Credential: a.Credential}
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := mayfly.ParseDuration(s)
	if err != nil {
		return 0, mayfly.Errorf(mayfly.EINVALID, "duration %q: want %s", s, mayfly.DurationSyntax)
	}
	if d <= 0 {
		return 0, mayfly.Errorf(mayfly.EINVALID, "duration %q must be positive", s)
	}
	return d, nil
}

func (s *server) handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

func (s *server) handleReadyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
			defer cancel()
			if err := s.Ready(ctx); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "replica": s.ReplicaID, "reason": mayfly.ErrorMessage(err)})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "replica": s.ReplicaID})
	})
}

// handleCluster lists the replicas sharing the store and the work each
// leads (admins).
func (s *server) handleCluster() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		if s.Cluster == nil {
			return 0, nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "this server keeps no cluster status")
		}
		st, err := s.Cluster(r.Context())
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, st, nil
	})
}

func (s *server) handleWhoami() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		c := callerFrom(r)
		groups := c.Groups
		if groups == nil {
			groups = []string{}
		}
		out := WhoamiView{Name: c.User, Groups: groups, Admin: c.Admin, Method: "token"}
		if id, _ := r.Context().Value(identityKey{}).(Identity); id.Method != "" {
			out.Method = id.Method
			out.ExpiresAt = &id.ExpiresAt
		}
		return 200, out, nil
	})
}

func (s *server) handleCreateRequest() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body CreateRequestBody
		if err := decode(r, &body); err != nil {
			return 0, nil, err
		}
		d, err := parseDuration(body.Duration)
		if err != nil {
			return 0, nil, err
		}
		c := callerFrom(r)
		in := broker.RequestInput{Target: body.Target, Grant: body.Grant, Duration: d, Reason: body.Reason, BreakGlass: body.BreakGlass}
		if !body.Activate {
			req, dec, err := s.Broker.CreateRequest(r.Context(), c, in)
			if err != nil {
				return 0, nil, withDecision(err, dec)
			}
			return http.StatusCreated, CreateRequestResponse{RequestView: requestView(req), Decision: dec}, nil
		}
		hb, err := heartbeatTimeout(body.HeartbeatTimeout)
		if err != nil {
			return 0, nil, err
		}
		req, dec, a, err := s.Broker.CreateAndActivate(r.Context(), c, in, broker.ActivateOptions{PublicKey: body.PublicKey, SessionTimeout: hb})
		if err != nil {
			return 0, nil, withDecision(err, dec)
		}
		resp := CreateRequestResponse{RequestView: requestView(req), Decision: dec}
		if a != nil {
			resp.Credentials = s.credsView(a)
		}
		return http.StatusCreated, resp, nil
	})
}

func (s *server) handleListRequests() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		q := r.URL.Query()
		limit, err := pageLimit(q.Get("limit"), DefaultPageSize, MaxPageSize)
		if err != nil {
			return 0, nil, err
		}
		f := mayfly.RequestFilter{Limit: limit + 1}
		if f.After, err = decodeCursor(q.Get("cursor")); err != nil {
			return 0, nil, err
		}
		if q.Get("pending") == "true" {
			// Open as well, so the store can use its index of open requests.
			f.States, f.Open = []mayfly.RequestState{mayfly.RequestPending}, true
		}
		rs, err := s.Broker.ListRequests(r.Context(), callerFrom(r), f)
		if err != nil {
			return 0, nil, err
		}
		rs = page(w, rs, limit, func(x *mayfly.Request) string {
			return encodeCursor(mayfly.PageCursor{CreatedAt: x.CreatedAt, ID: x.ID})
		})
		return 200, views(rs, requestView), nil
	})
}

func (s *server) handleGetRequest() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		req, err := s.Broker.GetRequest(r.Context(), callerFrom(r), r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		return 200, requestView(req), nil
	})
}

// DecisionBody is the optional body of approve/deny/done/revoke.
type DecisionBody struct {
	Reason string `json:"reason"`
}

func optionalBody(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return decode(r, v)
}

func (s *server) handleApprove() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body DecisionBody
		if err := optionalBody(r, &body); err != nil {
			return 0, nil, err
		}
		req, err := s.Broker.Approve(r.Context(), callerFrom(r), r.PathValue("id"), body.Reason)
		if err != nil {
			return 0, nil, err
		}
		return 200, requestView(req), nil
	})
}

func (s *server) handleDeny() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body DecisionBody
		if err := optionalBody(r, &body); err != nil {
			return 0, nil, err
		}
		req, err := s.Broker.Deny(r.Context(), callerFrom(r), r.PathValue("id"), body.Reason)
		if err != nil {
			return 0, nil, err
		}
		return 200, requestView(req), nil
	})
}

func (s *server) handleCancel() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body DecisionBody
		if err := optionalBody(r, &body); err != nil {
			return 0, nil, err
		}
		req, err := s.Broker.Cancel(r.Context(), callerFrom(r), r.PathValue("id"), body.Reason)
		if err != nil {
			return 0, nil, err
		}
		return 200, requestView(req), nil
	})
}

// ActivateBody is the optional body of POST /v1/requests/{id}/activate.
type ActivateBody struct {
	PublicKey        string `json:"public_key"`
	HeartbeatTimeout string `json:"heartbeat_timeout,omitempty"`
}

func (s *server) handleActivate() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body ActivateBody
		if err := optionalBody(r, &body); err != nil {
			return 0, nil, err
		}
		hb, err := heartbeatTimeout(body.HeartbeatTimeout)
		if err != nil {
			return 0, nil, err
		}
		a, err := s.Broker.Activate(r.Context(), callerFrom(r), r.PathValue("id"), broker.ActivateOptions{PublicKey: body.PublicKey, SessionTimeout: hb})
		if err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, s.credsView(a), nil
	})
}

func (s *server) handleEnd(reason string) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body DecisionBody
		if err := optionalBody(r, &body); err != nil {
			return 0, nil, err
		}
		if err := broker.CheckText("reason", body.Reason); err != nil {
			return 0, nil, err
		}
		l, err := s.Broker.EndLease(r.Context(), callerFrom(r), r.PathValue("id"), reason, body.Reason)
		if err != nil {
			return 0, nil, err
		}
		return 200, s.view(l), nil
	})
}

func intParam(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, mayfly.Errorf(mayfly.EINVALID, "%q is not a non-negative integer", s)
	}
	return n, nil
}

func (s *server) handleListLeases() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		q := r.URL.Query()
		limit, err := pageLimit(q.Get("limit"), DefaultPageSize, MaxPageSize)
		if err != nil {
			return 0, nil, err
		}
		f := mayfly.LeaseFilter{Target: q.Get("target"), Requester: q.Get("user"), Limit: limit + 1}
		if f.After, err = decodeCursor(q.Get("cursor")); err != nil {
			return 0, nil, err
		}
		for _, st := range q["state"] {
			f.States = append(f.States, mayfly.LeaseState(st))
		}
		if q.Get("active") == "true" {
			f.States = []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking}
		}
		ls, err := s.Broker.ListLeases(r.Context(), callerFrom(r), f)
		if err != nil {
			return 0, nil, err
		}
		ls = page(w, ls, limit, func(x *mayfly.Lease) string {
			return encodeCursor(mayfly.PageCursor{CreatedAt: x.CreatedAt, ID: x.ID})
		})
		vs := views(ls, leaseView)
		s.setLogins(vs)
		if err := s.markBreakGlass(r.Context(), vs); err != nil {
			return 0, nil, err
		}
		return 200, vs, nil
	})
}

func (s *server) handleGetLease() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		l, err := s.Broker.FindLease(r.Context(), callerFrom(r), r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		vs := []LeaseView{s.view(l)}
		s.setLogins(vs)
		if err := s.markBreakGlass(r.Context(), vs); err != nil {
			return 0, nil, err
		}
		return 200, vs[0], nil
	})
}

// views maps a list to its API views; never nil, so an empty list is [].
func views[T, V any](xs []T, view func(T) V) []V {
	out := make([]V, 0, len(xs))
	for _, x := range xs {
		out = append(out, view(x))
	}
	return out
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	// An age: "1h" is an hour ago.
	if d, err := mayfly.ParseDuration(strings.TrimSuffix(s, " ago")); err == nil && d >= 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, mayfly.Errorf(mayfly.EINVALID, "time %q: want RFC 3339 (2006-01-02T15:04:05Z), a date (2006-01-02) or an age such as 1h or 7d", s)
}

func (s *server) handleAudit() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		q := r.URL.Query()
		var f mayfly.AuditFilter
		limit, err := pageLimit(q.Get("limit"), defaultAuditPage, maxAuditPage)
		if err != nil {
			return 0, nil, err
		}
		f.Limit = limit + 1
		after, err := intParam(q.Get("after"), 0)
		if err != nil {
			return 0, nil, err
		}
		cur, err := decodeSeqCursor(q.Get("cursor"))
		if err != nil {
			return 0, nil, err
		}
		f.AfterSeq = max(int64(after), cur)
		f.Actor, f.Action, f.Target = q.Get("actor"), q.Get("action"), q.Get("target")
		f.LeaseID, f.RequestID = q.Get("lease"), q.Get("request")
		if f.Since, err = parseTime(q.Get("since")); err != nil {
			return 0, nil, err
		}
		if f.Until, err = parseTime(q.Get("until")); err != nil {
			return 0, nil, err
		}
		if c := callerFrom(r); !c.Admin {
			// Non-admins see what they did and what happened to their own
			// requests; the store filters, so the limit counts only these.
			f.Involving = c.User
		}
		var events []*mayfly.AuditEvent
		err = s.Broker.Store().View(r.Context(), func(tx mayfly.Tx) error {
			var err error
			events, err = tx.ListAudit(f)
			return err
		})
		if err != nil {
			return 0, nil, err
		}
		if events == nil {
			events = []*mayfly.AuditEvent{}
		}
		return 200, page(w, events, limit, func(e *mayfly.AuditEvent) string { return encodeSeqCursor(e.Seq) }), nil
	})
}

func (s *server) handleAuditVerify() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		q := r.URL.Query()
		from, err := intParam(q.Get("from"), 0)
		if err != nil {
			return 0, nil, err
		}
		to, err := intParam(q.Get("to"), 0)
		if err != nil {
			return 0, nil, err
		}
		res, err := audit.Verify(r.Context(), s.Broker.Store(), int64(from), int64(to))
		if err != nil {
			return 0, nil, err
		}
		return 200, res, nil
	})
}

// ExplainBody is the body of POST /v1/policy/explain.
type ExplainBody struct {
	User       string `json:"user"`
	Target     string `json:"target"`
	Grant      string `json:"grant"`
	Duration   string `json:"duration"`
	Reason     string `json:"reason"`
	BreakGlass bool   `json:"break_glass"`
}

func (s *server) handleExplain() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body ExplainBody
		if err := decode(r, &body); err != nil {
			return 0, nil, err
		}
		d, err := parseDuration(body.Duration)
		if err != nil {
			return 0, nil, err
		}
		c := callerFrom(r)
		user, groups := c.User, c.Groups
		if body.User != "" && body.User != c.User {
			if !c.Admin {
				return 0, nil, mayfly.Errorf(mayfly.EFORBIDDEN, "only an admin can explain decisions for another user")
			}
			g, ok := s.Broker.Config().Users[body.User]
			if !ok {
				return 0, nil, mayfly.Errorf(mayfly.ENOTFOUND, "unknown user %q", body.User)
			}
			user, groups = body.User, g
		}
		dec, err := s.Broker.Explain(user, groups, broker.RequestInput{
			Target: body.Target, Grant: body.Grant, Duration: d, Reason: body.Reason, BreakGlass: body.BreakGlass,
		})
		if err != nil {
			return 0, nil, err
		}
		return 200, dec, nil
	})
}

// HeartbeatBody is the optional body of POST /v1/leases/{id}/heartbeat.
type HeartbeatBody struct {
	Timeout string `json:"timeout"`
}

func (s *server) handleHeartbeat() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body HeartbeatBody
		if err := optionalBody(r, &body); err != nil {
			return 0, nil, err
		}
		hb, err := heartbeatTimeout(body.Timeout)
		if err != nil {
			return 0, nil, err
		}
		l, err := s.Broker.Heartbeat(r.Context(), callerFrom(r), r.PathValue("id"), hb)
		if err != nil {
			return 0, nil, err
		}
		return 200, s.view(l), nil
	})
}
