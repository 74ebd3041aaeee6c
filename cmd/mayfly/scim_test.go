package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSCIMDeprovisioningRevokesAccess drives the server's SCIM endpoint the
// way Okta and Entra ID do, and checks that deactivating a user ends their
// access within 5 seconds.
func TestSCIMDeprovisioningRevokesAccess(t *testing.T) {
	tok, sum := newToken()
	w := startWorld(t, worldOpts{extraYAML: "scim: {token_sha256: \"" + sum + "\"}\n"})
	do := scimClient(t, w.addr, tok)
	// Wrong token: SCIM error.
	req, _ := http.NewRequest("GET", "http://"+w.addr+"/scim/v2/Users", nil)
	req.Header.Set("Authorization", "Bearer "+w.tokens["carol"])
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("SCIM with a user token = %v %v; want 401", resp.StatusCode, err)
	}
	// Okta: look up, create, then deactivate.
	if code, v := do("GET", `/Users?filter=userName%20eq%20%22alice%40example.com%22`, ""); code != 200 || v["totalResults"].(float64) != 0 {
		t.Fatalf("lookup = %d %v", code, v)
	}
	code, created := do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@example.com","name":{"givenName":"Alice","familyName":"A"},"emails":[{"primary":true,"value":"alice@example.com","type":"work"}],"active":true}`)
	if code != 201 {
		t.Fatalf("create = %d %v", code, created)
	}
	id := created["id"].(string)
	if code, v := do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@example.com","active":true}`); code != 409 {
		t.Errorf("duplicate create = %d %v; want 409", code, v)
	}
	if code, v := do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],`); code != 400 || v["schemas"] == nil {
		t.Errorf("malformed body = %d %v; want a SCIM 400", code, v)
	}

	// The identity provider's groups show in `mayfly users`.
	if code, v := do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"oncall","members":[{"value":"`+id+`"}]}`); code != 201 {
		t.Fatalf("create group = %d %v", code, v)
	}
	var listed []struct {
		Name       string   `json:"name"`
		SCIMGroups []string `json:"scim_groups"`
	}
	w.ok("carol", &listed, "users", "-o", "json")
	found := false
	for _, u := range listed {
		if u.Name == "alice" {
			found = strings.Join(u.SCIMGroups, ",") == "oncall"
		}
	}
	if !found {
		t.Errorf("users -o json = %+v; want alice with scim_groups [oncall]", listed)
	}
	if out := w.ok("carol", nil, "users"); !strings.Contains(out, "SCIM GROUPS") || !strings.Contains(out, "oncall") {
		t.Errorf("users table:\n%s\nwant a SCIM GROUPS column with oncall", out)
	}

	var r reqOut
	var c credsOut
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30m", "--reason", "INC-1", "-o", "json")
	w.ok("alice", &c, "creds", r.ID, "-o", "json")
	start := time.Now()
	if code, v := do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`); code != 200 || v["active"] != false {
		t.Fatalf("Entra-style deactivate = %d %v", code, v)
	}
	waitFor(t, "the deprovisioned user's account to be gone", 5*time.Second, func() bool { return !roleExists(t, c.Username) })
	t.Logf("SCIM deactivate → account gone in %s", time.Since(start))
	if msg := w.fails("alice", "leases"); !strings.Contains(msg, "user alice is suspended") {
		t.Errorf("deprovisioned user's token: %q", msg)
	}
	if l := w.lease(c.LeaseID); l.EndReason != "user_suspended" {
		t.Errorf("end_reason = %q; want user_suspended", l.EndReason)
	}
	// Okta reactivates with active: true; access comes back for new requests.
	if code, _ := do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":true}}]}`); code != 200 {
		t.Fatalf("reactivate = %d", code)
	}
	w.ok("alice", nil, "leases")
	// Delete deprovisions for good.
	if code, _ := do("DELETE", "/Users/"+id, ""); code != 204 {
		t.Fatalf("delete = %d", code)
	}
	w.fails("alice", "leases")
	var users []struct{ Name, Status string }
	w.ok("carol", &users, "users", "-o", "json")
	for _, u := range users {
		if u.Name == "alice" && u.Status != "deprovisioned" {
			t.Errorf("alice = %s; want deprovisioned", u.Status)
		}
	}
}

// TestSCIMGroupsReachEveryReplica: the identity provider's SCIM client
// reaches one replica behind the load balancer; the groups it gives or
// takes away hold on every other within seconds, not at its next restart.
func TestSCIMGroupsReachEveryReplica(t *testing.T) {
	tok, sum := newToken()
	a, b, _ := twoReplicas(t, worldOpts{extraYAML: "scim: {token_sha256: \"" + sum + "\"}\n"})
	do := scimClient(t, a.addr, tok)
	groupsOnB := func() []string {
		var who struct {
			Groups []string `json:"groups"`
		}
		b.ok("alice", &who, "whoami", "-o", "json")
		return who.Groups
	}
	waitGroups := func(what string, want bool) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for slices.Contains(groupsOnB(), "oncall") != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s through A: B still says alice's groups are %v 3 s later", what, groupsOnB())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if slices.Contains(groupsOnB(), "oncall") {
		t.Fatalf("alice is in oncall before the identity provider said so")
	}
	code, created := do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@example.com","active":true}`)
	if code != 201 {
		t.Fatalf("create user = %d %v", code, created)
	}
	code, group := do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"oncall","members":[{"value":"`+created["id"].(string)+`"}]}`)
	if code != 201 {
		t.Fatalf("create group = %d %v", code, group)
	}
	waitGroups("alice added to oncall", true)
	if code, v := do("PATCH", "/Groups/"+group["id"].(string), `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"members[value eq \"`+created["id"].(string)+`\"]"}]}`); code != 200 && code != 204 {
		t.Fatalf("remove member = %d %v", code, v)
	}
	waitGroups("alice removed from oncall", false)
}

// TestSCIMChangesThroughTwoReplicasAtOnce sends membership changes to one
// group through two replicas at once, as an identity provider pushing
// several changes in parallel behind a load balancer does. Each PATCH
// reads the group, changes it and writes it back; without a lock across
// replicas, a change read before another's write and written after it
// undoes it: a member added is lost, or one removed comes back (and keeps
// the group's access).
func TestSCIMChangesThroughTwoReplicasAtOnce(t *testing.T) {
	tok, sum := newToken()
	a, b, _ := twoReplicas(t, worldOpts{extraYAML: "scim: {token_sha256: \"" + sum + "\"}\n"})
	do := scimClient(t, a.addr, tok)
	const n = 16
	ids := make([]string, n)
	for i := range ids {
		code, u := do("POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"user%d@example.com","active":true}`, i))
		if code != 201 {
			t.Fatalf("create user %d = %d %v", i, code, u)
		}
		ids[i] = u["id"].(string)
	}
	code, group := do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"oncall"}`)
	if code != 201 {
		t.Fatalf("create group = %d %v", code, group)
	}
	gid := group["id"].(string)
	// Each change goes through A or B in turn, all at once.
	patchAll := func(op string, members []string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan string, len(members))
		for i, id := range members {
			addr := a.addr
			if i%2 == 1 {
				addr = b.addr
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				path := "members"
				value := `[{"value":"` + id + `"}]`
				if op == "remove" {
					path, value = `members[value eq \"`+id+`\"]`, "null"
				}
				body := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"` + op + `","path":"` + path + `","value":` + value + `}]}`
				req, _ := http.NewRequest("PATCH", "http://"+addr+"/scim/v2/Groups/"+gid, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/scim+json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 && resp.StatusCode != 204 {
					errs <- fmt.Sprintf("%s %s = %d %s", op, id, resp.StatusCode, msg)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
	members := func() []string {
		t.Helper()
		code, g := do("GET", "/Groups/"+gid, "")
		if code != 200 {
			t.Fatalf("get group = %d %v", code, g)
		}
		var out []string
		ms, _ := g["members"].([]any)
		for _, m := range ms {
			out = append(out, m.(map[string]any)["value"].(string))
		}
		slices.Sort(out)
		return out
	}
	patchAll("add", ids)
	want := slices.Sorted(slices.Values(ids))
	if got := members(); !slices.Equal(got, want) {
		t.Fatalf("after %d additions at once through two replicas the group has %d members; lost: %v", n, len(got), missing(want, got))
	}
	patchAll("remove", ids[:n/2])
	want = slices.Sorted(slices.Values(ids[n/2:]))
	if got := members(); !slices.Equal(got, want) {
		t.Fatalf("after %d removals at once through two replicas the group has %v; want %v", n/2, got, want)
	}
	// Each user's groups follow the group's members.
	for i, id := range ids {
		code, u := do("GET", "/Users/"+id, "")
		if code != 200 {
			t.Fatalf("get user %d = %d %v", i, code, u)
		}
		in := false
		gs, _ := u["groups"].([]any)
		for _, g := range gs {
			in = in || g.(map[string]any)["value"] == gid
		}
		if in != (i >= n/2) {
			t.Errorf("user %d in the group = %v, want %v (%v)", i, in, i >= n/2, u["groups"])
		}
	}
}

// missing returns what want has and got lacks.
func missing(want, got []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			out = append(out, w)
		}
	}
	return out
}

// scimClient returns a SCIM call to the server at addr with token tok:
// its status and its decoded JSON body.
func scimClient(t *testing.T, addr, tok string) func(method, path, body string) (int, map[string]any) {
	return func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+"/scim/v2"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/scim+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var v map[string]any
		json.Unmarshal(b, &v)
		return resp.StatusCode, v
	}
}
