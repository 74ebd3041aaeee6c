package policy

import (
	"encoding/json"
	"testing"
	"time"
)

// TestCatalog: a user is offered the grants of the policies naming them
// or their groups, break-glass where they are in its groups, and nothing
// else.
func TestCatalog(t *testing.T) {
	ps := []Policy{
		{Name: "eng-read", Groups: []string{"eng"}, Targets: []string{"db"}, Grants: []string{"read"}, MaxDuration: time.Hour, DefaultDuration: 15 * time.Minute},
		{Name: "eng-write", Groups: []string{"eng"}, Targets: []string{"db"}, Grants: []string{"write"}, MaxDuration: 2 * time.Hour,
			Approvals: 1, ApproverGroups: []string{"dba"}, ReasonPattern: `^INC-`},
		{Name: "prod-any", Users: []string{"erin"}, TargetLabels: map[string]string{"env": "prod"}, Grants: []string{"*"}, MaxDuration: time.Hour,
			Steps: []Step{{Approvals: 1, ApproverGroups: []string{"dba"}}, {Approvals: 1, ApproverGroups: []string{"sec"}}}},
		{Name: "oncall", Targets: []string{"*"}, Grants: []string{"write"}, MaxDuration: time.Hour,
			BreakGlass: &BreakGlass{Groups: []string{"oncall"}, MaxDuration: 30 * time.Minute}},
	}
	targets := []TargetInfo{
		{Name: "db", Kind: "postgres", Grants: []string{"write", "read"}},
		{Name: "cache", Kind: "redis", Labels: map[string]string{"env": "prod"}, Grants: []string{"ro"}},
	}
	s, err := Compile(ps, targets)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user   string
		groups []string
		want   string
	}{
		{"nobody", nil, `[]`},
		{"alice", []string{"eng"}, `[{"target":"db","kind":"postgres","grant":"read","terms":[{"policy":"eng-read","break_glass":false,"max_duration":"1h0m0s","default_duration":"15m0s","steps":[],"reason_required":false}]},` +
			`{"target":"db","kind":"postgres","grant":"write","terms":[{"policy":"eng-write","break_glass":false,"max_duration":"2h0m0s","steps":[{"approvals":1,"approver_groups":["dba"]}],"reason_required":true,"reason_pattern":"^INC-"}]}]`},
		{"olga", []string{"oncall"}, `[{"target":"db","kind":"postgres","grant":"write","terms":[{"policy":"oncall","break_glass":true,"max_duration":"30m0s","steps":[],"reason_required":true}]}]`},
		{"erin", nil, `[{"target":"cache","kind":"redis","grant":"ro","terms":[{"policy":"prod-any","break_glass":false,"max_duration":"1h0m0s","steps":[{"approvals":1,"approver_groups":["dba"]},{"approvals":1,"approver_groups":["sec"]}],"reason_required":false}]}]`},
	} {
		b, err := json.Marshal(s.Catalog(c.user, c.groups))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(b); got != c.want {
			t.Errorf("Catalog(%s, %v) =\n%s\nwant\n%s", c.user, c.groups, got, c.want)
		}
	}
}
