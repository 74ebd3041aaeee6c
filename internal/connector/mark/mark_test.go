package mark

import (
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly"
)

func TestTagAndValid(t *testing.T) {
	a, err := NewKey("installation A's key")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKey("installation B's key")
	if err != nil {
		t.Fatal(err)
	}
	tag := a.Tag("mf_alice_x")
	if len(tag) != 64 || strings.Trim(tag, "0123456789abcdef") != "" {
		t.Fatalf("Tag = %q; want 64 lowercase hex digits", tag)
	}
	tests := []struct {
		key        Key
		name, tag  string
		want       bool
		prefixWant bool // ValidPrefix(name, tag[:40], 40)
	}{
		{a, "mf_alice_x", tag, true, true},
		{a, "mf_alice_x", strings.ToUpper(tag), true, true},
		{a, "mf_alice_y", tag, false, false},
		{b, "mf_alice_x", tag, false, false},
		{Key{}, "mf_alice_x", tag, false, false},
		{a, "mf_alice_x", "", false, false},
	}
	for _, tt := range tests {
		if got := tt.key.Valid(tt.name, tt.tag); got != tt.want {
			t.Errorf("Valid(%q, %.8s…) = %v; want %v", tt.name, tt.tag, got, tt.want)
		}
		short := tt.tag
		if len(short) > 40 {
			short = short[:40]
		}
		if got := tt.key.ValidPrefix(tt.name, short, 40); got != tt.prefixWant {
			t.Errorf("ValidPrefix(%q, %.8s…, 40) = %v; want %v", tt.name, short, got, tt.prefixWant)
		}
	}
	if a.ValidPrefix("mf_alice_x", tag[:8], 40) {
		t.Errorf("ValidPrefix accepted 8 digits with a minimum of 40")
	}
	if (Key{}).Tag("x") != "" {
		t.Errorf("the zero Key marks")
	}
}

func TestFromTarget(t *testing.T) {
	env := map[string]string{"K": "sixteen bytes ok", "SHORT": "short"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		envName string
		zero    bool
		wantErr string
	}{
		{"", true, ""},
		{"K", false, ""},
		{"UNSET", true, `"UNSET" named by instance_key_env is empty`},
		{"SHORT", true, "at least 16 bytes"},
	}
	for _, tt := range tests {
		k, err := FromTarget(mayfly.Target{Name: "t", InstanceKeyEnv: tt.envName}, getenv)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("FromTarget(%q) = %v", tt.envName, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("FromTarget(%q) error = %v; want %q", tt.envName, err, tt.wantErr)
		case k.Zero() != tt.zero:
			t.Errorf("FromTarget(%q) zero = %v; want %v", tt.envName, k.Zero(), tt.zero)
		}
	}
}
