package scim

import "testing"

func TestUserName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"alice", "alice", true},
		{"Alice.Smith@Example.com", "alice.smith", true},
		{"  bob@example.com ", "bob", true},
		{"carol_o-neil", "carol_o-neil", true},
		{"dave@", "dave", true},
		{"@example.com", "", false},
		{"1alice", "1alice", false},
		{"a+b@example.com", "a+b", false},
		{"émile@example.com", "émile", false},
		{"a b", "a b", false},
		{"", "", false},
		{"a" + string(make([]byte, 0)) + "bcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", true},
		{"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl", false},
	} {
		got, ok := UserName(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("UserName(%q) = %q, %t; want %q, %t", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestGroupName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"ops", "ops", true},
		{"Database Admins", "database-admins", true},
		{"  Team: SRE / On-call ", "team-sre-on-call", true},
		{"2FA Users", "g-2fa-users", true},
		{"_internal", "g-_internal", true},
		{"Ünïcode", "n-code", true},
		{"!!!", "", false},
		{"", "", false},
	} {
		got, ok := GroupName(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("GroupName(%q) = %q, %t; want %q, %t", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
