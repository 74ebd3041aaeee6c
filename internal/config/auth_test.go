package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseAuthOIDC(t *testing.T) {
	base := "store: {sqlite: a.db}\n"
	c, err := Parse([]byte(base+"auth: {oidc: {issuer: \"https://idp.example.com\", client_id: mayfly}}\n"), "f.yaml")
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	o := c.Auth.OIDC
	if !slices.Equal(o.Scopes, []string{"openid", "profile", "email"}) || o.UsernameClaim != "preferred_username" || o.GroupsClaim != "groups" {
		t.Errorf("defaults = %+v; want scopes openid profile email, preferred_username, groups", o)
	}
	if c.Auth.SessionTTL != 12*time.Hour {
		t.Errorf("session_ttl = %s; want 12h", c.Auth.SessionTTL)
	}
	c, err = Parse([]byte(base+"auth: {session_ttl: 30m, oidc: {issuer: \"https://idp.example.com\", client_id: m, scopes: [email], groups_claim: roles}}\n"), "f.yaml")
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	if !slices.Equal(c.Auth.OIDC.Scopes, []string{"openid", "email"}) || c.Auth.OIDC.GroupsClaim != "roles" || c.Auth.SessionTTL != 30*time.Minute {
		t.Errorf("auth = %+v %+v; want openid added, roles, 30m", c.Auth, c.Auth.OIDC)
	}
	for _, tt := range []struct{ yaml, want string }{
		{"auth: {oidc: {client_id: m}}", "auth.oidc.issuer is required"},
		{"auth: {oidc: {issuer: \"idp.example.com\", client_id: m}}", "not an http(s) URL"},
		{"auth: {oidc: {issuer: \"https://idp.example.com\"}}", "auth.oidc.client_id is required"},
		{"auth: {oidc: {issuer: \"https://idp.example.com\", client_id: m, client_secret_env: \"A B\"}}", "client_secret_env"},
		{"auth: {session_ttl: -1h}", "session_ttl"},
	} {
		_, err := Parse([]byte(base+tt.yaml+"\n"), "f.yaml")
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "f.yaml:2:") {
			t.Errorf("Parse(%s) = %v; want f.yaml:2: … %s", tt.yaml, err, tt.want)
		}
	}
}
