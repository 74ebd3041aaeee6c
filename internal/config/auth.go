package config

import (
	"net/url"
	"slices"
	"time"
)

// Auth configures authentication beyond the tokens listed under users.
type Auth struct {
	// OIDC enables single sign-on with an OpenID Connect provider.
	OIDC *OIDC `yaml:"oidc"`
	// SessionTTL is how long a session opened by a login lasts
	// (default 12h).
	SessionTTL time.Duration `yaml:"session_ttl"`
	// MaxTokenTTL bounds the lifetime of API tokens (mayfly tokens
	// create; default 720h, 30 days).
	MaxTokenTTL time.Duration `yaml:"max_token_ttl"`
}

// OIDC configures single sign-on with an OpenID Connect provider.
type OIDC struct {
	// Issuer is the provider's issuer URL; its discovery document is at
	// Issuer + "/.well-known/openid-configuration".
	Issuer string `yaml:"issuer"`
	// ClientID is the client registered at the provider; ID tokens must
	// name it as their audience.
	ClientID string `yaml:"client_id"`
	// ClientSecretEnv names the environment variable holding the client
	// secret of a confidential client; empty for a public client.
	ClientSecretEnv string `yaml:"client_secret_env"`
	// Scopes requested (default openid, profile, email).
	Scopes []string `yaml:"scopes"`
	// UsernameClaim names the claim holding the Mayfly user name (default
	// preferred_username, falling back to email).
	UsernameClaim string `yaml:"username_claim"`
	// GroupsClaim names the claim holding the user's groups (default
	// groups).
	GroupsClaim string `yaml:"groups_claim"`
	// RedirectURL is the browser flow's redirect URI to register at the
	// provider, https://MAYFLY/v1/auth/callback (default: built from the
	// request's host).
	RedirectURL string `yaml:"redirect_url"`
	// AllowedGroups, when set, admits only users in one of these groups.
	AllowedGroups []string `yaml:"allowed_groups"`
}

func (a *Auth) validate(f string, line int) error {
	if a.SessionTTL < 0 {
		return lineErr(f, line, "auth.session_ttl %s must not be negative", a.SessionTTL)
	}
	if a.SessionTTL == 0 {
		a.SessionTTL = 12 * time.Hour
	}
	if a.MaxTokenTTL < 0 {
		return lineErr(f, line, "auth.max_token_ttl %s must not be negative", a.MaxTokenTTL)
	}
	if a.MaxTokenTTL == 0 {
		a.MaxTokenTTL = 30 * 24 * time.Hour
	}
	o := a.OIDC
	if o == nil {
		return nil
	}
	if o.Issuer == "" {
		return lineErr(f, line, "auth.oidc.issuer is required (the provider's issuer URL)")
	}
	if u, err := url.Parse(o.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return lineErr(f, line, "auth.oidc.issuer %q is not an http(s) URL", o.Issuer)
	}
	if o.ClientID == "" {
		return lineErr(f, line, "auth.oidc.client_id is required")
	}
	if o.ClientSecretEnv != "" && !envNameRE.MatchString(o.ClientSecretEnv) {
		return lineErr(f, line, "auth.oidc.client_secret_env %q is not an environment variable name", o.ClientSecretEnv)
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{"openid", "profile", "email"}
	} else if !slices.Contains(o.Scopes, "openid") {
		o.Scopes = append([]string{"openid"}, o.Scopes...)
	}
	if o.UsernameClaim == "" {
		o.UsernameClaim = "preferred_username"
	}
	if o.GroupsClaim == "" {
		o.GroupsClaim = "groups"
	}
	return nil
}
