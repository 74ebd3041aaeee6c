package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/internal/freezeproxy"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// newFreezingProxy is a freezeproxy.Proxy to upstream, closed with the test.
func newFreezingProxy(t *testing.T, upstream string) *freezeproxy.Proxy {
	t.Helper()
	p, err := freezeproxy.New(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestIsolationHungTargetsEndToEnd runs the server with a PostgreSQL and
// a Redis target behind proxies that freeze just before 60 of their leases
// expire, alongside leases on the real PostgreSQL, MariaDB and Redis
// expiring right after: the healthy leases are removed within 1s of their
// expiry and their credentials refused; /readyz reports "degraded" with the
// overdue count and mayfly_leases_overdue agrees; the server stops within
// a few seconds with revocations hung; and after a restart with the
// targets answering again the leases left due are revoked.
func TestIsolationHungTargetsEndToEnd(t *testing.T) {
	ctx := context.Background()
	requireMariaDB(t)
	requireRedis(t)
	requirePG(t)
	pgURL, err := url.Parse(testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	pgProxy := newFreezingProxy(t, pgURL.Host)
	rdProxy := newFreezingProxy(t, testenv.RedisAddr())
	flakyURL := *pgURL
	flakyURL.Host = pgProxy.Addr()
	targets := fmt.Sprintf(`  - {name: local-maria, kind: mysql, dsn: %q, prefix: mfi_, grants: {readonly: {statements: ["GRANT SELECT ON test.* TO {{name}}"]}}}
  - {name: local-redis, kind: redis, address: %q, prefix: mfi_, grants: {read: {acl: "~app:* +@read"}}}
  - {name: flaky-pg, kind: postgres, dsn: %q, prefix: mfz_, grants: {readonly: {roles: [pg_read_all_data]}}}
  - {name: flaky-redis, kind: redis, address: %q, prefix: mfz_, grants: {read: {acl: "~app:* +@read"}}}
`, testenv.MySQLDSN(), testenv.RedisAddr(), flakyURL.String(), rdProxy.Addr())
	extra := `  - {name: iso, groups: [eng], targets: [local-maria, local-redis, flaky-pg, flaky-redis], grants: ["*"], max_duration: 1h}
`
	w := startWorld(t, worldOpts{targets: targets, extraYAML: extra})
	api := httpapi.NewClient("http://"+w.addr, w.tokens["alice"])

	issue := func(access string, exp time.Time) *httpapi.CredsView {
		t.Helper()
		target, grant, _ := strings.Cut(access, "/")
		var resp httpapi.CreateRequestResponse
		err := api.Do(ctx, "POST", "/v1/requests", nil, httpapi.CreateRequestBody{Target: target, Grant: grant,
			Duration: time.Until(exp).Round(time.Millisecond).String(), Reason: "isolation", Activate: true}, &resp)
		if err != nil {
			t.Fatalf("issue %s: %v", access, err)
		}
		if resp.Credentials == nil {
			t.Fatalf("issue %s: no credentials (state %s)", access, resp.State)
		}
		return resp.Credentials
	}
	const flakyN = 60
	T := time.Now().Add(4 * time.Second)
	var flaky []string
	for i := 0; i < flakyN; i++ {
		access := [2]string{"flaky-pg/readonly", "flaky-redis/read"}[i%2]
		flaky = append(flaky, issue(access, T).LeaseID)
	}
	var healthy []*httpapi.CredsView
	for _, access := range []string{"local-pg/readonly", "local-maria/readonly", "local-redis/read"} {
		for i := 0; i < 2; i++ {
			healthy = append(healthy, issue(access, T.Add(300*time.Millisecond)))
		}
	}
	for _, c := range healthy {
		if err := loginWith(ctx, c); err != nil {
			t.Fatalf("login on %s with the issued credential before expiry: %v", c.Target, err)
		}
	}
	if time.Until(T) < 300*time.Millisecond {
		t.Fatalf("issuing took too long: the leases expire in %s", time.Until(T))
	}
	// Wall-clock alignment, not synchronisation: the targets stop
	// answering just before their leases expire.
	time.Sleep(time.Until(T.Add(-200 * time.Millisecond)))
	pgProxy.Freeze()
	rdProxy.Freeze()

	for _, c := range healthy {
		var l leaseOut
		waitFor(t, "the healthy lease "+c.LeaseID+" to end", 20*time.Second, func() bool {
			l = w.lease(c.LeaseID)
			return l.EndedAt != nil
		})
		if lag := l.EndedAt.Sub(l.ExpiresAt); lag > time.Second {
			t.Errorf("lease on %s removed %s after its expiry; want within 1s", c.Target, lag)
		}
		if err := loginWith(ctx, c); err == nil {
			t.Errorf("login on %s with the credential of ended lease %s succeeded", c.Target, c.LeaseID)
		}
	}

	// Past the grace, the flaky leases are overdue: /readyz says degraded
	// (still 200: people need the broker to see and end access) and the
	// gauge agrees.
	var ready struct {
		Status        string `json:"status"`
		LeasesOverdue int    `json:"leases_overdue"`
	}
	code := 0
	waitFor(t, "/readyz to report the overdue leases", 15*time.Second, func() bool {
		resp, err := http.Get("http://" + w.addr + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		code = resp.StatusCode
		ready.Status, ready.LeasesOverdue = "", 0
		json.NewDecoder(resp.Body).Decode(&ready)
		return ready.Status == "degraded"
	})
	if code != http.StatusOK || ready.LeasesOverdue != flakyN {
		t.Errorf("/readyz = %d %+v; want 200, degraded with %d overdue", code, ready, flakyN)
	}
	if v := scrapeMetric(t, "http://"+w.addr+"/metrics", "mayfly_leases_overdue"); v != fmt.Sprint(flakyN) {
		t.Errorf("mayfly_leases_overdue = %s; want %d", v, flakyN)
	}

	// The stop is bounded with revocations hung on the frozen targets.
	start := time.Now()
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not stop within 30s")
	}
	w.cancel = nil
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("server took %s to stop with revocations hung; want at most 6s", took)
	} else {
		t.Logf("stop with revocations hung: %s", took)
	}

	// The targets answer again; after a restart nothing is left.
	pgProxy.Thaw()
	rdProxy.Thaw()
	w.startInProcess()
	for _, id := range flaky {
		waitFor(t, "lease "+id+" on a thawed target to be revoked", 30*time.Second, func() bool {
			return w.lease(id).State == "revoked"
		})
	}
}

// loginWith tries an issued credential on its target.
func loginWith(ctx context.Context, c *httpapi.CredsView) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch c.Kind {
	case "postgres":
		conn, err := pgLogin(ctx, credsOut{Username: c.Username, Host: c.Host, Port: c.Port, Database: c.Database}, c.Password)
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	case "mysql":
		db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s:%d)/", c.Username, c.Password, c.Host, c.Port))
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(ctx)
	case "redis":
		rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("%s:%d", c.Host, c.Port), Username: c.Username, Password: c.Password, MaxRetries: -1, DisableIdentity: true})
		defer rc.Close()
		if err := rc.Get(ctx, "app:x").Err(); err != nil && err != redis.Nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("no login for kind %q", c.Kind)
}

// scrapeMetric returns the value of an unlabelled metric on a Prometheus
// text page ("" when absent).
func scrapeMetric(t *testing.T, u, name string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return v
		}
	}
	return ""
}
