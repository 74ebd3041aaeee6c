package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// CredentialService keeps targets' admin credentials sealed in the store.
// No answer of it, and no error, ever holds a credential.
type CredentialService interface {
	// SetCredential stores cred sealed as target's admin credential,
	// after checking that it logs in when check is true.
	SetCredential(ctx context.Context, actor, source, target, cred string, check bool) error
	// RotateCredential changes the admin password on target to a new
	// random one, verifies it and stores it sealed.
	RotateCredential(ctx context.Context, actor, source, target string) (time.Time, error)
}

// CredentialBody is the body of PUT /v1/targets/{name}/credential.
type CredentialBody struct {
	// Credential is what the target's configuration would otherwise
	// hold: the admin DSN (postgres, mysql) or the admin password (redis).
	Credential string `json:"credential"`
	// SkipCheck stores it without logging in with it first.
	SkipCheck bool `json:"skip_check,omitempty"`
}

// CredentialResult answers a credential change; it never holds the
// credential.
type CredentialResult struct {
	Target    string    `json:"target"`
	Status    string    `json:"status"`
	RotatedAt time.Time `json:"rotated_at,omitzero"`
}

// credentials returns the credential service for target name, which must
// be configured: a mistyped name is reported as unknown before anything
// the service would say of a missing master key.
func (s *server) credentials(name string) (CredentialService, error) {
	if s.Credentials == nil {
		return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "this server keeps no sealed credentials")
	}
	t, ok := s.Broker.Config().Targets[name]
	if !ok {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "unknown target %q", name)
	}
	if k, ok := s.Credentials.(interface{ Kinds() []string }); ok {
		if kinds := k.Kinds(); !slices.Contains(kinds, string(t.Kind)) {
			return nil, mayfly.Errorf(mayfly.EINVALID, "target %q is of kind %s, whose admin credential Mayfly does not keep sealed (kinds it does: %s)", name, t.Kind, strings.Join(kinds, ", "))
		}
	}
	return s.Credentials, nil
}

func (s *server) handleSetCredential() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		name := r.PathValue("name")
		cs, err := s.credentials(name)
		if err != nil {
			return 0, nil, err
		}
		var body CredentialBody
		if err := decode(r, &body); err != nil {
			return 0, nil, err
		}
		c := callerFrom(r)
		if err := cs.SetCredential(r.Context(), c.User, c.Source, name, body.Credential, !body.SkipCheck); err != nil {
			return 0, nil, err
		}
		return 200, CredentialResult{Target: name, Status: "credential set"}, nil
	})
}

func (s *server) handleRotateCredential() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		name := r.PathValue("name")
		cs, err := s.credentials(name)
		if err != nil {
			return 0, nil, err
		}
		c := callerFrom(r)
		at, err := cs.RotateCredential(r.Context(), c.User, c.Source, name)
		if err != nil {
			return 0, nil, err
		}
		return 200, CredentialResult{Target: name, Status: "credential rotated", RotatedAt: at}, nil
	})
}
