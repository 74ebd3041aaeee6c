package scim

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestApplyEmails(t *testing.T) {
	two := []string{"a@work.example", "b@work.example"}
	for _, tc := range []struct {
		name  string
		have  []string
		op    string
		path  string
		value string
		want  []string
	}{
		{"entra set work value", two, "replace", `emails[type eq "work"].value`, `"new@x"`, []string{"new@x"}},
		{"entra set work value, no emails", nil, "replace", `emails[type eq "work"].value`, `"new@x"`, []string{"new@x"}},
		{"set value of one", two, "replace", `emails[value eq "B@WORK.EXAMPLE"].value`, `"c@x"`, []string{"a@work.example", "c@x"}},
		{"replace all", two, "replace", `emails`, `[{"value":"c@x","type":"work"},{"value":"d@x","primary":true}]`, []string{"d@x", "c@x"}},
		{"replace all, strings", two, "replace", `emails`, `["c@x"]`, []string{"c@x"}},
		{"add", two, "add", `emails`, `[{"value":"c@x","type":"home"}]`, []string{"a@work.example", "b@work.example", "c@x"}},
		{"add primary", two, "add", `emails`, `[{"value":"c@x","primary":"True"}]`, []string{"c@x", "a@work.example", "b@work.example"}},
		{"add duplicate", two, "add", `emails`, `{"value":"A@work.example"}`, two},
		{"remove all", two, "remove", `emails`, ``, nil},
		{"remove listed", two, "remove", `emails`, `[{"value":"a@work.example"}]`, []string{"b@work.example"}},
		{"remove filtered", two, "remove", `emails[value eq "a@work.example"]`, ``, []string{"b@work.example"}},
		{"remove non-primary", two, "remove", `emails[primary eq false]`, ``, []string{"a@work.example"}},
		{"replace filtered element", two, "replace", `emails[value eq "b@work.example"]`, `{"value":"c@x"}`, []string{"a@work.example", "c@x"}},
		{"replace primary element", two, "replace", `emails[primary eq true]`, `{"value":"c@x"}`, []string{"c@x", "b@work.example"}},
		{"type is not stored", two, "replace", `emails[type eq "work"].type`, `"home"`, two},
		{"filter matching nothing, add", two, "add", `emails[type eq "home"].value`, `"h@x"`, []string{"a@work.example", "b@work.example", "h@x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePath(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := applyEmails(slices.Clone(tc.have), tc.op, p, json.RawMessage(tc.value))
			if err != nil {
				t.Fatalf("applyEmails: %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s %s %s = %q; want %q", tc.op, tc.path, tc.value, got, tc.want)
			}
		})
	}
}

func TestApplyMembers(t *testing.T) {
	abc := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name  string
		op    string
		path  string
		value string
		want  []string
	}{
		{"add", "add", `members`, `[{"value":"d"},{"value":"a"}]`, []string{"a", "b", "c", "d"}},
		{"add one object", "add", `members`, `{"value":"d"}`, []string{"a", "b", "c", "d"}},
		{"remove listed", "remove", `members`, `[{"value":"b"}]`, []string{"a", "c"}},
		{"remove all", "remove", `members`, ``, nil},
		{"remove filtered", "remove", `members[value eq "c"]`, ``, []string{"a", "b"}},
		{"remove filtered or", "remove", `members[value eq "a" or value eq "c"]`, ``, []string{"b"}},
		{"remove case-exact", "remove", `members[value eq "C"]`, ``, abc},
		{"replace all", "replace", `members`, `[{"value":"x"}]`, []string{"x"}},
		{"replace filtered", "replace", `members[value eq "b"]`, `[{"value":"x"}]`, []string{"a", "c", "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePath(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := applyMembers(slices.Clone(abc), tc.op, p, json.RawMessage(tc.value))
			if err != nil {
				t.Fatalf("applyMembers: %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s %s %s = %q; want %q", tc.op, tc.path, tc.value, got, tc.want)
			}
		})
	}
}

func TestParseBool(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
		ok   bool
	}{
		{`true`, true, true},
		{`false`, false, true},
		{`"True"`, true, true},
		{`"False"`, false, true},
		{`"FALSE"`, false, true},
		{`"yes"`, false, false},
		{`0`, false, false},
		{`null`, false, false},
		{``, false, false},
	} {
		got, err := parseBool(json.RawMessage(tc.in), "active")
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("parseBool(%s) = %t, %v; want %t, ok %t", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzApplyUserOp checks that no PATCH operation panics, and that a user
// it accepts still has a valid name.
func FuzzApplyUserOp(f *testing.F) {
	f.Add("Replace", `emails[type eq "work"].value`, `"x@y"`)
	f.Add("add", `emails`, `[{"value":"a@b","primary":true}]`)
	f.Add("remove", `emails[value eq "a@work.example"]`, ``)
	f.Add("replace", ``, `{"active":"False","name.givenName":"x"}`)
	f.Add("replace", `userName`, `"Alice@Example.com"`)
	f.Fuzz(func(t *testing.T, op, path, value string) {
		u := &User{ID: "id", UserName: "alice", Active: true, Emails: []string{"a@work.example", "b@work.example"}}
		err := applyUserOp(u, patchOp{Op: strings.ToLower(op), Path: path, Value: json.RawMessage(value)})
		if err == nil && !nameRE.MatchString(u.UserName) {
			t.Fatalf("op %q %q %q left userName %q", op, path, value, u.UserName)
		}
	})
}
