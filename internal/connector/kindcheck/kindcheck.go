// Package kindcheck refuses configuration that belongs to another kind of
// target, so a misplaced key is an error rather than silently ignored.
package kindcheck

import (
	"slices"

	"github.com/mayflyhq/mayfly"
)

type setting struct {
	key string
	set bool
}

func targetSettings(t mayfly.Target) []setting {
	return []setting{
		{"dsn", t.DSN != ""},
		{"dsn_env", t.DSNEnv != ""},
		{"address", t.Address != ""},
		{"admin_user", t.AdminUser != ""},
		{"admin_password", t.AdminPassword != ""},
		{"admin_password_env", t.AdminPasswordEnv != ""},
		{"admin_key_file", t.AdminKeyFile != ""},
		{"host_key", t.HostKey != ""},
		{"krl_file", t.KRLFile != ""},
		{"connection_limit", t.ConnectionLimit != 0},
		{"scram_iterations", t.SCRAMIterations != 0},
		{"max_conns", t.MaxConns != 0},
		{"rotate_every", t.RotateEvery != 0},
		{"commands", len(t.Commands.Provision)+len(t.Commands.Revoke)+len(t.Commands.Accounts)+len(t.Commands.Check) > 0},
		{"timeout", t.Timeout != 0},
	}
}

func grantSettings(g mayfly.Grant) []setting {
	return []setting{
		{"roles", len(g.Roles) > 0},
		{"statements", len(g.Statements) > 0},
		{"database", g.Database != ""},
		{"acl", g.ACL != ""},
		{"principals", len(g.Principals) > 0},
		{"extensions", len(g.Extensions) > 0},
		{"force_command", g.ForceCommand != ""},
		{"source_address", g.SourceAddress != ""},
		{"host_user", g.HostUser},
		{"host_groups", len(g.HostGroups) > 0},
		{"params", len(g.Params) > 0},
	}
}

// Target refuses kind-specific settings of t other than those in used.
func Target(t mayfly.Target, kind string, used ...string) error {
	for _, s := range targetSettings(t) {
		if s.set && !slices.Contains(used, s.key) {
			return mayfly.Errorf(mayfly.EINVALID, "target %q: %s is not used by kind %q", t.Name, s.key, kind)
		}
	}
	return nil
}

// Grant refuses grant fields of g other than those in used.
func Grant(g mayfly.Grant, kind string, used ...string) error {
	for _, s := range grantSettings(g) {
		if s.set && !slices.Contains(used, s.key) {
			return mayfly.Errorf(mayfly.EINVALID, "%s is not used by kind %q", s.key, kind)
		}
	}
	return nil
}
