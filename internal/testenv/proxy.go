package testenv

import (
	"net/url"
	"testing"

	"github.com/mayflyhq/mayfly/internal/freezeproxy"
)

// ProxyTo puts a proxy that can cut or freeze connections in front of the
// server of dsn (a URL) for the rest of the test, and returns it with dsn
// parsed.
func ProxyTo(t testing.TB, dsn string) (*freezeproxy.Proxy, *url.URL) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p, err := freezeproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, u
}
