package scim

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// benchUsers returns a handler over a directory of n users.
func benchUsers(b *testing.B, n int) http.Handler {
	b.Helper()
	dir := newMemDirectory()
	now := time.Now().UTC()
	for i := range n {
		u := &User{ID: fmt.Sprintf("id-%06d", i), UserName: fmt.Sprintf("user%06d", i), ExternalID: fmt.Sprintf("ext-%d", i),
			Active: true, Emails: []string{fmt.Sprintf("user%06d@example.com", i)}, Created: now, LastModified: now, Version: 1}
		if err := dir.CreateUser(context.Background(), u); err != nil {
			b.Fatal(err)
		}
	}
	return NewHandler(dir, tokenHash(testToken), slog.New(slog.DiscardHandler))
}

func benchGet(b *testing.B, h http.Handler, target string) {
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", target, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkFindByUserName is the lookup every identity provider makes
// before creating a user.
func BenchmarkFindByUserName(b *testing.B) {
	h := benchUsers(b, 1000)
	benchGet(b, h, "/scim/v2/Users?filter="+url.QueryEscape(`userName eq "user000500@example.com"`))
}

// BenchmarkFilterExternalID filters the whole directory.
func BenchmarkFilterExternalID(b *testing.B) {
	h := benchUsers(b, 1000)
	benchGet(b, h, "/scim/v2/Users?filter="+url.QueryEscape(`externalId eq "ext-500"`))
}

func BenchmarkParseFilter(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseFilter(`emails[type eq "work" and value co "@example.com"] or not (active eq false)`); err != nil {
			b.Fatal(err)
		}
	}
}
