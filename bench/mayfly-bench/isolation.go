package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayflyhq/mayfly/internal/freezeproxy"
	"github.com/mayflyhq/mayfly/internal/httpapi"
)

type isoLease struct {
	id, target string
}

// benchIsolation measures how late leases on healthy targets are removed
// while many leases on targets that stopped answering are due: the same
// load twice in one run, first with every target answering, then with the
// two "flaky" targets (a PostgreSQL and a Redis behind a proxy) frozen just
// before their leases expire. Then it times the stop with attempts hung
// on the frozen targets, and a restart that finishes their revocations.
func benchIsolation(ctx context.Context, pool *pgxpool.Pool, bin, dir string) error {
	u, err := url.Parse(*pgDSN)
	if err != nil {
		return fmt.Errorf("parse -pg: %w", err)
	}
	pgFr, err := freezeproxy.New(u.Host)
	if err != nil {
		return err
	}
	defer pgFr.Close()
	rdFr, err := freezeproxy.New(*redisAddr)
	if err != nil {
		return err
	}
	defer rdFr.Close()
	fu := *u
	fu.Host = pgFr.Addr()
	extra := fmt.Sprintf(`  - {name: pg-flaky, kind: postgres, dsn: %q, prefix: mfx_, grants: {readonly: {roles: [pg_read_all_data]}}}
  - {name: cache-flaky, kind: redis, address: %q, prefix: mfx_, grants: {read: {acl: "~app:* +@read"}}}`, fu.String(), rdFr.Addr())
	sub := filepath.Join(dir, "isolation")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return err
	}
	db := filepath.Join(sub, "mayfly.db")
	b, err := startBrokerWith(bin, sub, db, *revokeConc, extra)
	if err != nil {
		return err
	}
	defer b.stop()
	defer dropBench(context.Background(), pool, `mfx\_%`)

	fmt.Printf("## Isolation: %d leases due on targets that stop answering, %d on healthy targets expiring meanwhile\n\n", *isolationN, *isolationOK)
	fmt.Println("Removal lag (ended_at − expires_at) of the leases on the healthy PostgreSQL, MariaDB and Redis:")
	fmt.Println()
	fmt.Println("| the other two targets | healthy leases | removed within 1 s | p50 | p99 | max |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, freeze := range []bool{false, true} {
		if err := isolationPhase(ctx, b, []*freezeproxy.Proxy{pgFr, rdFr}, freeze); err != nil {
			return err
		}
	}
	fmt.Println()
	overdue, err := scrapeGauge("http://"+b.addr+"/metrics", "mayfly_leases_overdue")
	if err != nil {
		return err
	}
	ready, err := http.Get("http://" + b.addr + "/readyz")
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(ready.Body)
	ready.Body.Close()
	fmt.Printf("- with the flaky targets frozen: `mayfly_leases_overdue` %s; `/readyz` %d %s\n", overdue, ready.StatusCode, strings.TrimSpace(string(body)))

	start := time.Now()
	b.stop()
	fmt.Printf("- stop (SIGINT → exit) with revocations hung on the frozen targets: %s\n", time.Since(start).Round(time.Millisecond))

	// The frozen targets answer again; a restart finishes their leases.
	pgFr.Thaw()
	rdFr.Thaw()
	start = time.Now()
	b, err = startBrokerWith(bin, sub, db, *revokeConc, extra)
	if err != nil {
		return err
	}
	defer b.stop()
	for _, target := range []string{"pg-flaky", "cache-flaky"} {
		for {
			var ls []httpapi.LeaseView
			if err := b.client.Do(ctx, "GET", "/v1/leases", url.Values{"target": {target}, "active": {"true"}, "limit": {"1"}}, nil, &ls); err != nil {
				return err
			}
			if len(ls) == 0 {
				break
			}
			if time.Since(start) > 3*time.Minute {
				return fmt.Errorf("isolation: leases on %s still live 3 minutes after the restart", target)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	fmt.Printf("- restart with the flaky targets answering again → every lease on them revoked: %s\n\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// isolationPhase issues isolationN leases on the flaky targets expiring at
// T and isolationOK on the healthy ones expiring over the 10 s after T,
// freezes the flaky targets just before T when freeze is set, and prints
// the removal lag of the healthy leases.
func isolationPhase(ctx context.Context, b *broker, frs []*freezeproxy.Proxy, freeze bool) error {
	type job struct {
		target, grant string
		exp           time.Time
	}
	n, m := *isolationN, *isolationOK
	T := time.Now().Add(time.Duration(n+m)*3*time.Millisecond + 3*time.Second)
	var jobs []job
	for i := 0; i < n; i++ {
		jobs = append(jobs, [2]job{{"pg-flaky", "readonly", T}, {"cache-flaky", "read", T}}[i%2])
	}
	healthy := [3][2]string{{"pg", "readonly"}, {"maria", "readonly"}, {"cache", "read"}}
	spread := 10 * time.Second
	for i := 0; i < m; i++ {
		h := healthy[i%3]
		jobs = append(jobs, job{h[0], h[1], T.Add(300*time.Millisecond + spread*time.Duration(i)/time.Duration(max(m, 1)))})
	}
	ch := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	var ok []isoLease
	var last time.Time
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				var resp httpapi.CreateRequestResponse
				err := b.client.Do(ctx, "POST", "/v1/requests", nil, httpapi.CreateRequestBody{
					Target: j.target, Grant: j.grant, Duration: time.Until(j.exp).Round(time.Millisecond).String(), Reason: "bench", Activate: true}, &resp)
				if err == nil && resp.Credentials == nil {
					err = fmt.Errorf("request %s not activated (state %s)", resp.ID, resp.State)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil && !strings.HasSuffix(j.target, "-flaky") {
					ok = append(ok, isoLease{resp.Credentials.LeaseID, j.target})
					if j.exp.After(last) {
						last = j.exp
					}
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("isolation: issue: %w", firstErr)
	}
	if time.Until(T) < 300*time.Millisecond {
		return fmt.Errorf("isolation: issuing %d leases left %s before their expiry; lower -isolation-n", len(jobs), time.Until(T))
	}
	time.Sleep(time.Until(T.Add(-200 * time.Millisecond)))
	if freeze {
		for _, f := range frs {
			f.Freeze()
		}
	}
	time.Sleep(time.Until(last.Add(3 * time.Second)))
	var lags []time.Duration
	within, missing := 0, 0
	for _, l := range ok {
		var v httpapi.LeaseView
		if err := b.client.Do(ctx, "GET", "/v1/leases/"+l.id, nil, nil, &v); err != nil {
			return err
		}
		if v.EndedAt == nil {
			missing++
			lags = append(lags, time.Since(v.ExpiresAt))
			continue
		}
		lag := v.EndedAt.Sub(v.ExpiresAt)
		lags = append(lags, lag)
		if lag <= time.Second {
			within++
		}
	}
	state := "answering"
	if freeze {
		state = fmt.Sprintf("frozen with %d leases due", n)
	}
	note := ""
	if missing > 0 {
		note = fmt.Sprintf(" (%d not removed 3 s after the last expiry)", missing)
	}
	fmt.Printf("| %s | %d | %d%s | %s | %s | %s |\n", state, len(ok), within, note, ms(pct(lags, 0.5)), ms(pct(lags, 0.99)), ms(pct(lags, 1)))
	return nil
}

// scrapeGauge returns the value of an unlabelled metric from a Prometheus
// text page.
func scrapeGauge(u, name string) (string, error) {
	resp, err := http.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s not in %s", name, u)
}
