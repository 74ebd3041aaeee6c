package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3gen"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/cluster"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/report"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
)

// The API description (OpenAPI 3.1) is built from this table and the Go
// types the handlers encode and decode, so a field added to a type is in
// the description at once; a test fails when a route is missing from the
// table or described but absent, and the end-to-end tests validate every
// real response against it.

// apiOp describes one endpoint.
type apiOp struct {
	Method, Path, Summary, Tag string
	// Auth is "bearer" (any user's token), "admin" (an admin's token),
	// "none", or "revoked-keys" (a user's token or the hosts' token).
	Auth  string
	Query []apiParam
	// Body is a value of the JSON request body's type (nil: none);
	// OptionalBody marks a body that may be left out.
	Body         any
	OptionalBody bool
	// Status is the success status and Resp a value of its JSON body's
	// type; RawType, when set, is a non-JSON success body's media type.
	Status  int
	Resp    any
	RawType string
	// More are other success statuses and their bodies (nil: none).
	More map[int]any
	// Media is the JSON media type of bodies (default application/json).
	Media string
	// HTML marks a success answer that is an HTML page.
	HTML bool
}

type apiParam struct{ Name, Desc, Type string }

// WhoamiView is the answer of GET /v1/whoami.
type WhoamiView struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	Admin  bool     `json:"admin"`
	// Method is how the token was obtained: "token" (configuration or
	// `mayfly tokens create`), "oidc", "oidc-device", "oidc-browser".
	Method    string     `json:"method"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

var pageParams = []apiParam{{"limit", "page size (default 100, at most 1000)", "integer"}, {"cursor", "where the page starts: the X-Next-Cursor header of the previous page", "string"}}

func withPage(ps ...apiParam) []apiParam { return append(ps, pageParams...) }

// scimResource is a SCIM 2.0 resource (RFC 7643), described loosely: the
// identity provider's SCIM client knows the format.
type scimResource map[string]any

// apiOps are every endpoint the server serves.
var apiOps = []apiOp{
	{Method: "GET", Path: "/healthz", Summary: "the process runs", Tag: "operations", Auth: "none", Status: 200, RawType: "text/plain"},
	{Method: "GET", Path: "/readyz", Summary: "ready: the store answers and the scheduler runs (503 otherwise); status degraded while leases are overdue", Tag: "operations", Auth: "none", Status: 200, Resp: map[string]any{}},
	{Method: "GET", Path: "/metrics", Summary: "Prometheus metrics (the metrics token when metrics.token_sha256 is set)", Tag: "operations", Auth: "none", Status: 200, RawType: "text/plain"},
	{Method: "GET", Path: "/v1/openapi.json", Summary: "this description", Tag: "operations", Auth: "none", Status: 200, Resp: map[string]any{}},
	{Method: "GET", Path: "/v1/whoami", Summary: "who the token belongs to", Tag: "identity", Auth: "bearer", Status: 200, Resp: WhoamiView{}},

	{Method: "POST", Path: "/v1/requests", Summary: "ask for access; with activate, the credential in the same call when policy approves at once", Tag: "requests", Auth: "bearer", Body: CreateRequestBody{}, Status: 201, Resp: CreateRequestResponse{}},
	{Method: "GET", Path: "/v1/requests", Summary: "requests you may see (yours; approvers: those they may decide; admins: all)", Tag: "requests", Auth: "bearer",
		Query: withPage(apiParam{"state", "only this state (repeatable)", "string"}, apiParam{"user", "only this requester", "string"}, apiParam{"pending_for_me", "only requests you may approve now (true)", "string"}), Status: 200, Resp: []RequestView{}},
	{Method: "GET", Path: "/v1/requests/{id}", Summary: "one request", Tag: "requests", Auth: "bearer", Status: 200, Resp: RequestView{}},
	{Method: "POST", Path: "/v1/requests/{id}/approve", Summary: "approve the current step", Tag: "requests", Auth: "bearer", Body: DecisionBody{}, OptionalBody: true, Status: 200, Resp: RequestView{}},
	{Method: "POST", Path: "/v1/requests/{id}/deny", Summary: "deny", Tag: "requests", Auth: "bearer", Body: DecisionBody{}, OptionalBody: true, Status: 200, Resp: RequestView{}},
	{Method: "POST", Path: "/v1/requests/{id}/cancel", Summary: "cancel your pending request", Tag: "requests", Auth: "bearer", Body: DecisionBody{}, OptionalBody: true, Status: 200, Resp: RequestView{}},
	{Method: "POST", Path: "/v1/requests/{id}/activate", Summary: "create the account and return the credential, once", Tag: "requests", Auth: "bearer", Body: ActivateBody{}, OptionalBody: true, Status: 201, Resp: CredsView{}},
	{Method: "POST", Path: "/v1/requests/{id}/done", Summary: "end the request's lease now", Tag: "requests", Auth: "bearer", Body: DecisionBody{}, OptionalBody: true, Status: 200, Resp: LeaseView{}},

	{Method: "GET", Path: "/v1/leases", Summary: "leases (yours; admins: all)", Tag: "leases", Auth: "bearer",
		Query: withPage(apiParam{"active", "only leases whose account may exist (true)", "string"}, apiParam{"target", "only this target", "string"}, apiParam{"user", "only this requester (admins)", "string"}, apiParam{"state", "only this state (repeatable)", "string"}), Status: 200, Resp: []LeaseView{}},
	{Method: "GET", Path: "/v1/leases/{id}", Summary: "one lease", Tag: "leases", Auth: "bearer", Status: 200, Resp: LeaseView{}},
	{Method: "POST", Path: "/v1/leases/{id}/done", Summary: "end your lease now", Tag: "leases", Auth: "bearer", Body: DecisionBody{}, OptionalBody: true, Status: 200, Resp: LeaseView{}},
	{Method: "POST", Path: "/v1/leases/{id}/revoke", Summary: "revoke a lease (admins: anyone's)", Tag: "leases", Auth: "bearer", Body: DecisionBody{}, OptionalBody: true, Status: 200, Resp: LeaseView{}},
	{Method: "POST", Path: "/v1/leases/{id}/extend", Summary: "lengthen a live lease: applied (200) or an extension request waiting for approval (202)", Tag: "leases", Auth: "bearer", Body: ExtendBody{}, Status: 200, Resp: ExtendResponse{}, More: map[int]any{202: ExtendResponse{}}},
	{Method: "POST", Path: "/v1/leases/{id}/heartbeat", Summary: "keep a session-bound lease alive", Tag: "leases", Auth: "bearer", Body: HeartbeatBody{}, OptionalBody: true, Status: 200, Resp: LeaseView{}},
	{Method: "POST", Path: "/v1/leases/{id}/review", Summary: "mark a break-glass lease reviewed", Tag: "leases", Auth: "admin", Body: ReviewBody{}, Status: 200, Resp: map[string]string{}},

	{Method: "GET", Path: "/v1/audit", Summary: "the audit trail (yours; admins: all)", Tag: "audit", Auth: "bearer",
		Query: withPage(apiParam{"actor", "", "string"}, apiParam{"action", "", "string"}, apiParam{"target", "", "string"}, apiParam{"lease", "", "string"}, apiParam{"request", "", "string"},
			apiParam{"since", "RFC 3339, a date, or an age (1h, 7d)", "string"}, apiParam{"until", "", "string"}, apiParam{"after", "only events after this sequence number", "integer"}), Status: 200, Resp: []mayfly.AuditEvent{}},
	{Method: "GET", Path: "/v1/audit/verify", Summary: "check the hash chain", Tag: "audit", Auth: "bearer", Query: []apiParam{{"from", "first sequence number", "integer"}, {"to", "last sequence number", "integer"}}, Status: 200, Resp: audit.Result{}},
	{Method: "GET", Path: "/v1/audit/stream", Summary: "new audit events as they commit (server-sent events)", Tag: "audit", Auth: "admin", Query: []apiParam{{"after", "resume after this sequence number", "integer"}}, Status: 200, RawType: "text/event-stream"},
	{Method: "POST", Path: "/v1/audit/hash", Summary: "the keyed hash Mayfly recorded for a secret, and the leases it was issued to", Tag: "audit", Auth: "admin", Body: AuditHashBody{}, Status: 200, Resp: AuditHashResult{}},
	{Method: "POST", Path: "/v1/audit/prune", Summary: "archive then remove old events", Tag: "audit", Auth: "admin", Body: PruneBody{}, Status: 200, Resp: broker.PruneResult{}},

	{Method: "POST", Path: "/v1/policy/explain", Summary: "what policy would decide for a request", Tag: "policy", Auth: "bearer", Body: ExplainBody{}, Status: 200, Resp: policy.Decision{}},
	{Method: "POST", Path: "/v1/policy/reload", Summary: "reload the configuration's policies, users and grants", Tag: "policy", Auth: "admin", Status: 200, Resp: ReloadResult{}},
	{Method: "GET", Path: "/v1/catalog", Summary: "what you may ask for, with each policy's terms", Tag: "policy", Auth: "bearer", Status: 200, Resp: []policy.Offer{}},

	{Method: "GET", Path: "/v1/ssh/ca", Summary: "the SSH CA's public keys (TrustedUserCAKeys)", Tag: "ssh", Auth: "bearer", Status: 200, Resp: CAView{}},
	{Method: "POST", Path: "/v1/ssh/ca/rotate", Summary: "rotate the SSH CA key: prepare (publish the next key), activate, or now", Tag: "ssh", Auth: "admin", Body: RotateBody{}, OptionalBody: true, Status: 200, Resp: CAView{}},
	{Method: "GET", Path: "/v1/ssh/revoked-keys", Summary: "a target's key revocation list (RevokedKeys), as bytes", Tag: "ssh", Auth: "revoked-keys", Query: []apiParam{{"target", "the SSH target (required)", "string"}}, Status: 200, RawType: "application/octet-stream"},

	{Method: "GET", Path: "/v1/reports/access", Summary: "the access review: who had what, when and why", Tag: "reports", Auth: "admin",
		Query: []apiParam{{"from", "", "string"}, {"to", "", "string"}, {"target", "", "string"}, {"user", "", "string"}}, Status: 200, Resp: report.Report{}},
	{Method: "GET", Path: "/v1/reports/standing", Summary: "accounts on the targets that no live lease explains", Tag: "reports", Auth: "admin", Status: 200, Resp: []broker.StandingTarget{}},

	{Method: "GET", Path: "/v1/users", Summary: "users, their groups and status (admins: all)", Tag: "users", Auth: "bearer", Status: 200, Resp: []broker.UserView{}},
	{Method: "POST", Path: "/v1/users/{name}/suspend", Summary: "suspend: revoke the user's leases, cancel their requests, refuse their tokens", Tag: "users", Auth: "admin", Body: DecisionBody{}, OptionalBody: true, Status: 200, Resp: UserStatusResult{}},
	{Method: "POST", Path: "/v1/users/{name}/resume", Summary: "resume a suspended user", Tag: "users", Auth: "admin", Body: DecisionBody{}, OptionalBody: true, Status: 200, Resp: UserStatusResult{}},
	{Method: "POST", Path: "/v1/users/{name}/remove", Summary: "offboard: as suspend, for good", Tag: "users", Auth: "admin", Body: DecisionBody{}, OptionalBody: true, Status: 200, Resp: UserStatusResult{}},

	{Method: "POST", Path: "/v1/tokens", Summary: "create an API token (shown once)", Tag: "identity", Auth: "bearer", Body: TokenBody{}, Status: 201, Resp: CreatedToken{}},
	{Method: "GET", Path: "/v1/tokens", Summary: "tokens and sessions (yours; admins: anyone's)", Tag: "identity", Auth: "bearer", Query: []apiParam{{"user", "only this user's (admins)", "string"}}, Status: 200, Resp: []mayfly.Token{}},
	{Method: "DELETE", Path: "/v1/tokens/{id}", Summary: "revoke a token or session", Tag: "identity", Auth: "bearer", Status: 200, Resp: map[string]string{}},
	{Method: "POST", Path: "/v1/tokens/{id}/revoke", Summary: "revoke a token or session", Tag: "identity", Auth: "bearer", Status: 200, Resp: map[string]string{}},

	{Method: "POST", Path: "/v1/reconcile", Summary: "compare the targets' accounts with the leases and remove orphans", Tag: "targets", Auth: "admin", Body: ReconcileBody{}, OptionalBody: true, Status: 200, Resp: []broker.ReconcileResult{}},
	{Method: "GET", Path: "/v1/targets/{name}/inventory", Summary: "a target's accounts as Mayfly sees them", Tag: "targets", Auth: "admin", Status: 200, Resp: []broker.InventoryAccount{}},
	{Method: "PUT", Path: "/v1/targets/{name}/credential", Summary: "store a target's admin credential sealed (never returned)", Tag: "targets", Auth: "admin", Body: CredentialBody{}, Status: 200, Resp: CredentialResult{}},
	{Method: "POST", Path: "/v1/targets/{name}/credential/rotate", Summary: "rotate Mayfly's own admin password on the target", Tag: "targets", Auth: "admin", Status: 200, Resp: CredentialResult{}},
	{Method: "GET", Path: "/v1/cluster", Summary: "the replicas sharing the store and the work each leads", Tag: "operations", Auth: "admin", Status: 200, Resp: cluster.Status{}},

	{Method: "GET", Path: "/v1/sessions", Summary: "gateway sessions (yours; admins: all)", Tag: "sessions", Auth: "bearer",
		Query: withPage(apiParam{"lease", "", "string"}, apiParam{"user", "(admins)", "string"}, apiParam{"kind", "postgres or ssh", "string"}, apiParam{"open", "only open sessions (true)", "string"}), Status: 200, Resp: []mayfly.Session{}},
	{Method: "GET", Path: "/v1/sessions/{id}", Summary: "a session with its statements or SSH channels", Tag: "sessions", Auth: "bearer",
		Query: []apiParam{{"events", "include every event of the chain (true)", "string"}, {"after", "events after this sequence number", "integer"}, {"limit", "events per page", "integer"}}, Status: 200, Resp: SessionView{}},
	{Method: "GET", Path: "/v1/sessions/{id}/verify", Summary: "check a session's chain and its anchor in the audit trail", Tag: "sessions", Auth: "bearer", Status: 200, Resp: sessionlog.Result{}},
	{Method: "GET", Path: "/v1/sessions/{id}/cast", Summary: "an SSH terminal recording (asciicast v2)", Tag: "sessions", Auth: "bearer", Query: []apiParam{{"channel", "the session channel (default 0)", "integer"}}, Status: 200, RawType: "application/x-asciicast"},
}

// authOps are the single sign-on endpoints (served when auth.oidc is
// configured).
var authOps = []apiOp{
	{Method: "GET", Path: "/v1/auth/oidc", Summary: "the identity provider's settings for CLI logins", Tag: "identity", Auth: "none", Status: 200, Resp: map[string]any{}},
	{Method: "POST", Path: "/v1/auth/oidc/start", Summary: "start a CLI login (state and nonce)", Tag: "identity", Auth: "none", Body: map[string]any{}, OptionalBody: true, Status: 200, Resp: map[string]any{}},
	{Method: "POST", Path: "/v1/auth/oidc/session", Summary: "exchange the provider's code or ID token for a Mayfly session", Tag: "identity", Auth: "none", Body: map[string]any{}, Status: 200, Resp: map[string]any{}},
	{Method: "POST", Path: "/v1/auth/oidc/remote", Summary: "start a login finished in a browser elsewhere", Tag: "identity", Auth: "none", Body: map[string]any{}, OptionalBody: true, Status: 200, Resp: map[string]any{}},
	{Method: "POST", Path: "/v1/auth/oidc/remote/session", Summary: "collect the session of a remote login", Tag: "identity", Auth: "none", Body: map[string]any{}, Status: 200, Resp: map[string]any{}},
	{Method: "GET", Path: "/v1/auth/login", Summary: "browser login: redirects to the identity provider", Tag: "identity", Auth: "none", Query: []apiParam{{"return", "where to go after", "string"}}, Status: 302, More: map[int]any{303: nil}},
	{Method: "GET", Path: "/v1/auth/callback", Summary: "the identity provider's redirect back: on to the app (303), or a page for a CLI login", Tag: "identity", Auth: "none", Status: 200, HTML: true, More: map[int]any{302: nil, 303: nil}},
	{Method: "POST", Path: "/v1/auth/logout", Summary: "end the browser session", Tag: "identity", Auth: "bearer", Status: 204},
}

// scimOps are the SCIM 2.0 endpoints (served when scim.token_sha256 is
// set), for the identity provider's provisioning.
var scimOps = []apiOp{
	{Method: "GET", Path: "/scim/v2/ServiceProviderConfig", Summary: "SCIM service provider configuration", Tag: "scim", Auth: "scim", Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "GET", Path: "/scim/v2/ResourceTypes", Summary: "SCIM resource types", Tag: "scim", Auth: "scim", Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "GET", Path: "/scim/v2/ResourceTypes/{id}", Summary: "a SCIM resource type", Tag: "scim", Auth: "scim", Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "GET", Path: "/scim/v2/Schemas", Summary: "SCIM schemas", Tag: "scim", Auth: "scim", Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "GET", Path: "/scim/v2/Schemas/{id}", Summary: "a SCIM schema", Tag: "scim", Auth: "scim", Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "GET", Path: "/scim/v2/Users", Summary: "list users (filter userName eq)", Tag: "scim", Auth: "scim", Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "POST", Path: "/scim/v2/Users", Summary: "provision a user", Tag: "scim", Auth: "scim", Body: scimResource{}, Status: 201, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "GET", Path: "/scim/v2/Users/{id}", Summary: "a user", Tag: "scim", Auth: "scim", Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "PUT", Path: "/scim/v2/Users/{id}", Summary: "replace a user", Tag: "scim", Auth: "scim", Body: scimResource{}, Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "PATCH", Path: "/scim/v2/Users/{id}", Summary: "change a user (active=false suspends)", Tag: "scim", Auth: "scim", Body: scimResource{}, Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "DELETE", Path: "/scim/v2/Users/{id}", Summary: "deprovision a user", Tag: "scim", Auth: "scim", Status: 204, Media: "application/scim+json"},
	{Method: "GET", Path: "/scim/v2/Groups", Summary: "list groups", Tag: "scim", Auth: "scim", Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "POST", Path: "/scim/v2/Groups", Summary: "create a group", Tag: "scim", Auth: "scim", Body: scimResource{}, Status: 201, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "GET", Path: "/scim/v2/Groups/{id}", Summary: "a group", Tag: "scim", Auth: "scim", Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "PUT", Path: "/scim/v2/Groups/{id}", Summary: "replace a group", Tag: "scim", Auth: "scim", Body: scimResource{}, Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "PATCH", Path: "/scim/v2/Groups/{id}", Summary: "change a group's members", Tag: "scim", Auth: "scim", Body: scimResource{}, Status: 200, Resp: scimResource{}, Media: "application/scim+json"},
	{Method: "DELETE", Path: "/scim/v2/Groups/{id}", Summary: "delete a group", Tag: "scim", Auth: "scim", Status: 204, Media: "application/scim+json"},
}

// AllOps returns every described operation as "METHOD /path".
func AllOps() []string {
	var out []string
	for _, list := range [][]apiOp{apiOps, authOps, scimOps} {
		for _, o := range list {
			out = append(out, o.Method+" "+o.Path)
		}
	}
	sort.Strings(out)
	return out
}

// OpenAPI returns the API description as an OpenAPI 3.1 document.
func OpenAPI(version string) (*openapi3.T, error) {
	if version == "" {
		version = "dev"
	}
	doc := &openapi3.T{
		OpenAPI: "3.1.0",
		Info: &openapi3.Info{Title: "Mayfly API", Version: version,
			Description: "Just-in-time access: requests, approvals, leases, audit, sessions. Every answer is JSON unless said otherwise; " +
				"errors are {\"error\": {\"code\", \"message\"}} with codes invalid (400), unauthorized (401), forbidden (403), not_found (404), conflict (409), unavailable (503), internal (500)."},
		Paths: openapi3.NewPaths(),
		Components: &openapi3.Components{
			Schemas: openapi3.Schemas{},
			SecuritySchemes: openapi3.SecuritySchemes{
				"bearer":        &openapi3.SecuritySchemeRef{Value: openapi3.NewJWTSecurityScheme().WithBearerFormat("opaque").WithDescription("a Mayfly token (mfy_…) or session; admin operations need an admin's")},
				"revokedKeys":   &openapi3.SecuritySchemeRef{Value: openapi3.NewJWTSecurityScheme().WithBearerFormat("opaque").WithDescription("the hosts' token of ssh_ca.revoked_keys_token_sha256")},
				"scim":          &openapi3.SecuritySchemeRef{Value: openapi3.NewJWTSecurityScheme().WithBearerFormat("opaque").WithDescription("the identity provider's token of scim.token_sha256")},
				"sessionCookie": &openapi3.SecuritySchemeRef{Value: &openapi3.SecurityScheme{Type: "apiKey", In: "cookie", Name: SessionCookie, Description: "the web app's session; state-changing calls also need the X-Mayfly-CSRF header"}},
			},
		},
	}
	// Schemas are written in full where they are used: simple to read
	// and to validate against.
	schemaOf := func(v any) (*openapi3.SchemaRef, error) {
		ref, err := openapi3gen.NewSchemaRefForValue(v, nil, openapi3gen.SchemaCustomizer(nullable31))
		if err != nil {
			return nil, fmt.Errorf("schema of %T: %w", v, err)
		}
		return ref, nil
	}
	errRef, err := schemaOf(errorBody{})
	if err != nil {
		return nil, err
	}
	for _, list := range [][]apiOp{apiOps, authOps, scimOps} {
		for _, o := range list {
			media := o.Media
			if media == "" {
				media = "application/json"
			}
			op := &openapi3.Operation{Summary: o.Summary, Tags: []string{o.Tag}, OperationID: operationID(o), Responses: openapi3.NewResponses()}
			switch o.Auth {
			case "bearer", "admin":
				op.Security = &openapi3.SecurityRequirements{{"bearer": {}}, {"sessionCookie": {}}}
				if o.Auth == "admin" {
					op.Description = "Admins only (403 for others)."
				}
			case "revoked-keys":
				op.Security = &openapi3.SecurityRequirements{{"bearer": {}}, {"revokedKeys": {}}}
			case "scim":
				op.Security = &openapi3.SecurityRequirements{{"scim": {}}}
			case "none":
				op.Security = &openapi3.SecurityRequirements{}
			}
			for _, seg := range strings.Split(o.Path, "/") {
				if strings.HasPrefix(seg, "{") {
					name := strings.Trim(seg, "{}")
					op.AddParameter(openapi3.NewPathParameter(name).WithSchema(openapi3.NewStringSchema()))
				}
			}
			for _, q := range o.Query {
				s := openapi3.NewStringSchema()
				if q.Type == "integer" {
					s = openapi3.NewIntegerSchema()
				}
				op.AddParameter(openapi3.NewQueryParameter(q.Name).WithDescription(q.Desc).WithSchema(s))
			}
			if o.Body != nil {
				ref, err := schemaOf(o.Body)
				if err != nil {
					return nil, err
				}
				op.RequestBody = &openapi3.RequestBodyRef{Value: openapi3.NewRequestBody().WithRequired(!o.OptionalBody).WithContent(openapi3.NewContentWithSchemaRef(ref, []string{media}))}
			}
			addResp := func(status int, body any) error {
				r := openapi3.NewResponse().WithDescription(http.StatusText(status))
				switch {
				case o.RawType != "" && status == o.Status:
					r.WithContent(openapi3.NewContentWithSchema(openapi3.NewStringSchema(), []string{o.RawType}))
				case o.HTML && status == o.Status:
					// A page for a person, or JSON for a program that asked for it.
					c := openapi3.NewContentWithSchema(openapi3.NewStringSchema(), []string{"text/html"})
					c["application/json"] = openapi3.NewMediaType().WithSchema(openapi3.NewObjectSchema())
					r.WithContent(c)
				case body != nil:
					ref, err := schemaOf(body)
					if err != nil {
						return err
					}
					r.WithContent(openapi3.NewContentWithSchemaRef(ref, []string{media}))
				}
				op.AddResponse(status, r)
				return nil
			}
			if err := addResp(o.Status, o.Resp); err != nil {
				return nil, err
			}
			for st, b := range o.More {
				if err := addResp(st, b); err != nil {
					return nil, err
				}
			}
			errBody := errRef
			if o.Media != "" {
				errBody = openapi3.NewSchemaRef("", openapi3.NewObjectSchema()) // SCIM's own error format
			}
			op.Responses.Set("default", &openapi3.ResponseRef{Value: openapi3.NewResponse().WithDescription("an error").WithContent(openapi3.NewContentWithSchemaRef(errBody, []string{media}))})
			doc.AddOperation(o.Path, o.Method, op)
		}
	}
	return doc, nil
}

// nullable31 writes what may be null the OpenAPI 3.1 way: a type list with
// "null" (pointers, slices and maps, which encode as null when nil).
func nullable31(name string, t reflect.Type, tag reflect.StructTag, s *openapi3.Schema) error {
	if s.Nullable {
		s.Nullable = false
		if s.Type != nil && !s.Type.Includes(openapi3.TypeNull) {
			types := append(openapi3.Types{}, *s.Type...)
			types = append(types, openapi3.TypeNull)
			s.Type = &types
		}
	}
	if t == reflect.TypeFor[time.Time]() && s.Type != nil && !s.Type.Includes(openapi3.TypeNull) {
		// *time.Time fields encode as null (the generator does not say
		// which fields are pointers here): every time may be null.
		s.Type = &openapi3.Types{openapi3.TypeString, openapi3.TypeNull}
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Map, reflect.Pointer:
		if s.Type != nil && !s.Type.Includes(openapi3.TypeNull) && len(*s.Type) > 0 {
			types := append(openapi3.Types{}, *s.Type...)
			types = append(types, openapi3.TypeNull)
			s.Type = &types
		}
	}
	return nil
}

func operationID(o apiOp) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(o.Method))
	for _, seg := range strings.Split(o.Path, "/") {
		seg = strings.Trim(seg, "{}")
		seg = strings.NewReplacer("-", "_", ".", "_").Replace(seg)
		if seg == "" || seg == "v1" {
			continue
		}
		b.WriteString("_" + seg)
	}
	return b.String()
}

func (s *server) handleOpenAPI() http.Handler {
	var once sync.Once
	var body []byte
	var err error
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { body, err = OpenAPIJSON(s.Version) })
		if err != nil {
			writeError(w, mayfly.Errorf(mayfly.EINTERNAL, "build the API description: %v", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
}

// ResponseCheck, when set (by tests), sees every answer of every API
// server in the process: the request, the status, the headers and the
// body. The end-to-end tests check each against the description.
var ResponseCheck func(r *http.Request, status int, header http.Header, body []byte)

// checkResponses records each answer for ResponseCheck.
func checkResponses(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		check := ResponseCheck
		if check == nil || strings.HasPrefix(r.URL.Path, "/app/") {
			h.ServeHTTP(w, r)
			return
		}
		rec := &teeWriter{ResponseWriter: w, status: 200}
		h.ServeHTTP(rec, r)
		if !rec.streamed {
			check(r, rec.status, w.Header(), rec.body.Bytes())
		}
	})
}

// teeWriter passes an answer on and keeps a copy (up to 4 MiB); a
// streamed answer (flushed) is not kept.
type teeWriter struct {
	http.ResponseWriter
	status   int
	body     bytes.Buffer
	streamed bool
}

func (t *teeWriter) WriteHeader(code int) { t.status = code; t.ResponseWriter.WriteHeader(code) }
func (t *teeWriter) Write(p []byte) (int, error) {
	if t.body.Len() < 4<<20 {
		t.body.Write(p)
	}
	return t.ResponseWriter.Write(p)
}
func (t *teeWriter) Flush() {
	t.streamed = true
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
func (t *teeWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// OpenAPIJSON is the description as indented JSON.
func OpenAPIJSON(version string) ([]byte, error) {
	doc, err := OpenAPI(version)
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
