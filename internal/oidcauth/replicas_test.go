package oidcauth

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// onStore returns two replicas of f's service, each serving at its own
// address, both keeping logins in progress in st.
func (f *fixture) onStore(t *testing.T, st mayfly.Store) (a, b *httptest.Server) {
	t.Helper()
	o := *f.svc.o.Config
	for _, srv := range []**httptest.Server{&a, &b} {
		svc := New(Options{Config: &o, Sessions: f.sess, Store: st})
		*srv = httptest.NewServer(svc.Handler())
		t.Cleanup((*srv).Close)
	}
	return a, b
}

// onReplica points u at the replica serving at base.
func onReplica(t *testing.T, u *url.URL, base string) string {
	t.Helper()
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	v := *u
	v.Host = b.Host
	return v.String()
}

// TestLoginFinishesOnAnotherReplica: with the store keeping logins in
// progress, a browser login started on one replica finishes on another
// (a load balancer without sticky sessions), once; a CLI nonce issued by
// one is accepted by the other, once. Without a store (memory only) the
// other replica does not know the login.
func TestLoginFinishesOnAnotherReplica(t *testing.T) {
	f := newFixture(t, nil)
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, b := f.onStore(t, st)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	cb := browse(t, a.URL+"/v1/auth/login?return=/app/")
	resp, err := c.Get(onReplica(t, cb, b.URL))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/app/" {
		t.Fatalf("callback on the other replica: %s %s; want 303 to /app/", resp.Status, body)
	}
	resp, err = c.Get(cb.String()) // the same state, on the first replica
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "state unknown") {
		t.Errorf("callback replayed on the first replica: %s %s; want 401 for the state", resp.Status, body)
	}

	// CLI: the nonce from a, the session from b, once.
	fa := &fixture{p: f.p, api: a}
	n := fa.nonce(t)
	in := f.cliCode(t, n)
	fb := &fixture{p: f.p, api: b}
	if code, body := fb.postSession(t, in); code != http.StatusOK {
		t.Fatalf("session on the other replica: %d %s; want 200", code, body)
	}
	in2 := f.cliCode(t, n)
	if code, body := fa.postSession(t, in2); code != http.StatusUnauthorized || !strings.Contains(body, "nonce") {
		t.Errorf("nonce used again on the first replica: %d %s; want 401 for the nonce", code, body)
	}

	// Without the store, the other replica does not know the state.
	mem := *f.svc.o.Config
	ma := httptest.NewServer(New(Options{Config: &mem, Sessions: f.sess}).Handler())
	t.Cleanup(ma.Close)
	mb := httptest.NewServer(New(Options{Config: &mem, Sessions: f.sess}).Handler())
	t.Cleanup(mb.Close)
	cb = browse(t, ma.URL+"/v1/auth/login?return=/app/")
	resp, err = c.Get(onReplica(t, cb, mb.URL))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("memory-only: callback on the other replica: %s; want 401", resp.Status)
	}
}

func (f *fixture) postSession(t *testing.T, in SessionInput) (int, string) {
	t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(f.api.URL+"/v1/auth/oidc/session", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStoredStatesRoundTrip: what a replica stores of a login in
// progress reads back whole on another, a refusal's code included.
func TestStoredStatesRoundTrip(t *testing.T) {
	p := pending{nonce: "n", verifier: "v", redirect: "https://a/cb", returnTo: "/app/", poll: "p", expires: base}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var q pending
	if err := json.Unmarshal(b, &q); err != nil || q != p {
		t.Fatalf("pending round trip = %+v, %v; want %+v", q, err, p)
	}
	r := polled{login: Login{User: "alice", Groups: []string{"eng"}, Method: MethodCLI}, code: "BCDF-GHJK", expires: base,
		err: errLogin("the provider answered access_denied")}
	b, err = json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var s polled
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.login.User != "alice" || s.code != r.code || !s.expires.Equal(base) || s.err == nil ||
		mayfly.ErrorCode(s.err) != mayfly.ErrorCode(r.err) || mayfly.ErrorMessage(s.err) != mayfly.ErrorMessage(r.err) {
		t.Fatalf("polled round trip = %+v; want %+v", s, r)
	}
}

var base = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
