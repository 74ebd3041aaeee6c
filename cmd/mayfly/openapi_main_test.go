package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/mayflyhq/mayfly/internal/httpapi"
)

// apiProblems collects the answers of the in-process servers that the API
// description does not match; TestMain fails the run when there are any.
var (
	apiProblemsMu sync.Mutex
	apiProblems   []string
	apiChecked    int
)

func apiProblem(format string, args ...any) {
	apiProblemsMu.Lock()
	defer apiProblemsMu.Unlock()
	if len(apiProblems) < 50 {
		apiProblems = append(apiProblems, fmt.Sprintf(format, args...))
	}
}

// TestMain validates every answer of every API server the tests start in
// this process against the OpenAPI description (docs/openapi.json).
func TestMain(m *testing.M) {
	if dsns := os.Getenv("MAYFLY_GATEWAY_BENCH_CLIENT"); dsns != "" {
		// The test binary run again as the gateway benchmark's client.
		if err := gatewayBenchClient(dsns); err != nil {
			fmt.Fprintln(os.Stderr, "gateway benchmark client:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	doc, err := httpapi.OpenAPI("test")
	if err != nil {
		fmt.Fprintln(os.Stderr, "API description:", err)
		os.Exit(1)
	}
	var router routers.Router
	if router, err = gorillamux.NewRouter(doc); err != nil {
		fmt.Fprintln(os.Stderr, "API description router:", err)
		os.Exit(1)
	}
	for _, ct := range []string{"application/x-asciicast", "application/octet-stream", "text/event-stream", "text/html"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.FileBodyDecoder)
	}
	openapi3filter.RegisterBodyDecoder("application/scim+json", openapi3filter.JSONBodyDecoder)
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}
	httpapi.ResponseCheck = func(r *http.Request, status int, header http.Header, body []byte) {
		p := r.URL.Path
		if !strings.HasPrefix(p, "/v1/") && !strings.HasPrefix(p, "/scim/") && p != "/healthz" && p != "/readyz" && p != "/metrics" {
			return // the web app and its redirect
		}
		req := r.Clone(context.Background())
		req.URL.Scheme, req.URL.Host = "http", r.Host
		route, params, err := router.FindRoute(req)
		if err != nil {
			if status < 400 {
				apiProblem("%s %s answered %d but is not in the description", r.Method, p, status)
			}
			return
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts},
			Status:                 status, Header: header, Body: io.NopCloser(bytes.NewReader(body)), Options: opts,
		}
		apiProblemsMu.Lock()
		apiChecked++
		apiProblemsMu.Unlock()
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			msg := err.Error()
			if len(msg) > 600 {
				msg = msg[:600] + "…"
			}
			apiProblem("%s %s → %d does not match the description: %s", r.Method, p, status, msg)
		}
	}
	code := m.Run()
	apiProblemsMu.Lock()
	defer apiProblemsMu.Unlock()
	if len(apiProblems) > 0 {
		fmt.Fprintf(os.Stderr, "\n%d answer(s) of %d checked do not match the API description:\n", len(apiProblems), apiChecked)
		for _, p := range apiProblems {
			fmt.Fprintln(os.Stderr, "  "+p)
		}
		code = 1
	} else if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "API description: %d answers checked, all match\n", apiChecked)
	}
	os.Exit(code)
}
