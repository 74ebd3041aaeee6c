package httpapi

import (
	"net/http"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
)

// TokenBody is the body of POST /v1/tokens.
type TokenBody struct {
	Name string `json:"name"`
	// TTL is how long the token lives, in Go syntax ("1h", "720h").
	TTL string `json:"ttl"`
	// User the token is for (default: the caller; others need an admin).
	User string `json:"user,omitempty"`
}

// CreatedToken is the answer to POST /v1/tokens: the token's plaintext,
// shown this once, and its record.
type CreatedToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	User      string    `json:"user"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *server) handleCreateToken() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body TokenBody
		if err := decode(r, &body); err != nil {
			return 0, nil, err
		}
		if body.TTL == "" {
			return 0, nil, mayfly.Errorf(mayfly.EINVALID, "ttl is required (e.g. 24h)")
		}
		ttl, err := mayfly.ParseDuration(body.TTL)
		if err != nil || ttl <= 0 {
			return 0, nil, mayfly.Errorf(mayfly.EINVALID, "ttl %q: want a positive duration such as 1h, 720h or 30d", body.TTL)
		}
		plain, t, err := s.Broker.CreateToken(r.Context(), callerFrom(r), broker.TokenInput{User: body.User, Name: body.Name, TTL: ttl})
		if err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, CreatedToken{ID: t.ID, Name: t.Name, User: t.User, Token: plain, ExpiresAt: t.ExpiresAt}, nil
	})
}

func (s *server) handleListTokens() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		ts, err := s.Broker.ListTokens(r.Context(), callerFrom(r), r.URL.Query().Get("user"))
		if err != nil {
			return 0, nil, err
		}
		return 200, ts, nil
	})
}

func (s *server) handleRevokeToken() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		if err := s.Broker.RevokeToken(r.Context(), callerFrom(r), r.PathValue("id")); err != nil {
			return 0, nil, err
		}
		return 200, map[string]string{"id": r.PathValue("id"), "status": "revoked"}, nil
	})
}
