package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/metrics"
	"github.com/mayflyhq/mayfly/internal/oidcauth"
	"github.com/mayflyhq/mayfly/internal/scim"
)

// TestOpenAPICoversEveryRoute: every route a fully configured server
// registers (with metrics, SCIM and single sign-on) is in the API
// description, and everything described is served.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	httpapi.NewServer(httpapi.Deps{Metrics: metrics.New(nil), SCIM: http.NotFoundHandler(), Login: http.NotFoundHandler()})
	served := map[string]bool{}
	for _, p := range httpapi.RegisteredRoutes() {
		switch p {
		case "/v1/", "/v1/auth/", "/scim/v2/":
			continue // catch-alls: "no such endpoint", or handed to the routes below
		}
		served[p] = true
	}
	for _, p := range oidcauth.Routes() {
		served[p] = true
	}
	for _, p := range scim.Routes {
		m, path, _ := strings.Cut(p, " ")
		served[m+" /scim/v2"+path] = true
	}
	described := map[string]bool{}
	for _, p := range httpapi.AllOps() {
		described[p] = true
	}
	for p := range served {
		if !described[p] {
			t.Errorf("%s is served but not in the API description (internal/httpapi/openapi.go)", p)
		}
	}
	for p := range described {
		if !served[p] {
			t.Errorf("%s is described but not served", p)
		}
	}
}

// TestOpenAPIServedAndKept: GET /v1/openapi.json serves the description
// without a token, and docs/openapi.json is the same (regenerate it with
// MAYFLY_UPDATE_OPENAPI=1 go test -run TestOpenAPIServedAndKept ./cmd/mayfly).
func TestOpenAPIServedAndKept(t *testing.T) {
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Version: "docs"}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &doc) != nil || doc.OpenAPI != "3.1.0" || len(doc.Paths) < 40 {
		t.Fatalf("GET /v1/openapi.json: %d, openapi %q, %d paths", resp.StatusCode, doc.OpenAPI, len(doc.Paths))
	}
	if _, ok := doc.Paths["/v1/requests/{id}/approve"]["post"]; !ok {
		t.Errorf("the served description lacks POST /v1/requests/{id}/approve")
	}
	const kept = "../../docs/openapi.json"
	if os.Getenv("MAYFLY_UPDATE_OPENAPI") != "" {
		if err := os.WriteFile(kept, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, err := os.ReadFile(kept)
	if err != nil || !slices.Equal(old, body) {
		t.Errorf("%s is not the description the code serves (%v); regenerate it: MAYFLY_UPDATE_OPENAPI=1 go test -run TestOpenAPIServedAndKept ./cmd/mayfly", kept, err)
	}
}
