package policy

import (
	"reflect"
	"slices"
	"testing"
)

func TestApproverGroupWarnings(t *testing.T) {
	known := []string{"dba", "admin"}
	has := func(g string) bool { return slices.Contains(known, g) }
	ps := []Policy{
		{Name: "ok", Approvals: 1, ApproverGroups: []string{"dba"}},
		{Name: "typo", Line: 7, Approvals: 1, ApproverGroups: []string{"dbas"}},
		{Name: "partly", Approvals: 1, ApproverGroups: []string{"dba", "ghost"}},
		{Name: "steps", Steps: []Step{{Approvals: 1, ApproverGroups: []string{"dba"}}, {Approvals: 1, ApproverGroups: []string{"admins", "secops"}}}},
		{Name: "auto"},
	}
	got := ApproverGroupWarnings(ps, has)
	want := []string{
		`line 7: policy "typo": approver group "dbas" has no member; nobody can approve it`,
		`policy "partly": approver group "ghost" has no member`,
		`policy "steps" step 2: approver groups "admins", "secops" have no member; nobody can approve it`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ApproverGroupWarnings =\n%q; want\n%q", got, want)
	}
}
