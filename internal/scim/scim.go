// Package scim is Mayfly's SCIM 2.0 service provider (RFC 7643, RFC 7644):
// identity providers such as Okta and Microsoft Entra ID create, update,
// deactivate and delete Mayfly users and groups through it at /scim/v2.
//
// The handler speaks the protocol (authentication, filters, pagination,
// PATCH in the dialects real identity providers send, SCIM error bodies);
// users and groups themselves live behind the Directory interface, whose
// implementation turns a deactivated or deleted user into a suspension in
// the broker.
package scim

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Schema URNs.
const (
	schemaUser   = "urn:ietf:params:scim:schemas:core:2.0:User"
	schemaGroup  = "urn:ietf:params:scim:schemas:core:2.0:Group"
	schemaList   = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	schemaPatch  = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	schemaError  = "urn:ietf:params:scim:api:messages:2.0:Error"
	schemaSPC    = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
	schemaRT     = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
	schemaSchema = "urn:ietf:params:scim:schemas:core:2.0:Schema"
)

// Protocol limits, also advertised in /ServiceProviderConfig.
const (
	maxBodyBytes  = 1 << 20 // request bodies
	maxResults    = 200     // resources per page
	maxOperations = 100     // operations per PATCH
)

// User is a person provisioned by an identity provider.
type User struct {
	ID         string // assigned by Mayfly, immutable
	UserName   string // the Mayfly user name (see UserName for the mapping)
	ExternalID string // the identity provider's own identifier
	// DisplayName is the person's name as shown to people.
	DisplayName string
	// Active false means deprovisioned: the user is suspended.
	Active bool
	// Emails are the user's addresses, the primary one first.
	Emails []string
	// Groups are the Mayfly names (see GroupName) of the groups the user
	// belongs to. The Directory maintains them from group membership; the
	// handler never sets them.
	Groups       []string
	Created      time.Time
	LastModified time.Time
	// Version counts changes; the handler increments it on every
	// replacement and publishes it as the ETag W/"<Version>".
	Version int
}

// Group is a set of users, named by an identity provider.
type Group struct {
	ID           string // assigned by Mayfly, immutable
	DisplayName  string // as the identity provider sent it; see GroupName
	ExternalID   string
	Members      []string // user IDs
	Created      time.Time
	LastModified time.Time
	Version      int
}

// Sentinel errors a Directory returns; other errors are internal.
// A *mayfly.Error is shown to the client with its message.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict means the change would break uniqueness: another user
	// has the userName, or another group maps to the same group name.
	ErrConflict = errors.New("conflict")
)

// Directory is where users and groups live.
//
// Replacing a user with Active false, or deleting a user, deprovisions
// them: the implementation suspends the user in the broker, which revokes
// their leases, cancels their pending requests and rejects their tokens.
// Group changes update the Groups of the member users.
type Directory interface {
	// CreateUser stores a new user; ErrConflict if the userName is taken.
	CreateUser(ctx context.Context, u *User) error
	// GetUser returns the user with the ID, or ErrNotFound.
	GetUser(ctx context.Context, id string) (*User, error)
	// FindUserByName returns the user with the userName, or ErrNotFound.
	FindUserByName(ctx context.Context, userName string) (*User, error)
	ListUsers(ctx context.Context) ([]*User, error)
	// ReplaceUser stores u over the user with u.ID: ErrNotFound if there
	// is none, ErrConflict if u.UserName belongs to another user.
	ReplaceUser(ctx context.Context, u *User) error
	// DeleteUser removes the user and their group memberships, or
	// returns ErrNotFound.
	DeleteUser(ctx context.Context, id string) error

	// CreateGroup stores a new group.
	CreateGroup(ctx context.Context, g *Group) error
	// GetGroup returns the group with the ID, or ErrNotFound.
	GetGroup(ctx context.Context, id string) (*Group, error)
	ListGroups(ctx context.Context) ([]*Group, error)
	// ReplaceGroup stores g over the group with g.ID, or returns
	// ErrNotFound.
	ReplaceGroup(ctx context.Context, g *Group) error
	// DeleteGroup removes the group, or returns ErrNotFound.
	DeleteGroup(ctx context.Context, id string) error
}

// ChangeLocker is implemented by a Directory that other processes change
// too (several replicas sharing a store): LockChanges returns once no
// other process is changing it, and unlock lets them go on. The handler
// holds it through each change's read-modify-write, as it holds its own
// mutex against changes in this process.
type ChangeLocker interface {
	LockChanges(ctx context.Context) (unlock func(), err error)
}

// handler serves SCIM requests.
type handler struct {
	dir    Directory
	token  []byte // lowercase hex SHA-256 of the bearer token
	logger *slog.Logger
	now    func() time.Time
	newID  func() string

	// mu serializes changes, so a read-modify-write (PATCH, membership
	// checks, uniqueness checks) sees no interleaved change (see lock).
	mu sync.Mutex
}

// lock serializes a change with the others: those of this process, and
// where the directory is shared (ChangeLocker), those of other processes.
func (h *handler) lock(ctx context.Context) (unlock func(), err error) {
	h.mu.Lock()
	cl, ok := h.dir.(ChangeLocker)
	if !ok {
		return h.mu.Unlock, nil
	}
	release, err := cl.LockChanges(ctx)
	if err != nil {
		h.mu.Unlock()
		return nil, err
	}
	return func() {
		release()
		h.mu.Unlock()
	}, nil
}

// NewHandler returns the SCIM service provider. Mount it at /scim/v2/; it
// serves paths with or without that prefix. Clients authenticate with
// "Authorization: Bearer <token>", where tokenSHA256 is the hex SHA-256 of
// the token; an empty tokenSHA256 refuses every request.
func NewHandler(dir Directory, tokenSHA256 string, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &handler{
		dir:    dir,
		token:  []byte(strings.ToLower(strings.TrimSpace(tokenSHA256))),
		logger: logger,
		now:    func() time.Time { return time.Now().UTC() },
		newID:  newID,
	}
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (h *handler) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || len(h.token) != 64 {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	got := []byte(hex.EncodeToString(sum[:]))
	return subtle.ConstantTimeCompare(got, h.token) == 1
}

// Routes lists the endpoints ServeHTTP answers, below /scim/v2 (it routes
// by path segment; keep this list in step with its switch).
var Routes = []string{
	"GET /ServiceProviderConfig", "GET /ResourceTypes", "GET /ResourceTypes/{id}", "GET /Schemas", "GET /Schemas/{id}",
	"GET /Users", "POST /Users", "GET /Users/{id}", "PUT /Users/{id}", "PATCH /Users/{id}", "DELETE /Users/{id}",
	"GET /Groups", "POST /Groups", "GET /Groups/{id}", "PUT /Groups/{id}", "PATCH /Groups/{id}", "DELETE /Groups/{id}",
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mayfly-scim"`)
		writeError(w, &scimError{status: http.StatusUnauthorized, detail: "a valid bearer token is required"})
		return
	}
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/scim/v2"); ok && (rest == "" || rest[0] == '/') {
		p = rest
	}
	segs := strings.Split(strings.Trim(p, "/"), "/")
	var err error
	switch {
	case len(segs) == 1 && strings.EqualFold(segs[0], "ServiceProviderConfig"):
		err = h.onlyGet(w, r, h.serviceProviderConfig)
	case len(segs) == 1 && strings.EqualFold(segs[0], "ResourceTypes"):
		err = h.onlyGet(w, r, h.resourceTypes)
	case len(segs) == 2 && strings.EqualFold(segs[0], "ResourceTypes"):
		err = h.onlyGet(w, r, func(w http.ResponseWriter, r *http.Request) error { return h.resourceType(w, r, segs[1]) })
	case len(segs) == 1 && strings.EqualFold(segs[0], "Schemas"):
		err = h.onlyGet(w, r, h.schemas)
	case len(segs) == 2 && strings.EqualFold(segs[0], "Schemas"):
		err = h.onlyGet(w, r, func(w http.ResponseWriter, r *http.Request) error { return h.schema(w, r, segs[1]) })
	case len(segs) == 1 && strings.EqualFold(segs[0], "Users"):
		switch r.Method {
		case http.MethodGet:
			err = h.listUsers(w, r)
		case http.MethodPost:
			err = h.createUser(w, r)
		default:
			err = notAllowed(w, "GET, POST")
		}
	case len(segs) == 2 && strings.EqualFold(segs[0], "Users"):
		id := segs[1]
		switch r.Method {
		case http.MethodGet:
			err = h.getUser(w, r, id)
		case http.MethodPut:
			err = h.replaceUser(w, r, id)
		case http.MethodPatch:
			err = h.patchUser(w, r, id)
		case http.MethodDelete:
			err = h.deleteUser(w, r, id)
		default:
			err = notAllowed(w, "GET, PUT, PATCH, DELETE")
		}
	case len(segs) == 1 && strings.EqualFold(segs[0], "Groups"):
		switch r.Method {
		case http.MethodGet:
			err = h.listGroups(w, r)
		case http.MethodPost:
			err = h.createGroup(w, r)
		default:
			err = notAllowed(w, "GET, POST")
		}
	case len(segs) == 2 && strings.EqualFold(segs[0], "Groups"):
		id := segs[1]
		switch r.Method {
		case http.MethodGet:
			err = h.getGroup(w, r, id)
		case http.MethodPut:
			err = h.replaceGroup(w, r, id)
		case http.MethodPatch:
			err = h.patchGroup(w, r, id)
		case http.MethodDelete:
			err = h.deleteGroup(w, r, id)
		default:
			err = notAllowed(w, "GET, PUT, PATCH, DELETE")
		}
	case len(segs) == 1 && (strings.EqualFold(segs[0], "Bulk") || strings.EqualFold(segs[0], "Me")):
		err = &scimError{status: http.StatusNotImplemented, detail: "/" + segs[0] + " is not supported"}
	default:
		err = &scimError{status: http.StatusNotFound, detail: "no such endpoint"}
	}
	if err != nil {
		h.fail(w, r, err)
	}
}

func (h *handler) onlyGet(w http.ResponseWriter, r *http.Request, fn func(http.ResponseWriter, *http.Request) error) error {
	if r.Method != http.MethodGet {
		return notAllowed(w, "GET")
	}
	return fn(w, r)
}

func notAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return &scimError{status: http.StatusMethodNotAllowed, detail: "method not allowed; use " + allow}
}

// scimError is an error response (RFC 7644 section 3.12).
type scimError struct {
	status   int
	scimType string
	detail   string
}

func (e *scimError) Error() string { return e.detail }

func badRequest(scimType, format string, args ...any) *scimError {
	return &scimError{status: http.StatusBadRequest, scimType: scimType, detail: fmt.Sprintf(format, args...)}
}

// fail writes err as a SCIM error. Errors from the Directory map by
// sentinel or mayfly error code; anything else is logged and shown as an
// internal error.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var se *scimError
	var me *mayfly.Error
	switch {
	case errors.As(err, &se):
	case errors.Is(err, ErrNotFound):
		se = &scimError{status: http.StatusNotFound, detail: "resource not found"}
	case errors.Is(err, ErrConflict):
		se = &scimError{status: http.StatusConflict, scimType: "uniqueness", detail: "a resource with the same unique name already exists"}
	case errors.As(err, &me) && me.Code != mayfly.EINTERNAL:
		se = &scimError{status: http.StatusBadRequest, detail: me.Message}
		switch me.Code {
		case mayfly.EINVALID:
			se.scimType = "invalidValue"
		case mayfly.ENOTFOUND:
			se.status = http.StatusNotFound
		case mayfly.ECONFLICT:
			se.status = http.StatusConflict
		case mayfly.EFORBIDDEN:
			se.status = http.StatusForbidden
		case mayfly.EUNAUTHORIZED:
			se.status = http.StatusUnauthorized
		case mayfly.EUNAVAILABLE:
			se.status = http.StatusServiceUnavailable
		}
	default:
		h.logger.ErrorContext(r.Context(), "scim request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		se = &scimError{status: http.StatusInternalServerError, detail: "internal error"}
	}
	writeError(w, se)
}

func writeError(w http.ResponseWriter, e *scimError) {
	body := map[string]any{
		"schemas": []string{schemaError},
		"status":  strconv.Itoa(e.status),
		"detail":  e.detail,
	}
	if e.scimType != "" {
		body["scimType"] = e.scimType
	}
	writeJSON(w, e.status, body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"schemas":["` + schemaError + `"],"status":"500","detail":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/scim+json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// readBody decodes the request's JSON object into v: a SCIM or plain JSON
// content type, at most maxBodyBytes, exactly one JSON value.
func readBody(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/scim+json" && mt != "application/json" {
			return &scimError{status: http.StatusUnsupportedMediaType, detail: "content type must be application/scim+json or application/json"}
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.UseNumber()
	err := dec.Decode(v)
	if err == nil {
		var extra json.RawMessage
		if err = dec.Decode(&extra); err == io.EOF {
			err = nil
		} else if err == nil {
			err = errors.New("more than one JSON value")
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return &scimError{status: http.StatusRequestEntityTooLarge, detail: fmt.Sprintf("request body larger than %d bytes", maxBodyBytes)}
	default:
		return badRequest("invalidSyntax", "request body is not a valid JSON object: %s", jsonProblem(err))
	}
}

// jsonProblem describes a decoding error without quoting the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at offset %d", se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("%q must not be a JSON %s", te.Field, te.Value)
		}
		return fmt.Sprintf("expected an object, got a JSON %s", te.Value)
	case errors.Is(err, io.EOF):
		return "empty body"
	}
	return err.Error()
}

// hasSchema reports whether schemas lists want.
func hasSchema(schemas []string, want string) bool {
	for _, s := range schemas {
		if strings.EqualFold(s, want) {
			return true
		}
	}
	return false
}

// baseURL is the absolute URL of the SCIM root for the request, used in
// meta.location.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/scim/v2"
}

func etag(version int) string { return `W/"` + strconv.Itoa(version) + `"` }

// checkIfMatch enforces an If-Match header against the current version.
func checkIfMatch(r *http.Request, version int) error {
	im := r.Header.Get("If-Match")
	if im == "" {
		return nil
	}
	want := etag(version)
	for _, t := range strings.Split(im, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || t == want || "W/"+t == want {
			return nil
		}
	}
	return &scimError{status: http.StatusPreconditionFailed, detail: "the resource has changed; read it again"}
}

func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
