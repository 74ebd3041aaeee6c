package acctname

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	tests := []struct {
		name, prefix string
		ok           bool
	}{
		{"mf_alice_x1", "mf_", true},
		{"mf_", "mf_", true},
		{"", "mf_", false},
		{"postgres", "mf_", false},
		{"mf_Alice", "mf_", false},
		{"mf_a'b", "mf_", false},
		{"mf_a\x00", "mf_", false},
		{"mf_ä", "mf_", false},
		{"mf_" + strings.Repeat("x", 30), "mf_", false},
	}
	for _, tt := range tests {
		if err := CheckName(tt.name, tt.prefix, 32); (err == nil) != tt.ok {
			t.Errorf("CheckName(%q, %q) = %v; want ok %v", tt.name, tt.prefix, err, tt.ok)
		}
	}
	if err := ValidName("", 32, true); err != nil {
		t.Errorf("ValidName(empty, allowEmpty) = %v", err)
	}
}
