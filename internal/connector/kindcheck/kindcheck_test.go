package kindcheck

import (
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func TestTargetAndGrant(t *testing.T) {
	tests := []struct {
		target mayfly.Target
		used   []string
		want   string
	}{
		{mayfly.Target{Name: "a", DSN: "x", MaxConns: 3}, []string{"dsn", "max_conns"}, ""},
		{mayfly.Target{Name: "a", DSN: "x", Address: "h:1"}, []string{"dsn"}, `target "a": address is not used by kind "k"`},
		{mayfly.Target{Name: "a", Timeout: time.Second}, nil, "timeout"},
		{mayfly.Target{Name: "a", Commands: mayfly.ScriptCommands{Check: []string{"x"}}}, []string{"timeout"}, "commands"},
	}
	for _, tt := range tests {
		err := Target(tt.target, "k", tt.used...)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Target(%+v, %v) = %v; want %q", tt.target, tt.used, err, tt.want)
		}
	}
	if err := Grant(mayfly.Grant{ACL: "+get", Roles: []string{"r"}}, "redis", "acl"); err == nil || !strings.Contains(err.Error(), `roles is not used by kind "redis"`) {
		t.Errorf("Grant = %v; want roles refused", err)
	}
	if err := Grant(mayfly.Grant{Params: map[string]string{"a": "b"}}, "script", "params"); err != nil {
		t.Errorf("Grant(params) = %v", err)
	}
}
