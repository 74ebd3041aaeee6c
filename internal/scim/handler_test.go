package scim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

const testToken = "scim-test-token-0123456789"

func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// client drives a SCIM server over real HTTP.
type client struct {
	t     *testing.T
	url   string // server root
	token string
}

// response is a decoded reply.
type response struct {
	status int
	header http.Header
	body   map[string]any
}

func newServer(t *testing.T, dir Directory) *client {
	t.Helper()
	h := NewHandler(dir, tokenHash(testToken), slog.New(slog.DiscardHandler)).(*handler)
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h.now = func() time.Time {
		clock = clock.Add(time.Second)
		return clock
	}
	mux := http.NewServeMux()
	mux.Handle("/scim/v2/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &client{t: t, url: srv.URL, token: testToken}
}

// do sends a request; body is a string sent as is, or a value encoded as
// JSON. hdr are header name, value pairs.
func (c *client) do(method, path string, body any, hdr ...string) response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.url+"/scim/v2"+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/scim+json; charset=utf-8")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			c.t.Fatalf("%s %s: response is not JSON: %v: %s", method, path, err, raw)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/scim+json") {
			c.t.Errorf("%s %s: Content-Type = %q; want application/scim+json", method, path, ct)
		}
	}
	return r
}

// must is do that fails the test unless the status is want.
func (c *client) must(want int, method, path string, body any, hdr ...string) map[string]any {
	c.t.Helper()
	r := c.do(method, path, body, hdr...)
	if r.status != want {
		c.t.Fatalf("%s %s = %d %v; want %d", method, path, r.status, r.body, want)
	}
	return r.body
}

func filterQuery(f string) string { return "filter=" + url.QueryEscape(f) }

// get walks a decoded JSON value by keys and indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func emailsOf(res map[string]any) []string {
	var out []string
	for _, e := range get(res, "emails").([]any) {
		out = append(out, get(e, "value").(string))
	}
	return out
}

func wantField(t *testing.T, res map[string]any, want any, path ...any) {
	t.Helper()
	if got := get(res, path...); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%v = %v; want %v", path, got, want)
	}
}

func TestAuth(t *testing.T) {
	c := newServer(t, newMemDirectory())
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"none", "", 401},
		{"wrong token", "Bearer nope", 401},
		{"basic", "Basic " + testToken, 401},
		{"no scheme", testToken, 401},
		{"bearer", "Bearer " + testToken, 200},
		{"lowercase scheme", "bearer " + testToken, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", c.url+"/scim/v2/Users", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status = %d; want %d", resp.StatusCode, tc.want)
			}
			if tc.want == 401 {
				var body map[string]any
				json.NewDecoder(resp.Body).Decode(&body)
				wantField(t, body, "[urn:ietf:params:scim:api:messages:2.0:Error]", "schemas")
				wantField(t, body, "401", "status")
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate header")
				}
			}
		})
	}
	t.Run("no configured token", func(t *testing.T) {
		srv := httptest.NewServer(NewHandler(newMemDirectory(), "", nil))
		defer srv.Close()
		req, _ := http.NewRequest("GET", srv.URL+"/Users", nil)
		req.Header.Set("Authorization", "Bearer ")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("status = %d; want 401", resp.StatusCode)
		}
	})
}

// TestOkta follows the request sequence of Okta's SCIM 2.0 provisioning
// guide: look the user up, create it, read it, deactivate it, replace it.
func TestOkta(t *testing.T) {
	dir := newMemDirectory()
	c := newServer(t, dir)

	list := c.must(200, "GET", "/Users?"+filterQuery(`userName eq "Dade.Murphy@example.com"`)+"&startIndex=1&count=100", nil)
	wantField(t, list, 0, "totalResults")
	wantField(t, list, "[]", "Resources")
	wantField(t, list, "[urn:ietf:params:scim:api:messages:2.0:ListResponse]", "schemas")

	create := `{
	  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
	  "userName": "Dade.Murphy@example.com",
	  "name": {"givenName": "Dade", "familyName": "Murphy"},
	  "emails": [{"primary": true, "value": "dade.murphy@example.com", "type": "work"}],
	  "displayName": "Dade Murphy",
	  "locale": "en-US",
	  "externalId": "00ujl29u0le5T6Aj10h7",
	  "groups": [],
	  "password": "1mz050nq",
	  "active": true
	}`
	r := c.do("POST", "/Users", create)
	if r.status != 201 {
		t.Fatalf("POST /Users = %d %v; want 201", r.status, r.body)
	}
	u := r.body
	id, _ := u["id"].(string)
	wantField(t, u, "dade.murphy", "userName")
	wantField(t, u, "Dade Murphy", "displayName")
	wantField(t, u, "00ujl29u0le5T6Aj10h7", "externalId")
	wantField(t, u, true, "active")
	wantField(t, u, "dade.murphy@example.com", "emails", 0, "value")
	wantField(t, u, "User", "meta", "resourceType")
	wantField(t, u, `W/"1"`, "meta", "version")
	wantField(t, u, c.url+"/scim/v2/Users/"+id, "meta", "location")
	if got := r.header.Get("Location"); got != c.url+"/scim/v2/Users/"+id {
		t.Errorf("Location = %q", got)
	}
	if got := r.header.Get("ETag"); got != `W/"1"` {
		t.Errorf("ETag = %q; want W/\"1\"", got)
	}
	if _, ok := u["password"]; ok {
		t.Error("the response carries a password")
	}

	list = c.must(200, "GET", "/Users?"+filterQuery(`userName eq "Dade.Murphy@example.com"`)+"&startIndex=1&count=100", nil)
	wantField(t, list, 1, "totalResults")
	wantField(t, list, id, "Resources", 0, "id")

	c.must(200, "GET", "/Users/"+id, nil)

	// Okta retries a create it lost the answer to: the user exists.
	r = c.do("POST", "/Users", create)
	if r.status != 409 || r.body["scimType"] != "uniqueness" {
		t.Errorf("duplicate POST = %d %v; want 409 uniqueness", r.status, r.body)
	}

	// Deactivation.
	u = c.must(200, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"replace","value":{"active":false}}]}`)
	wantField(t, u, false, "active")
	wantField(t, u, `W/"2"`, "meta", "version")
	if got, want := dir.suspendedUsers(), []string{"dade.murphy"}; !slices.Equal(got, want) {
		t.Errorf("suspended = %v; want %v", got, want)
	}

	// Profile push: PUT of the whole user, reactivating it.
	put := `{
	  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
	  "id": "` + id + `",
	  "userName": "dade.murphy@example.com",
	  "name": {"givenName": "Dade", "familyName": "Murphy-Smith"},
	  "emails": [{"primary": true, "value": "dade@example.org", "type": "work"}],
	  "displayName": "Dade Murphy-Smith",
	  "externalId": "00ujl29u0le5T6Aj10h7",
	  "active": true,
	  "meta": {"resourceType": "User"}
	}`
	u = c.must(200, "PUT", "/Users/"+id, put)
	wantField(t, u, true, "active")
	wantField(t, u, "Dade Murphy-Smith", "displayName")
	wantField(t, u, "dade@example.org", "emails", 0, "value")
	wantField(t, u, `W/"3"`, "meta", "version")

	// Repeating a PATCH that changes nothing keeps the version.
	u = c.must(200, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"replace","value":{"active":true}}]}`)
	wantField(t, u, `W/"3"`, "meta", "version")

	// A PUT that leaves active out does not reactivate a deactivated user.
	c.must(200, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"replace","path":"active","value":false}]}`)
	u = c.must(200, "PUT", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"dade.murphy"}`)
	wantField(t, u, false, "active")
	wantField(t, u, nil, "displayName")
}

// TestEntraID follows the request sequence of Microsoft Entra ID's SCIM
// provisioning guide, with its capitalised ops and string booleans.
func TestEntraID(t *testing.T) {
	dir := newMemDirectory()
	c := newServer(t, dir)
	const userName = "Test_User_dfeef4c5-5681-4387-b016-bdf221e82081"

	list := c.must(200, "GET", "/Users?"+filterQuery(`userName eq "`+userName+`"`), nil)
	wantField(t, list, 0, "totalResults")

	u := c.must(201, "POST", "/Users", `{
	  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
	  "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
	  "userName": "`+userName+`",
	  "active": true,
	  "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"}],
	  "meta": {"resourceType": "User"},
	  "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
	  "roles": [],
	  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Engineering", "manager": {"value": "x"}}
	}`)
	id := u["id"].(string)
	wantField(t, u, strings.ToLower(userName), "userName")

	list = c.must(200, "GET", "/Users?"+filterQuery(`userName eq "`+userName+`"`), nil)
	wantField(t, list, 1, "totalResults")
	list = c.must(200, "GET", "/Users?"+filterQuery(`externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"`), nil)
	wantField(t, list, id, "Resources", 0, "id")
	list = c.must(200, "GET", "/Users?"+filterQuery(`externalId eq "0A21F0F2-8D2A-4F8E-BF98-7363C4AED4EF"`), nil)
	wantField(t, list, 0, "totalResults") // externalId is case-exact

	u = c.must(200, "PATCH", "/Users/"+id, `{
	  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
	  "Operations": [
	    {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
	    {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
	    {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": [{"op":"Add","value":"mgr"}]},
	    {"op": "Replace", "path": "displayName", "value": "Updated Name"}
	  ]}`)
	if got, want := emailsOf(u), []string{"updatedEmail@microsoft.com"}; !slices.Equal(got, want) {
		t.Errorf("emails = %v; want %v", got, want)
	}
	wantField(t, u, "Updated Name", "displayName")

	// Entra ID replaces without a path, with attribute paths as keys.
	u = c.must(200, "PATCH", "/Users/"+id, `{
	  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
	  "Operations": [{"op": "replace", "value": {"id": "`+id+`", "name.givenName": "G", "displayName": "Entra Name",
	    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42"}}]}`)
	wantField(t, u, "Entra Name", "displayName")

	// Groups: create, look up by name without members, add and remove members.
	g := c.must(201, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],
	  "externalId":"8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159","displayName":"Group1DEF","members":[]}`)
	gid := g["id"].(string)
	wantField(t, g, "Group", "meta", "resourceType")

	gl := c.must(200, "GET", "/Groups?excludedAttributes=members&"+filterQuery(`displayName eq "Group1DEF"`), nil)
	wantField(t, gl, 1, "totalResults")
	wantField(t, gl, gid, "Resources", 0, "id")
	if _, ok := get(gl, "Resources", 0).(map[string]any)["members"]; ok {
		t.Error("excludedAttributes=members still returns members")
	}

	g = c.must(200, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
	  "Operations":[{"op":"Add","path":"members","value":[{"value":"`+id+`"}]}]}`)
	wantField(t, g, id, "members", 0, "value")
	u = c.must(200, "GET", "/Users/"+id, nil)
	wantField(t, u, gid, "groups", 0, "value")
	wantField(t, u, "Group1DEF", "groups", 0, "display")
	list = c.must(200, "GET", "/Groups?"+filterQuery(`members eq "`+id+`"`), nil)
	wantField(t, list, 1, "totalResults")

	g = c.must(200, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
	  "Operations":[{"op":"Remove","path":"members","value":[{"value":"`+id+`"}]}]}`)
	wantField(t, g, "[]", "members")

	// Okta's form of removal: a value filter in the path.
	c.must(200, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
	  "Operations":[{"op":"add","path":"members","value":[{"value":"`+id+`","display":"x"}]}]}`)
	g = c.must(200, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
	  "Operations":[{"op":"remove","path":"members[value eq \"`+id+`\"]"}]}`)
	wantField(t, g, "[]", "members")

	g = c.must(200, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
	  "Operations":[{"op":"Replace","path":"displayName","value":"Renamed Group"}]}`)
	wantField(t, g, "Renamed Group", "displayName")

	// Deprovisioning with a string boolean, then deletion.
	u = c.must(200, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
	  "Operations":[{"op":"Replace","path":"active","value":"False"}]}`)
	wantField(t, u, false, "active")
	if got, want := dir.suspendedUsers(), []string{strings.ToLower(userName)}; !slices.Equal(got, want) {
		t.Errorf("suspended = %v; want %v", got, want)
	}

	c.must(204, "DELETE", "/Groups/"+gid, nil)
	r := c.do("GET", "/Groups/"+gid, nil)
	if r.status != 404 || r.body["status"] != "404" {
		t.Errorf("GET deleted group = %d %v; want 404", r.status, r.body)
	}
	c.must(204, "DELETE", "/Users/"+id, nil)
	r = c.do("GET", "/Users/"+id, nil)
	if r.status != 404 || r.body["status"] != "404" {
		t.Errorf("GET deleted user = %d %v; want 404", r.status, r.body)
	}
	c.must(404, "DELETE", "/Users/"+id, nil)
}

func TestDeleteActiveUserSuspends(t *testing.T) {
	dir := newMemDirectory()
	c := newServer(t, dir)
	u := c.must(201, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob"}`)
	c.must(204, "DELETE", "/Users/"+u["id"].(string), nil)
	if got, want := dir.suspendedUsers(), []string{"bob"}; !slices.Equal(got, want) {
		t.Errorf("suspended = %v; want %v", got, want)
	}
}

func TestMalformed(t *testing.T) {
	c := newServer(t, newMemDirectory())
	u := c.must(201, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice"}`)
	uid := u["id"].(string)
	g := c.must(201, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"ops"}`)
	gid := g["id"].(string)
	patch := func(ops string) string {
		return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":` + ops + `}`
	}
	huge := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"big","displayName":"` + strings.Repeat("x", 2<<20) + `"}`

	for _, tc := range []struct {
		name, method, path string
		body               any
		hdr                []string
		status             int
		scimType           string
	}{
		{"invalid JSON", "POST", "/Users", `{"schemas":`, nil, 400, "invalidSyntax"},
		{"trailing data", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x"} {}`, nil, 400, "invalidSyntax"},
		{"array body", "POST", "/Users", `[]`, nil, 400, "invalidSyntax"},
		{"null body", "POST", "/Users", `null`, nil, 400, "invalidSyntax"},
		{"empty body", "POST", "/Users", ``, nil, 400, "invalidSyntax"},
		{"wrong schema", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"userName":"x"}`, nil, 400, "invalidSyntax"},
		{"no schemas", "POST", "/Users", `{"userName":"x"}`, nil, 400, "invalidSyntax"},
		{"missing userName", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"displayName":"x"}`, nil, 400, "invalidValue"},
		{"userName not a string", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":7}`, nil, 400, "invalidValue"},
		{"unusable userName", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"1st@example.com"}`, nil, 400, "invalidValue"},
		{"userName with a plus", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a+b@example.com"}`, nil, 400, "invalidValue"},
		{"unknown attribute", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","shoeSize":44}`, nil, 400, "invalidPath"},
		{"active not boolean", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","active":"maybe"}`, nil, 400, "invalidValue"},
		{"bad email", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","emails":[{"value":""}]}`, nil, 400, "invalidValue"},
		{"huge body", "POST", "/Users", huge, nil, 413, ""},
		{"wrong content type", "POST", "/Users", `{}`, []string{"Content-Type", "text/plain"}, 415, ""},
		{"patch wrong schema", "PATCH", "/Users/" + uid, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"Operations":[{"op":"replace","path":"active","value":false}]}`, nil, 400, "invalidSyntax"},
		{"patch no operations", "PATCH", "/Users/" + uid, patch(`[]`), nil, 400, "invalidValue"},
		{"patch unknown op", "PATCH", "/Users/" + uid, patch(`[{"op":"frobnicate","path":"active","value":false}]`), nil, 400, "invalidSyntax"},
		{"patch bad path", "PATCH", "/Users/" + uid, patch(`[{"op":"replace","path":"emails[type eq","value":"x"}]`), nil, 400, "invalidPath"},
		{"patch unknown path", "PATCH", "/Users/" + uid, patch(`[{"op":"replace","path":"shoeSize","value":44}]`), nil, 400, "invalidPath"},
		{"patch read-only", "PATCH", "/Users/" + uid, patch(`[{"op":"replace","path":"id","value":"x"}]`), nil, 400, "mutability"},
		{"patch remove without path", "PATCH", "/Users/" + uid, patch(`[{"op":"remove"}]`), nil, 400, "noTarget"},
		{"patch no-path value not object", "PATCH", "/Users/" + uid, patch(`[{"op":"replace","value":false}]`), nil, 400, "invalidValue"},
		{"patch active string", "PATCH", "/Users/" + uid, patch(`[{"op":"Replace","path":"active","value":"nope"}]`), nil, 400, "invalidValue"},
		{"patch remove userName", "PATCH", "/Users/" + uid, patch(`[{"op":"remove","path":"userName"}]`), nil, 400, "mutability"},
		{"patch too many", "PATCH", "/Users/" + uid, patch("[" + strings.TrimSuffix(strings.Repeat(`{"op":"add","path":"displayName","value":"x"},`, maxOperations+1), ",") + "]"), nil, 400, "tooMany"},
		{"bad filter", "GET", "/Users?" + filterQuery(`userName eq alice`), nil, nil, 400, "invalidFilter"},
		{"unbalanced filter", "GET", "/Users?" + filterQuery(`(userName eq "a"`), nil, nil, 400, "invalidFilter"},
		{"unknown operator", "GET", "/Users?" + filterQuery(`userName like "a"`), nil, nil, 400, "invalidFilter"},
		{"bad startIndex", "GET", "/Users?startIndex=one", nil, nil, 400, "invalidValue"},
		{"bad count", "GET", "/Groups?count=1.5", nil, nil, 400, "invalidValue"},
		{"unknown user", "GET", "/Users/nope", nil, nil, 404, ""},
		{"unknown group", "PATCH", "/Groups/nope", patch(`[{"op":"add","path":"members","value":[{"value":"` + uid + `"}]}]`), nil, 404, ""},
		{"unknown endpoint", "GET", "/Widgets", nil, nil, 404, ""},
		{"bulk", "POST", "/Bulk", `{}`, nil, 501, ""},
		{"method not allowed", "DELETE", "/Users", nil, nil, 405, ""},
		{"stale If-Match", "PATCH", "/Users/" + uid, patch(`[{"op":"replace","path":"displayName","value":"A"}]`), []string{"If-Match", `W/"7"`}, 412, ""},
		{"duplicate group name", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"OPS"}`, nil, 409, "uniqueness"},
		{"group without name", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"]}`, nil, 400, "invalidValue"},
		{"group with unusable name", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"!!!"}`, nil, 400, "invalidValue"},
		{"unknown member", "PATCH", "/Groups/" + gid, patch(`[{"op":"add","path":"members","value":[{"value":"ghost"}]}]`), nil, 400, "invalidValue"},
		{"member without value", "PATCH", "/Groups/" + gid, patch(`[{"op":"add","path":"members","value":[{"display":"x"}]}]`), nil, 400, "invalidValue"},
		{"group unknown attribute", "PATCH", "/Groups/" + gid, patch(`[{"op":"replace","path":"owner","value":"x"}]`), nil, 400, "invalidPath"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do(tc.method, tc.path, tc.body, tc.hdr...)
			if r.status != tc.status {
				t.Fatalf("status = %d %v; want %d", r.status, r.body, tc.status)
			}
			wantField(t, r.body, "[urn:ietf:params:scim:api:messages:2.0:Error]", "schemas")
			wantField(t, r.body, fmt.Sprint(tc.status), "status")
			if got, _ := r.body["scimType"].(string); got != tc.scimType {
				t.Errorf("scimType = %q; want %q", got, tc.scimType)
			}
			if d, _ := r.body["detail"].(string); d == "" {
				t.Error("no detail")
			}
		})
	}
	// Nothing above changed the user.
	u = c.must(200, "GET", "/Users/"+uid, nil)
	wantField(t, u, `W/"1"`, "meta", "version")
	wantField(t, u, true, "active")
}

func TestIfMatch(t *testing.T) {
	c := newServer(t, newMemDirectory())
	u := c.must(201, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice"}`)
	id := u["id"].(string)
	body := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"displayName","value":"A"}]}`
	u = c.must(200, "PATCH", "/Users/"+id, body, "If-Match", `W/"1"`)
	wantField(t, u, `W/"2"`, "meta", "version")
	c.must(412, "DELETE", "/Users/"+id, nil, "If-Match", `W/"1"`)
	c.must(204, "DELETE", "/Users/"+id, nil, "If-Match", `W/"2"`)
}

func TestListUsers(t *testing.T) {
	c := newServer(t, newMemDirectory())
	for i, name := range []string{"alice@example.com", "bob@example.com", "carol", "dave", "erin"} {
		c.must(201, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
			"userName":%q,"externalId":"ext-%d","active":%t,"emails":[{"value":"%s@corp.example"}]}`, name, i, i%2 == 0, strings.Split(name, "@")[0]))
	}
	names := func(list map[string]any) []string {
		var out []string
		for _, r := range list["Resources"].([]any) {
			out = append(out, get(r, "userName").(string))
		}
		return out
	}
	for _, tc := range []struct {
		query string
		total int
		want  []string
	}{
		{"", 5, []string{"alice", "bob", "carol", "dave", "erin"}},
		{"count=2", 5, []string{"alice", "bob"}},
		{"startIndex=3&count=2", 5, []string{"carol", "dave"}},
		{"startIndex=5&count=2", 5, []string{"erin"}},
		{"startIndex=9", 5, nil},
		{"startIndex=0&count=1", 5, []string{"alice"}},
		{"count=0", 5, nil},
		{"count=-3", 5, nil},
		{filterQuery(`userName eq "ALICE@EXAMPLE.COM"`), 1, []string{"alice"}},
		{filterQuery(`USERNAME EQ "bob"`), 1, []string{"bob"}},
		{filterQuery(`urn:ietf:params:scim:schemas:core:2.0:User:userName eq "carol"`), 1, []string{"carol"}},
		{filterQuery(`userName eq "not valid!"`), 0, nil},
		{filterQuery(`externalId eq "ext-3"`), 1, []string{"dave"}},
		{filterQuery(`active eq false`), 2, []string{"bob", "dave"}},
		{filterQuery(`userName sw "a" or userName ew "n"`), 2, []string{"alice", "erin"}},
		{filterQuery(`emails co "corp" and not (active eq true)`), 2, []string{"bob", "dave"}},
		{filterQuery(`emails[value sw "carol"]`), 1, []string{"carol"}},
		{filterQuery(`emails.value eq "DAVE@corp.example"`), 1, []string{"dave"}},
		{filterQuery(`displayName pr`), 0, nil},
		{filterQuery(`externalId pr`) + "&count=1", 5, []string{"alice"}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			list := c.must(200, "GET", "/Users?"+tc.query, nil)
			wantField(t, list, tc.total, "totalResults")
			if got := names(list); !slices.Equal(got, tc.want) {
				t.Errorf("users = %v; want %v", got, tc.want)
			}
			wantField(t, list, len(tc.want), "itemsPerPage")
		})
	}
	t.Run("attributes", func(t *testing.T) {
		list := c.must(200, "GET", "/Users?count=1&attributes=userName", nil)
		r := get(list, "Resources", 0).(map[string]any)
		var keys []string
		for k := range r {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if want := []string{"id", "schemas", "userName"}; !slices.Equal(keys, want) {
			t.Errorf("keys = %v; want %v", keys, want)
		}
	})
}

func TestRename(t *testing.T) {
	c := newServer(t, newMemDirectory())
	a := c.must(201, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice"}`)
	c.must(201, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob"}`)
	patch := func(name string) string {
		return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"userName","value":"` + name + `"}]}`
	}
	r := c.do("PATCH", "/Users/"+a["id"].(string), patch("Bob@example.com"))
	if r.status != 409 || r.body["scimType"] != "uniqueness" {
		t.Errorf("rename to a taken name = %d %v; want 409 uniqueness", r.status, r.body)
	}
	u := c.must(200, "PATCH", "/Users/"+a["id"].(string), patch("Alice.Smith@example.com"))
	wantField(t, u, "alice.smith", "userName")
}

func TestDiscovery(t *testing.T) {
	c := newServer(t, newMemDirectory())
	spc := c.must(200, "GET", "/ServiceProviderConfig", nil)
	wantField(t, spc, true, "patch", "supported")
	wantField(t, spc, false, "bulk", "supported")
	wantField(t, spc, true, "filter", "supported")
	wantField(t, spc, maxResults, "filter", "maxResults")
	wantField(t, spc, "oauthbearertoken", "authenticationSchemes", 0, "type")

	rts := c.must(200, "GET", "/ResourceTypes", nil)
	wantField(t, rts, 2, "totalResults")
	wantField(t, rts, "/Users", "Resources", 0, "endpoint")
	wantField(t, rts, schemaGroup, "Resources", 1, "schema")
	c.must(200, "GET", "/ResourceTypes/User", nil)
	c.must(404, "GET", "/ResourceTypes/Device", nil)

	schemas := c.must(200, "GET", "/Schemas", nil)
	wantField(t, schemas, 2, "totalResults")
	wantField(t, schemas, schemaUser, "Resources", 0, "id")
	wantField(t, schemas, "userName", "Resources", 0, "attributes", 0, "name")
	s := c.must(200, "GET", "/Schemas/"+schemaGroup, nil)
	wantField(t, s, "Group", "name")
	c.must(405, "POST", "/Schemas", `{}`)
}

// failingDirectory fails CreateUser with err.
type failingDirectory struct {
	*memDirectory
	err error
}

func (d failingDirectory) CreateUser(ctx context.Context, u *User) error { return d.err }

func TestDirectoryErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		scimType   string
		detail     string
		notContain string
	}{
		{"mayfly invalid", mayfly.Errorf(mayfly.EINVALID, "user name is reserved"), 400, "invalidValue", "user name is reserved", ""},
		{"conflict sentinel", fmt.Errorf("insert: %w", ErrConflict), 409, "uniqueness", "", ""},
		{"internal", errors.New(`dial postgres://admin:hunter2@db`), 500, "", "internal error", "hunter2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newServer(t, failingDirectory{newMemDirectory(), tc.err})
			r := c.do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice"}`)
			if r.status != tc.status {
				t.Fatalf("status = %d %v; want %d", r.status, r.body, tc.status)
			}
			if got, _ := r.body["scimType"].(string); got != tc.scimType {
				t.Errorf("scimType = %q; want %q", got, tc.scimType)
			}
			d, _ := r.body["detail"].(string)
			if tc.detail != "" && d != tc.detail {
				t.Errorf("detail = %q; want %q", d, tc.detail)
			}
			if tc.notContain != "" && strings.Contains(d, tc.notContain) {
				t.Errorf("detail %q leaks %q", d, tc.notContain)
			}
		})
	}
}
