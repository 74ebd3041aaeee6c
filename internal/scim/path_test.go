package scim

import (
	"reflect"
	"testing"
)

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means a parse error
		sub      string
	}{
		{`active`, `active`, ``},
		{`name.givenName`, `name.givenName`, `givenName`},
		{`emails[type eq "work"].value`, `emails[type eq "work"].value`, `value`},
		{`emails[type eq "work" and primary eq true]`, `emails[(type eq "work" and primary eq true)]`, ``},
		{`members[value eq "2819c223-7f76-453a-919d-413861904646"]`, `members[value eq "2819c223-7f76-453a-919d-413861904646"]`, ``},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`, `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`, ``},
		{`urn:ietf:params:scim:schemas:core:2.0:User:emails[type eq "work"].value`, `urn:ietf:params:scim:schemas:core:2.0:User:emails[type eq "work"].value`, `value`},
		{`emails[value eq "a]b"]`, `emails[value eq "a]b"]`, ``},
		{``, ``, ``},
		{`name..givenName`, ``, ``},
		{`name.givenName.x`, ``, ``},
		{`emails[type eq "work"`, ``, ``},
		{`emails[type eq "work"]value`, ``, ``},
		{`emails[type eq "work"].`, ``, ``},
		{`emails[type eq "work"].value.x`, ``, ``},
		{`emails[type eq "work"].value extra`, ``, ``},
		{`name.givenName[type eq "x"]`, ``, ``},
		{`emails type`, ``, ``},
		{`"emails"`, ``, ``},
		{`[type eq "work"]`, ``, ``},
	} {
		p, err := parsePath(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("parsePath(%q) = %s; want an error", tc.in, p)
		case tc.want != "" && err != nil:
			t.Errorf("parsePath(%q) error: %v", tc.in, err)
		case tc.want != "" && (p.String() != tc.want || p.sub() != tc.sub):
			t.Errorf("parsePath(%q) = %s (sub %q); want %s (sub %q)", tc.in, p, p.sub(), tc.want, tc.sub)
		}
	}
}

// FuzzParsePath checks that the path parser never panics and that what it
// accepts prints back to an equivalent path.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		`active`,
		`name.givenName`,
		`emails[type eq "work"].value`,
		`members[value eq "abc"]`,
		`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePath(s)
		if err != nil {
			return
		}
		again, err := parsePath(p.String())
		if err != nil {
			t.Fatalf("parsePath(%q) = %s, which does not parse: %v", s, p, err)
		}
		if !reflect.DeepEqual(p, again) {
			t.Fatalf("parsePath(%q) = %s; printed and parsed again = %s", s, p, again)
		}
	})
}
