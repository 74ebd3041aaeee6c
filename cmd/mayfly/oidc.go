package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/oidcauth"
)

// oidcLogin returns the single sign-on endpoints (/v1/auth/), or nil when
// auth.oidc is not configured.
func oidcLogin(cfg *config.Config, getenv func(string) string, b *broker.Broker, log *slog.Logger) (http.Handler, error) {
	o := cfg.Auth.OIDC
	if o == nil {
		return nil, nil
	}
	var secret string
	if o.ClientSecretEnv != "" {
		if secret = getenv(o.ClientSecretEnv); secret == "" {
			return nil, mayfly.Errorf(mayfly.EINVALID, "auth.oidc.client_secret_env: %s is not set", o.ClientSecretEnv)
		}
	}
	svc := oidcauth.New(oidcauth.Options{Config: o, Secret: secret, Logger: log,
		Sessions: sessions{b: b, ttl: cfg.Auth.SessionTTL}, Store: b.Store()})
	return svc.Handler(), nil
}

// sessions opens and ends login sessions as tokens of the broker.
type sessions struct {
	b   *broker.Broker
	ttl time.Duration
}

func (s sessions) Open(ctx context.Context, l oidcauth.Login) (string, time.Time, error) {
	plain, t, err := s.b.CreateToken(ctx, broker.System, broker.TokenInput{User: l.User, Name: l.Method, Kind: mayfly.TokenSession,
		Groups: l.Groups, Method: l.Method, TTL: s.ttl})
	if err != nil {
		return "", time.Time{}, err
	}
	return plain, t.ExpiresAt, nil
}

func (s sessions) Close(ctx context.Context, hash string) error {
	t, ok := s.b.ResolveToken(ctx, hash)
	if !ok {
		return mayfly.Errorf(mayfly.EUNAUTHORIZED, "unknown, expired or revoked session")
	}
	if t.Kind != mayfly.TokenSession {
		return mayfly.Errorf(mayfly.EINVALID, "this is an API token, not a login session (revoke it with mayfly tokens revoke %s)", t.ID)
	}
	return s.b.RevokeToken(ctx, broker.Caller{User: t.User, Groups: t.Groups}, t.ID)
}

// UserStatus reads the status again when this replica read it more than a
// second ago: a user suspended through another replica cannot log in here.
func (s sessions) UserStatus(name string) string {
	return s.b.CurrentUserStatus(context.Background(), name)
}
