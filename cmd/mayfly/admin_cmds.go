package main

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/httpapi"
)

func cmdUsers(e *env, args []string) error {
	f := newFlags(e, "users", true)
	c, err := f.start(e, args, 0)
	if err != nil {
		return err
	}
	var us []broker.UserView
	if err := c.Do(e.ctx, "GET", "/v1/users", nil, nil, &us); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(us)
	}
	var rows [][]string
	for _, u := range us {
		rows = append(rows, []string{u.Name, orDash(strings.Join(u.Groups, ",")), orDash(strings.Join(u.SCIMGroups, ",")), u.Status, strconv.Itoa(u.Leases)})
	}
	e.table("NAME\tGROUPS\tSCIM GROUPS\tSTATUS\tLIVE LEASES", rows)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdUsersSuspend(e *env, args []string) error { return userStatus(e, "suspend", args) }
func cmdUsersResume(e *env, args []string) error  { return userStatus(e, "resume", args) }
func cmdUsersRemove(e *env, args []string) error  { return userStatus(e, "remove", args) }

// userStatus suspends, resumes or removes a user.
func userStatus(e *env, action string, args []string) error {
	f := newFlags(e, "users "+action, true)
	reason := f.String("reason", "", "why (recorded in the audit trail)")
	c, err := f.start(e, args, 1)
	if err != nil {
		return err
	}
	var res httpapi.UserStatusResult
	if err := c.Do(e.ctx, "POST", "/v1/users/"+url.PathEscape(f.pos[0])+"/"+action, nil, httpapi.DecisionBody{Reason: *reason}, &res); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "user %s: %s (%d lease(s) revoked, %d request(s) cancelled)\n", res.Name, res.Status, res.LeasesRevoked, res.RequestsCancelled)
	return nil
}

func cmdReconcile(e *env, args []string) error {
	f := newFlags(e, "reconcile", true)
	if err := f.parse(e, args); err != nil {
		return err
	}
	if len(f.pos) > 1 {
		return usageErr("reconcile: at most one TARGET")
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	body := httpapi.ReconcileBody{}
	if len(f.pos) == 1 {
		body.Target = f.pos[0]
	}
	var res []broker.ReconcileResult
	if err := c.Do(e.ctx, "POST", "/v1/reconcile", nil, body, &res); err != nil {
		return err
	}
	if f.json() {
		// One target: the object itself, so scripts can read its fields.
		if len(res) == 1 {
			return e.printJSON(res[0])
		}
		return e.printJSON(res)
	}
	var rows [][]string
	for _, r := range res {
		rows = append(rows, []string{r.Target, strconv.Itoa(r.Accounts), strings.Join(r.OrphansRemoved, ","),
			strings.Join(append(slices.Clone(r.Unmanaged), r.SuperusersKept...), ","), strings.Join(r.LeasesMissing, ","),
			strings.Join(r.ProvisioningFinished, ","), strings.Join(r.Errors, "; "), r.Duration})
	}
	e.table("TARGET\tACCOUNTS UNDER PREFIX\tORPHANS REMOVED\tNOT MAYFLY'S (KEPT)\tLEASES MISSING\tPROVISIONING UNDONE\tERRORS\tTOOK", rows)
	return nil
}

func cmdInventory(e *env, args []string) error {
	f := newFlags(e, "inventory", true)
	unmanaged := f.Bool("unmanaged", false, "only accounts Mayfly does not manage (standing privileges)")
	c, err := f.start(e, args, 1)
	if err != nil {
		return err
	}
	var inv []broker.InventoryAccount
	if err := c.Do(e.ctx, "GET", "/v1/targets/"+url.PathEscape(f.pos[0])+"/inventory", nil, nil, &inv); err != nil {
		return err
	}
	out := inv[:0]
	for _, a := range inv {
		if !*unmanaged || !a.Managed {
			out = append(out, a)
		}
	}
	if f.json() {
		return e.printJSON(out)
	}
	var rows [][]string
	for _, a := range out {
		rows = append(rows, []string{a.Name, strconv.FormatBool(a.CanLogin), strconv.FormatBool(a.Superuser), strconv.FormatBool(a.Managed),
			strconv.Itoa(a.Sessions), strings.Join(a.Privileges, ",")})
	}
	e.table("NAME\tCAN LOGIN\tSUPERUSER\tMANAGED\tSESSIONS\tPRIVILEGES", rows)
	return nil
}
