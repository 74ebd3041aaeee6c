// Command mayfly-bench measures Mayfly against the raw operations it wraps,
// in one run against the same PostgreSQL: issue latency and throughput
// through the HTTP API vs a bare CREATE ROLE, revocation throughput and lag
// for leases expiring in the same second vs a bare DROP ROLE loop, the
// removal lag on healthy targets while targets that stopped answering have
// hundreds of leases due vs the same load with every target answering, and
// start-up time and memory with a large store; with -store postgres
// -replicas N, the same against N servers sharing a PostgreSQL store, the
// floor of the one-call issue beside it (floor.go: what no broker keeping
// intent before action can avoid), and a failover: a replica SIGKILLed
// while leases it claimed are due.
//
// Usage: go run ./bench/mayfly-bench [-quick] (see -help). It builds and
// starts the mayfly binary itself.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayflyhq/mayfly/internal/connector/mark"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

var (
	pgDSN         = flag.String("pg", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "admin DSN of the PostgreSQL to measure against")
	storePG       = flag.String("store-pg", "", "with -store postgres: admin DSN of the PostgreSQL server that holds the store's database (default: the -pg server, beside the target)")
	latencyN      = flag.Int("latency-n", 300, "issues for the latency measurement")
	latencyB      = flag.Int("latency-block", 1, "operations of one kind in a row in the latency measurement (1: strictly interleaved, each call after the others; more: warm back-to-back runs, still rotated between kinds)")
	idleN         = flag.Int("idle-n", 20, "issues in the after-idle latency measurement, each after -idle-gap with nothing running, as between a person's calls (and as many bare statements, each after the same gap)")
	idleGap       = flag.Duration("idle-gap", 1500*time.Millisecond, "idle time before each call of the after-idle latency measurement")
	throughFor    = flag.Duration("throughput-for", 5*time.Second, "how long each throughput measurement runs")
	throughRounds = flag.Int("throughput-rounds", 5, "alternating rounds the throughput measurements are split into")
	clients       = flag.Int("clients", 8, "concurrent clients for throughput")
	revokeN       = flag.Int("revoke-n", 10000, "leases expiring in the same second")
	revokeConc    = flag.Int("revoke-conc", 16, "revocation concurrency (broker and bare loop)")
	startupN      = flag.Int("startup-rows", 1000000, "lease rows in the store for the start-up measurement (0 skips)")
	skip          = flag.String("skip", "", "comma-separated parts to skip: latency,idle,throughput,revoke,startup,suspend,reconcile,isolation")
	isolationN    = flag.Int("isolation-n", 500, "due leases on the targets that stop answering, in the isolation measurement")
	isolationOK   = flag.Int("isolation-healthy", 300, "leases on the healthy PostgreSQL, MariaDB and Redis expiring meanwhile, in the isolation measurement")
	suspendN      = flag.Int("suspend-n", 100, "leases (spread over PostgreSQL, MariaDB and Redis) held by the suspended user")
	reconcileN    = flag.Int("reconcile-n", 10000, "managed accounts on the target for the reconcile measurement")
	mysqlDSN      = flag.String("mysql", "root@tcp(127.0.0.1:3306)/", "admin DSN of the MariaDB for the suspension measurement")
	redisAddr     = flag.String("redis", "127.0.0.1:6379", "Redis address for the suspension measurement")
	storeKind     = flag.String("store", "sqlite", "the broker's store: sqlite, or postgres (database "+storeDB+" on the -store-pg server, by default the -pg one, made afresh; the isolation and startup parts are skipped)")
	replicas      = flag.Int("replicas", 1, "with -store postgres: server processes sharing the store; API calls go to each in turn")
	toFirst       = flag.Bool("to-first", false, "with -replicas > 1: send every API call to the first replica instead of each in turn (the others still share the store)")
	failoverN     = flag.Int("failover-n", 1000, "with -replicas > 1: leases expiring together while one replica is killed, in the failover measurement")
)

func main() {
	flag.Parse()
	ctx := context.Background()
	if *floorServe != "" {
		if err := serveFloor(ctx, *floorServe); err != nil {
			fmt.Fprintln(os.Stderr, "mayfly-bench: floor:", err)
			os.Exit(1)
		}
		return
	}
	if err := runAll(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "mayfly-bench:", err)
		os.Exit(1)
	}
}

func skipped(part string) bool {
	for _, s := range strings.Split(*skip, ",") {
		if s == part {
			return true
		}
	}
	return false
}

type broker struct {
	leaver *httpapi.Client
	burst  *httpapi.Client
	cmd    *exec.Cmd
	addr   string
	client *httpapi.Client
	dir    string
	// The other replicas (-replicas), sharing the store.
	peers     []*exec.Cmd
	peerAddrs []string
}

// storeDB is the database of the PostgreSQL store (-store postgres).
const storeDB = "mayfly_bench_store"

// storeLine is the configuration's store line.
func storeLine(dbPath string, conns int) string {
	if *storeKind != "postgres" {
		return fmt.Sprintf("store: {sqlite: %s}", dbPath)
	}
	return fmt.Sprintf("store: {postgres: {dsn: %q, max_conns: %d}}", storeDSN(), conns)
}

// storeServerDSN is the admin DSN of the server holding the PostgreSQL
// store: -store-pg, or else the target's.
func storeServerDSN() string {
	if *storePG != "" {
		return *storePG
	}
	return *pgDSN
}

// storeDSN is the DSN of the PostgreSQL store's database.
func storeDSN() string {
	u, err := url.Parse(storeServerDSN())
	if err != nil {
		panic(err)
	}
	u.Path = "/" + storeDB
	return u.String()
}

// freshDatabase drops and creates database name on the server of the
// PostgreSQL store.
func freshDatabase(ctx context.Context, name string) error {
	c, err := pgx.Connect(ctx, storeServerDSN())
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return err
	}
	_, err = c.Exec(ctx, "CREATE DATABASE "+name)
	return err
}

// roundRobin sends each request to the next of addrs in turn (with
// -to-first, to the first).
type roundRobin struct {
	addrs []string
	n     atomic.Uint64
	next  http.RoundTripper
}

func (r *roundRobin) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	i := r.n.Add(1) % uint64(len(r.addrs))
	if *toFirst {
		i = 0
	}
	req.URL.Host = r.addrs[i]
	req.Host = req.URL.Host
	return r.next.RoundTrip(req)
}

func buildBinary(dir string) (string, error) {
	bin := filepath.Join(dir, "mayfly")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/mayfly")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	return bin, cmd.Run()
}

func freePort() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().String()
}

func startBroker(bin, dir, dbPath string, conc int) (*broker, error) {
	return startBrokerWith(bin, dir, dbPath, conc, "")
}

// startBrokerWith starts a broker whose configuration has the extra
// targets (YAML list items) after the usual ones.
func startBrokerWith(bin, dir, dbPath string, conc int, extraTargets string) (*broker, error) {
	tok := make([]byte, 24)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	sum := sha256.Sum256([]byte(token))
	lsum := sha256.Sum256([]byte(token + "-leaver"))
	bsum := sha256.Sum256([]byte(token + "-burst"))
	addr := freePort()
	cfg := fmt.Sprintf(`listen: %s
%s
users:
  - {name: bench, groups: [eng], token_sha256: "%s"}
  - {name: leaver, groups: [eng], token_sha256: "%s"}
  - {name: burst, groups: [eng], token_sha256: "%s"}
admins: {users: [bench]}
instance_key_env: MAYFLY_BENCH_INSTANCE_KEY
scheduler: {concurrency: %d}
log: {format: text, level: warn}
targets:
  - name: pg
    kind: postgres
    dsn: %q
    max_conns: %d
    grants:
      readonly: {roles: [pg_read_all_data]}
  - {name: maria, kind: mysql, dsn: %q, prefix: mfb_, grants: {readonly: {statements: ["GRANT SELECT ON test.* TO {{name}}"]}}}
  - {name: cache, kind: redis, address: %q, prefix: mfb_, grants: {read: {acl: "~app:* +@read"}}}
%s
policies:
  - {name: bench, groups: [eng], targets: ["*"], grants: ["*"], max_duration: 2h, approvals: 0}
reconcile: {interval: 0s}
`, addr, storeLine(dbPath, conc+*clients), hex.EncodeToString(sum[:]), hex.EncodeToString(lsum[:]), hex.EncodeToString(bsum[:]), conc, *pgDSN, conc+*clients, *mysqlDSN, *redisAddr, extraTargets)
	path := filepath.Join(dir, "mayfly.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "server", "--config", path)
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "MAYFLY_PPROF_ADDR="+os.Getenv("BENCH_PPROF_ADDR"), "MAYFLY_BENCH_INSTANCE_KEY="+benchInstanceKey)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &broker{cmd: cmd, addr: addr, client: httpapi.NewClient("http://"+addr, token), dir: dir,
		leaver: httpapi.NewClient("http://"+addr, token+"-leaver"), burst: httpapi.NewClient("http://"+addr, token+"-burst")}
	b.client.HTTP.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	if err := waitReady(addr); err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	if *storeKind == "postgres" {
		for i := 1; i < *replicas; i++ {
			a := freePort()
			p := filepath.Join(dir, fmt.Sprintf("mayfly-%d.yaml", i))
			if err := os.WriteFile(p, []byte(strings.Replace(cfg, "listen: "+addr, "listen: "+a, 1)), 0o600); err != nil {
				b.stop()
				return nil, err
			}
			c := exec.Command(bin, "server", "--config", p)
			c.Stderr, c.Env = os.Stderr, cmd.Env
			if err := c.Start(); err != nil {
				b.stop()
				return nil, err
			}
			b.peers, b.peerAddrs = append(b.peers, c), append(b.peerAddrs, a)
			if err := waitReady(a); err != nil {
				b.stop()
				return nil, err
			}
		}
		if len(b.peers) > 0 {
			rr := &roundRobin{addrs: append([]string{addr}, b.peerAddrs...), next: &http.Transport{MaxIdleConnsPerHost: 64}}
			for _, c := range []*httpapi.Client{b.client, b.leaver, b.burst} {
				c.HTTP = &http.Client{Transport: rr}
			}
		}
	}
	return b, nil
}

func waitReady(addr string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("broker at %s did not become ready", addr)
}

func (b *broker) stop() {
	for _, c := range append([]*exec.Cmd{b.cmd}, b.peers...) {
		if c.ProcessState == nil {
			c.Process.Signal(os.Interrupt)
		}
	}
	for _, c := range append([]*exec.Cmd{b.cmd}, b.peers...) {
		if c.ProcessState == nil {
			c.Wait()
		}
	}
}

// issue asks for access with immediate activation: one API round trip from
// request to credential in hand.
func (b *broker) issue(ctx context.Context, d time.Duration) (*httpapi.CredsView, error) {
	return b.issueAs(ctx, b.client, d)
}

func (b *broker) issueAs(ctx context.Context, c *httpapi.Client, d time.Duration) (*httpapi.CredsView, error) {
	var resp httpapi.CreateRequestResponse
	err := c.Do(ctx, "POST", "/v1/requests", nil, httpapi.CreateRequestBody{
		Target: "pg", Grant: "readonly", Duration: d.String(), Reason: "bench", Activate: true,
	}, &resp)
	if err != nil {
		return nil, err
	}
	if resp.Credentials == nil {
		return nil, fmt.Errorf("request %s not activated (state %s)", resp.ID, resp.State)
	}
	return resp.Credentials, nil
}

// issueTwoCalls is the CLI's path: request, then creds.
func (b *broker) issueTwoCalls(ctx context.Context, d time.Duration) error {
	var resp httpapi.CreateRequestResponse
	if err := b.client.Do(ctx, "POST", "/v1/requests", nil, httpapi.CreateRequestBody{
		Target: "pg", Grant: "readonly", Duration: d.String(), Reason: "bench",
	}, &resp); err != nil {
		return err
	}
	var c httpapi.CredsView
	return b.client.Do(ctx, "POST", "/v1/requests/"+resp.ID+"/activate", nil, nil, &c)
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

var seq atomic.Int64

func bareName() string { return fmt.Sprintf("mf_bench_bare_%d_%d", os.Getpid(), seq.Add(1)) }

func bareCreate(ctx context.Context, c *pgx.Conn, verifier bool) (string, time.Duration, error) {
	name := bareName()
	pw := postgres.GeneratePassword()
	lit := "'" + pw + "'"
	if verifier {
		salt := make([]byte, 16)
		rand.Read(salt)
		lit = "'" + postgres.SCRAMVerifier(pw, salt, 1) + "'"
	}
	q := fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s VALID UNTIL '%s' CONNECTION LIMIT 10 IN ROLE pg_read_all_data",
		pgx.Identifier{name}.Sanitize(), lit, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	start := time.Now()
	_, err := c.Exec(ctx, q)
	return name, time.Since(start), err
}

func dropBench(ctx context.Context, pool *pgxpool.Pool, like string) {
	rows, err := pool.Query(ctx, "SELECT rolname FROM pg_roles WHERE rolname LIKE $1", like)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	var wg sync.WaitGroup
	ch := make(chan string)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range ch {
				pool.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{n}.Sanitize())
			}
		}()
	}
	for _, n := range names {
		ch <- n
	}
	close(ch)
	wg.Wait()
}

func runAll(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "mayfly-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := buildBinary(dir)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	pool, err := pgxpool.New(ctx, *pgDSN+"&pool_max_conns=32")
	if err != nil {
		return err
	}
	defer pool.Close()
	var version string
	pool.QueryRow(ctx, "SHOW server_version").Scan(&version)
	fmt.Printf("# mayfly-bench %s, PostgreSQL %s\n\n", time.Now().UTC().Format(time.RFC3339), version)
	defer dropBench(context.Background(), pool, "mf_bench%")
	defer dropBench(context.Background(), pool, "mf_burst%")

	var autovacuum string
	pool.QueryRow(ctx, "SHOW autovacuum").Scan(&autovacuum)
	if autovacuum != "on" {
		fmt.Printf("autovacuum is %s on this server: the role catalogs are vacuumed before each part, or the dead rows of every run's created and dropped roles would slow the next (pg_authid grew to 339 MB over a day of runs without it)\n\n", autovacuum)
	}

	storeDesc := "SQLite store"
	if *storeKind == "postgres" {
		if err := freshDatabase(ctx, storeDB); err != nil {
			return fmt.Errorf("make the store's database: %w", err)
		}
		where := "on the same server as the target"
		if *storePG != "" {
			where = "on the -store-pg server"
		}
		storeDesc = fmt.Sprintf("PostgreSQL store (database %s %s), %d replica(s)", storeDB, where, max(*replicas, 1))
		if *toFirst && *replicas > 1 {
			storeDesc += ", every API call to the first"
		}
	} else if *storeKind != "sqlite" {
		return fmt.Errorf("-store %q: want sqlite or postgres", *storeKind)
	}
	fmt.Printf("Broker: %s\n\n", storeDesc)
	b, err := startBroker(bin, dir, filepath.Join(dir, "mayfly.db"), *revokeConc)
	if err != nil {
		return err
	}
	defer b.stop()

	for _, part := range []struct {
		name string
		run  func() error
	}{
		{"latency", func() error { return withHeadStats(b, func() error { return benchLatency(ctx, pool, b) }) }},
		{"idle", func() error { return benchIdle(ctx, pool, b) }},
		{"throughput", func() error { return withHeadStats(b, func() error { return benchThroughput(ctx, pool, b) }) }},
		{"revoke", func() error { return withHeadStats(b, func() error { return benchRevoke(ctx, pool, b) }) }},
		{"suspend", func() error { return benchSuspend(ctx, b) }},
		{"reconcile", func() error { return benchReconcile(ctx, pool, b) }},
		{"failover", func() error { return benchFailover(ctx, pool, b) }},
	} {
		if skipped(part.name) {
			continue
		}
		if autovacuum != "on" {
			if _, err := pool.Exec(ctx, "VACUUM pg_catalog.pg_authid, pg_catalog.pg_auth_members, pg_catalog.pg_shdepend, pg_catalog.pg_shdescription"); err != nil {
				return fmt.Errorf("vacuum the role catalogs: %w", err)
			}
		}
		if err := part.run(); err != nil {
			return err
		}
	}
	b.stop()
	if *storeKind == "postgres" {
		return nil // the parts below start brokers of their own on SQLite
	}
	if !skipped("isolation") {
		if err := benchIsolation(ctx, pool, bin, dir); err != nil {
			return err
		}
	}
	if !skipped("startup") && *startupN > 0 {
		if err := benchStartup(ctx, bin, dir); err != nil {
			return err
		}
	}
	return nil
}

func benchLatency(ctx context.Context, pool *pgxpool.Pool, b *broker) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	var plain, verif, one, two, rt, low, lowRec []time.Duration
	var fl *floor
	if *storeKind == "postgres" {
		if fl, err = startFloor(ctx, *replicas); err != nil {
			return err
		}
		defer fl.stop()
	}
	block := max(*latencyB, 1)
	// f returns the time it measured itself (the bare statements time the
	// statement only), or 0 to be timed as a whole.
	timed := func(n int, into *[]time.Duration, f func() (time.Duration, error)) error {
		for range n {
			start := time.Now()
			d, err := f()
			if err != nil {
				return err
			}
			if d == 0 {
				d = time.Since(start)
			}
			*into = append(*into, d)
		}
		return nil
	}
	for done := 0; done < *latencyN; done += block {
		n := min(block, *latencyN-done)
		ops := []struct {
			into *[]time.Duration
			f    func() (time.Duration, error)
		}{
			{&plain, func() (time.Duration, error) { _, d, err := bareCreate(ctx, conn.Conn(), false); return d, err }},
			{&verif, func() (time.Duration, error) { _, d, err := bareCreate(ctx, conn.Conn(), true); return d, err }},
			{&one, func() (time.Duration, error) { _, err := b.issue(ctx, time.Hour); return 0, err }},
			{&two, func() (time.Duration, error) { return 0, b.issueTwoCalls(ctx, time.Hour) }},
			{&rt, func() (time.Duration, error) { return 0, b.client.Do(ctx, "GET", "/v1/whoami", nil, nil, nil) }},
		}
		if fl != nil {
			ops = append(ops, struct {
				into *[]time.Duration
				f    func() (time.Duration, error)
			}{&low, func() (time.Duration, error) { _, err := fl.issue(ctx, time.Hour, ""); return 0, err }})
			ops = append(ops, struct {
				into *[]time.Duration
				f    func() (time.Duration, error)
			}{&lowRec, func() (time.Duration, error) { _, err := fl.issue(ctx, time.Hour, withRecords); return 0, err }})
		}
		for _, op := range ops {
			if err := timed(n, op.into, op.f); err != nil {
				return err
			}
		}
	}
	conn.Release()
	// Time spent inside the server on the one-call issue, from its own histogram.
	var serverMean float64
	if resp, err := http.Get("http://" + b.addr + "/metrics"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var sum, count float64
		for _, line := range strings.Split(string(body), "\n") {
			if strings.Contains(line, `route="POST /v1/requests"`) {
				var v float64
				if strings.HasPrefix(line, "mayfly_api_request_duration_seconds_sum") {
					fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
					sum += v
				} else if strings.HasPrefix(line, "mayfly_api_request_duration_seconds_count") {
					fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
					count += v
				}
			}
		}
		if count > 0 {
			serverMean = sum / count
		}
	}
	mode := "strictly interleaved"
	if block > 1 {
		mode = fmt.Sprintf("in rotating blocks of %d", block)
	}
	fmt.Printf("## Issue latency (%d each, %s, one client)\n\n", *latencyN, mode)
	rows := []timedRow{
		{"bare `CREATE ROLE … PASSWORD 'plain'` (server hashes, 4096 iterations)", plain},
		{"bare `CREATE ROLE … PASSWORD '<SCRAM verifier>'` (1 iteration)", verif},
		{"Mayfly issue, one API call (request + auto-approval + account + credential)", one},
		{"Mayfly issue, two API calls (`request` then `creds`)", two},
		{"for scale: one authenticated API round trip (`GET /v1/whoami`)", rt},
	}
	if fl != nil {
		rows = append(rows,
			timedRow{"floor of the one-call issue: an HTTP call to a bare process (one a replica, each in turn) that commits the intent to the store while the role is created, then commits the role (floor.go)", low},
			timedRow{"the floor with the records asked of a broker: the request, the lease and three chained audit events in the intent's transaction (Mayfly's store)", lowRec})
	}
	printLatencies(0.99, rows)
	if fl != nil {
		fmt.Printf("\nMayfly's one-call issue / its floor, p50: %.2f×; / the floor with the records: %.2f×\n",
			float64(pct(one, 0.5))/float64(pct(low, 0.5)), float64(pct(one, 0.5))/float64(pct(lowRec, 0.5)))
	}
	fmt.Printf("\nMean time inside the server per `POST /v1/requests` (its own latency histogram, both kinds of call): %s\n\n", ms(time.Duration(serverMean*1e9)))
	return nil
}

// benchIdle times the one-call issue and the bare server-hashed CREATE ROLE
// each after idleGap with nothing running, as a person's calls come: the
// processes, their connections and the idle cores all go cold in between,
// which the interleaved latency measurement, a call every few
// milliseconds, never lets happen.
func benchIdle(ctx context.Context, pool *pgxpool.Pool, b *broker) error {
	if *idleN <= 0 {
		return nil
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	var fl *floor
	if *storeKind == "postgres" {
		if fl, err = startFloor(ctx, *replicas); err != nil {
			return err
		}
		defer fl.stop()
	}
	var plain, one, rt, low, lowRec []time.Duration
	for range *idleN {
		time.Sleep(*idleGap)
		_, d, err := bareCreate(ctx, conn.Conn(), false)
		if err != nil {
			return err
		}
		plain = append(plain, d)
		time.Sleep(*idleGap)
		start := time.Now()
		if _, err := b.issue(ctx, time.Hour); err != nil {
			return err
		}
		one = append(one, time.Since(start))
		time.Sleep(*idleGap)
		start = time.Now()
		if err := b.client.Do(ctx, "GET", "/v1/whoami", nil, nil, nil); err != nil {
			return err
		}
		rt = append(rt, time.Since(start))
		if fl == nil {
			continue
		}
		for _, f := range []struct {
			into  *[]time.Duration
			query string
		}{{&low, ""}, {&lowRec, withRecords}} {
			time.Sleep(*idleGap)
			start = time.Now()
			if _, err := fl.issue(ctx, time.Hour, f.query); err != nil {
				return err
			}
			*f.into = append(*f.into, time.Since(start))
		}
	}
	fmt.Printf("## Issue latency after idle (%d each, each call after %s idle, one client)\n\n", *idleN, *idleGap)
	rows := []timedRow{
		{"bare `CREATE ROLE … PASSWORD 'plain'` (server hashes, 4096 iterations)", plain},
		{"Mayfly issue, one API call", one},
		{"for scale: one authenticated API round trip (`GET /v1/whoami`)", rt},
	}
	if fl != nil {
		rows = append(rows, timedRow{"floor of the one-call issue (as in the latency part)", low},
			timedRow{"the floor with the records asked of a broker (as in the latency part)", lowRec})
	}
	printLatencies(0.9, rows)
	fmt.Println()
	return nil
}

// timedRow is one operation of a latency table and its times.
type timedRow struct {
	name string
	ds   []time.Duration
}

// printLatencies prints a latency table: each row's p50, its percentile
// tail (0.99: p99) and its p50's ratio to the first row's, the bare
// statement's.
func printLatencies(tail float64, rows []timedRow) {
	fmt.Printf("| operation | p50 | p%g | p50 / bare plain |\n", tail*100)
	fmt.Println("|---|---|---|---|")
	base := pct(rows[0].ds, 0.5)
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s | %.2f× |\n", r.name, ms(pct(r.ds, 0.5)), ms(pct(r.ds, tail)), float64(pct(r.ds, 0.5))/float64(base))
	}
}

// headStats sums mayfly_store_audit_head_total over every replica's
// /metrics, by how; nil without it (the SQLite store).
func headStats(b *broker) map[string]float64 {
	var out map[string]float64
	for _, addr := range append([]string{b.addr}, b.peerAddrs...) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			how, rest, ok := strings.Cut(strings.TrimPrefix(line, `mayfly_store_audit_head_total{how="`), `"} `)
			if !ok || !strings.HasPrefix(line, "mayfly_store_audit_head_total") {
				continue
			}
			var v float64
			fmt.Sscan(rest, &v)
			if out == nil {
				out = map[string]float64{}
			}
			out[how] += v
		}
	}
	return out
}

// withHeadStats runs part and then says how the store's appending
// transactions of all replicas chained their audit events meanwhile
// (docs/ha.md), when the store counts it.
func withHeadStats(b *broker, part func() error) error {
	before := headStats(b)
	if err := part(); err != nil {
		return err
	}
	after := headStats(b)
	if after == nil {
		return nil
	}
	d := func(how string) float64 { return after[how] - before[how] }
	fmt.Printf("Store transactions that appended audit events meanwhile, all replicas: %.0f chained by the database as they committed, %.0f locked and read the head first.\n\n",
		d("chained"), d("locked"))
	return nil
}

func benchThroughput(ctx context.Context, pool *pgxpool.Pool, b *broker) error {
	// count runs f on every client for d and returns the operations done
	// and the time they took.
	count := func(d time.Duration, f func(context.Context) error) (int64, time.Duration, error) {
		var n atomic.Int64
		var firstErr atomic.Value
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		start := time.Now()
		for i := 0; i < *clients; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					if err := f(ctx); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		if e, ok := firstErr.Load().(error); ok {
			return 0, 0, e
		}
		return n.Load(), time.Since(start), nil
	}
	bareOp := func(ctx context.Context) error {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer c.Release()
		_, _, err = bareCreate(ctx, c.Conn(), false)
		return err
	}
	mfOp := func(ctx context.Context) error { _, err := b.issue(ctx, time.Hour); return err }
	// The two kinds alternate in short rounds, so that a slower or faster
	// spell of the machine weighs on both alike.
	rounds := max(*throughRounds, 1)
	slice := *throughFor / time.Duration(rounds)
	var bareN, mfN int64
	var bareT, mfT time.Duration
	var ratios []float64
	for range rounds {
		n, t, err := count(slice, bareOp)
		if err != nil {
			return err
		}
		m, u, err := count(slice, mfOp)
		if err != nil {
			return err
		}
		bareN, bareT, mfN, mfT = bareN+n, bareT+t, mfN+m, mfT+u
		ratios = append(ratios, (float64(m)/u.Seconds())/(float64(n)/t.Seconds()))
	}
	dropBench(ctx, pool, "mf_bench_bare%")
	bare, mf := float64(bareN)/bareT.Seconds(), float64(mfN)/mfT.Seconds()
	slices.Sort(ratios)
	fmt.Printf("## Issue throughput (%d concurrent clients, %s each, in %d alternating rounds)\n\n", *clients, *throughFor, rounds)
	fmt.Println("| operation | per second | vs bare |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| bare `CREATE ROLE … PASSWORD 'plain'` on %d connections | %.0f | 1.00× |\n", *clients, bare)
	fmt.Printf("| Mayfly issue through the API (one call each) | %.0f | %.2f× |\n\n", mf, mf/bare)
	fmt.Printf("Ratio per round: min %.2f×, median %.2f×, max %.2f×\n\n", ratios[0], ratios[len(ratios)/2], ratios[len(ratios)-1])
	return nil
}

func benchRevoke(ctx context.Context, pool *pgxpool.Pool, b *broker) error {
	n := *revokeN
	// Issue n leases that all expire in the same second, T.
	// Room to issue them all first (about 2 ms each with one replica; 4 ms
	// and more with three on two cores): expiry before the last is issued
	// fails.
	est := time.Duration(n) * 8 * time.Millisecond
	T := time.Now().Add(est + 10*time.Second).Truncate(time.Second)
	var wg sync.WaitGroup
	ch := make(chan int)
	var firstErr atomic.Value
	var leaseIDs sync.Map
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ch {
				c, err := b.issueAs(ctx, b.burst, time.Until(T).Round(time.Millisecond))
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				leaseIDs.Store(c.LeaseID, c.Username)
			}
		}()
	}
	issueStart := time.Now()
	for i := 0; i < n; i++ {
		ch <- i
	}
	close(ch)
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return fmt.Errorf("issuing leases for the revocation run: %w", e)
	}
	if time.Now().After(T) {
		return fmt.Errorf("issuing %d leases took %s, past their common expiry; raise the margin", n, time.Since(issueStart))
	}
	var usernames []string
	leaseIDs.Range(func(_, v any) bool { usernames = append(usernames, v.(string)); return true })
	// Every account of this run is mf_burst_<random>: a cheap count.
	countLive := func() int {
		var k int
		pool.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname LIKE 'mf\_burst\_%'`).Scan(&k)
		return k
	}
	live := countLive()
	time.Sleep(time.Until(T))
	start := time.Now()
	for countLive() > 0 {
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("revocation did not finish in 5 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// T is the earliest expiry; the last lease expires just under 1s later.
	mfDur := time.Since(start)
	// Lag from the broker's own records, once it has recorded every outcome.
	var lags []time.Duration
	for wait := 0; wait < 100; wait++ {
		var ls []httpapi.LeaseView
		q := url.Values{"limit": {strconv.Itoa(httpapi.MaxPageSize)}}
		for {
			var page []httpapi.LeaseView
			next, err := b.client.ListPage(ctx, "/v1/leases", q, &page)
			if err != nil {
				return err
			}
			ls = append(ls, page...)
			if next == "" {
				break
			}
			q.Set("cursor", next)
		}
		lags = lags[:0]
		for _, l := range ls {
			if _, ok := leaseIDs.Load(l.ID); ok && l.EndedAt != nil {
				lags = append(lags, l.EndedAt.Sub(l.ExpiresAt))
			}
		}
		if len(lags) == len(usernames) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Bare: create n roles quickly (verifier), then DROP ROLE on revokeConc connections.
	names := make(chan string, n)
	var cw sync.WaitGroup
	for i := 0; i < *revokeConc; i++ {
		cw.Add(1)
		go func() {
			defer cw.Done()
			c, _ := pool.Acquire(ctx)
			defer c.Release()
			for j := i; j < n; j += *revokeConc {
				name, _, err := bareCreate(ctx, c.Conn(), true)
				if err == nil {
					names <- name
				}
			}
		}()
	}
	cw.Wait()
	close(names)
	bstart := time.Now()
	var dw sync.WaitGroup
	for i := 0; i < *revokeConc; i++ {
		dw.Add(1)
		go func() {
			defer dw.Done()
			c, _ := pool.Acquire(ctx)
			defer c.Release()
			for name := range names {
				c.Exec(ctx, "DROP ROLE "+pgx.Identifier{name}.Sanitize())
			}
		}()
	}
	dw.Wait()
	bareDur := time.Since(bstart)

	fmt.Printf("## Revocation: %d leases expiring within the same second (%d live roles before)\n\n", n, live)
	fmt.Println("| operation | time for all | per second | vs bare |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| bare `DROP ROLE` loop, %d connections | %s | %.0f | 1.00× |\n", *revokeConc, bareDur.Round(time.Millisecond), float64(n)/bareDur.Seconds())
	fmt.Printf("| Mayfly scheduler (expiry → NOLOGIN, kill sessions, drop owned, drop, verify, audit), concurrency %d | %s | %.0f | %.2f× |\n\n",
		*revokeConc, mfDur.Round(time.Millisecond), float64(n)/mfDur.Seconds(), (float64(n)/mfDur.Seconds())/(float64(n)/bareDur.Seconds()))
	fmt.Printf("Revocation lag (ended_at − expires_at) under that burst: p50 %s, p99 %s, max %s (%d leases)\n\n",
		ms(pct(lags, 0.5)), ms(pct(lags, 0.99)), ms(pct(lags, 1)), len(lags))

	// Lag at rest: a few leases expiring at different times.
	var rest []time.Duration
	var restIDs []string
	for i := 0; i < 50; i++ {
		c, err := b.issue(ctx, time.Second+time.Duration(i)*97*time.Millisecond)
		if err != nil {
			return err
		}
		restIDs = append(restIDs, c.LeaseID)
	}
	time.Sleep(8 * time.Second)
	for _, id := range restIDs {
		var l httpapi.LeaseView
		if err := b.client.Do(ctx, "GET", "/v1/leases/"+id, nil, nil, &l); err != nil {
			return err
		}
		if l.EndedAt == nil {
			return fmt.Errorf("lease %s not revoked 8s after a ≤6s lease", id)
		}
		rest = append(rest, l.EndedAt.Sub(l.ExpiresAt))
	}
	fmt.Printf("Revocation lag at rest (50 leases of 1–6 s): p50 %s, p99 %s\n\n", ms(pct(rest, 0.5)), ms(pct(rest, 0.99)))
	return nil
}

// benchStartup builds a store with startupN lease rows (10% live, expiring
// in an hour; the rest ended) and times the broker from exec to /readyz,
// and its peak memory.
func benchStartup(ctx context.Context, bin, dir string) error {
	dbPath := filepath.Join(dir, "big.db")
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		return err
	}
	now := time.Now()
	live := *startupN / 10
	q := `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?)
INSERT INTO leases (id, request_id, requester, target, grant_name, username, state, created_at, expires_at, due_at, ended_at, end_reason, revoke_attempts, last_error, secret_hmac)
SELECT 'lse_big' || i, 'req_big' || i, 'user' || (i % 1000), 'pg', 'readonly', 'mf_big_' || i,
  CASE WHEN i <= ? THEN 'active' ELSE 'revoked' END,
  ? - i * 1000000000, ? + 3600000000000, CASE WHEN i <= ? THEN ? + 3600000000000 + i ELSE ? - i END,
  CASE WHEN i <= ? THEN NULL ELSE ? - i END, CASE WHEN i <= ? THEN '' ELSE 'expired' END, 0, '', ''
FROM n`
	n0 := now.UnixNano()
	start := time.Now()
	if err := st.ExecForTest(ctx, q, *startupN, live, n0, n0, live, n0, n0, live, n0, live); err != nil {
		st.Close()
		return fmt.Errorf("build fixture: %w", err)
	}
	st.Close()
	fi, _ := os.Stat(dbPath)
	fmt.Printf("## Start-up with %d lease rows (%d live), store %.0f MB (built in %s)\n\n", *startupN, live, float64(fi.Size())/1e6, time.Since(start).Round(time.Millisecond))
	for i := 0; i < 3; i++ {
		t0 := time.Now()
		b, err := startBroker(bin, dir, dbPath, *revokeConc)
		if err != nil {
			return err
		}
		ready := time.Since(t0)
		var rss string
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid)); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if strings.HasPrefix(line, "VmHWM:") {
					rss = strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
				}
			}
		}
		b.stop()
		fmt.Printf("- run %d: exec → /readyz 200 in %s, peak RSS %s\n", i+1, ready.Round(time.Millisecond), rss)
	}
	fmt.Println()
	return nil
}

// benchSuspend measures suspension to the last account gone for a user
// holding suspendN leases across PostgreSQL, MariaDB and Redis.
func benchSuspend(ctx context.Context, b *broker) error {
	targets := [][2]string{{"pg", "readonly"}, {"maria", "readonly"}, {"cache", "read"}}
	var ids []string
	for i := 0; i < *suspendN; i++ {
		t := targets[i%len(targets)]
		var resp httpapi.CreateRequestResponse
		if err := b.leaver.Do(ctx, "POST", "/v1/requests", nil, httpapi.CreateRequestBody{
			Target: t[0], Grant: t[1], Duration: "1h", Reason: "bench", Activate: true}, &resp); err != nil {
			return fmt.Errorf("issue for the suspension run: %w", err)
		}
		ids = append(ids, resp.Credentials.LeaseID)
	}
	start := time.Now()
	var res httpapi.UserStatusResult
	if err := b.client.Do(ctx, "POST", "/v1/users/leaver/suspend", nil, httpapi.DecisionBody{Reason: "bench"}, &res); err != nil {
		return err
	}
	ack := time.Since(start)
	for {
		var ls []httpapi.LeaseView
		if err := b.client.Do(ctx, "GET", "/v1/leases", url.Values{"user": {"leaver"}, "active": {"true"}}, nil, &ls); err != nil {
			return err
		}
		if len(ls) == 0 {
			break
		}
		if time.Since(start) > time.Minute {
			return fmt.Errorf("suspension: %d leases still live after a minute", len(ls))
		}
		time.Sleep(10 * time.Millisecond)
	}
	all := time.Since(start)
	fmt.Printf("## Suspension of a user holding %d leases across PostgreSQL, MariaDB and Redis\n\n", len(ids))
	fmt.Printf("- suspend call answered (leases marked, requests cancelled, token refused) in %s\n", ack.Round(time.Millisecond))
	fmt.Printf("- last account verified gone %s after the call (goal: under 5 s)\n\n", all.Round(time.Millisecond))
	b.client.Do(ctx, "POST", "/v1/users/leaver/resume", nil, nil, nil)
	return nil
}

// benchInstanceKey is the installation key of the broker under test.
const benchInstanceKey = "mayfly-bench-installation-key"

// benchReconcile measures one reconcile pass over a target with
// reconcileN managed accounts: first all explained by live leases, then
// all orphans (created directly on the server) to be removed.
func benchReconcile(ctx context.Context, pool *pgxpool.Pool, b *broker) error {
	n := *reconcileN
	var wg sync.WaitGroup
	ch := make(chan int)
	var firstErr atomic.Value
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ch {
				if _, err := b.issue(ctx, time.Hour); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		ch <- i
	}
	close(ch)
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return e
	}
	pass := func() (time.Duration, []map[string]any, error) {
		start := time.Now()
		var res []map[string]any
		err := b.client.Do(ctx, "POST", "/v1/reconcile", nil, httpapi.ReconcileBody{Target: "pg"}, &res)
		return time.Since(start), res, err
	}
	clean, res, err := pass()
	if err != nil {
		return err
	}
	fmt.Printf("## Reconcile of one PostgreSQL target\n\n")
	fmt.Printf("- %v managed accounts, every one with a live lease: pass took %s (nothing to do)\n", res[0]["accounts"], clean.Round(time.Millisecond))
	// Orphans: roles with the managed prefix that no lease of the store
	// explains but that carry this installation's mark, as a lost store
	// leaves them (a role without the mark is reported, never removed).
	key, err := mark.NewKey(benchInstanceKey)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("mf_orphan_%d_%d", os.Getpid(), i)
		comment := "mayfly lease lse_lost" + fmt.Sprint(i) + " mark " + key.Tag(name)
		if _, err := pool.Exec(ctx, "CREATE ROLE "+pgx.Identifier{name}.Sanitize()+"; COMMENT ON ROLE "+pgx.Identifier{name}.Sanitize()+" IS '"+comment+"'"); err != nil {
			return err
		}
	}
	dirty, res, err := pass()
	if err != nil {
		return err
	}
	removed, _ := res[0]["orphans_removed"].([]any)
	fmt.Printf("- %v managed accounts of which %d orphans: pass took %s, removing %d orphans (each audited)\n\n", res[0]["accounts"], n, dirty.Round(time.Millisecond), len(removed))
	return nil
}

// benchFailover (with -replicas > 1): failoverN leases expire together
// while the replica that leads the most singleton work is SIGKILLed
// 100 ms after their expiry, with some of them claimed: the time until
// every account is gone, and until the singleton work it led runs on
// another replica.
func benchFailover(ctx context.Context, pool *pgxpool.Pool, b *broker) error {
	if len(b.peers) == 0 {
		return nil
	}
	type status struct {
		Replicas []struct {
			ID      string   `json:"id"`
			Address string   `json:"address"`
			Alive   bool     `json:"alive"`
			Leads   []string `json:"leads"`
		} `json:"replicas"`
	}
	cluster := func() (status, error) {
		var st status
		err := b.client.Do(ctx, "GET", "/v1/cluster", nil, nil, &st)
		return st, err
	}
	n := *failoverN
	T := time.Now().Add(time.Duration(n)*15*time.Millisecond + 5*time.Second).Truncate(time.Second)
	var wg sync.WaitGroup
	ch := make(chan int)
	var firstErr atomic.Value
	for i := 0; i < *clients; i++ {
		wg.Go(func() {
			for range ch {
				if _, err := b.issueAs(ctx, b.burst, time.Until(T).Round(time.Millisecond)); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return fmt.Errorf("issuing leases for the failover run: %w", e)
	}
	if time.Now().After(T) {
		return fmt.Errorf("issuing %d leases took past their common expiry", n)
	}
	st, err := cluster()
	if err != nil {
		return err
	}
	// The victim: the replica leading the most work.
	procs, addrs := append([]*exec.Cmd{b.cmd}, b.peers...), append([]string{b.addr}, b.peerAddrs...)
	port := func(a string) string { return a[strings.LastIndex(a, ":"):] }
	victim, most := -1, -1
	var led []string
	var victimID string
	for i, a := range addrs {
		for _, r := range st.Replicas {
			if strings.HasSuffix(r.Address, port(a)) && len(r.Leads) > most {
				victim, most, led, victimID = i, len(r.Leads), r.Leads, r.ID
			}
		}
	}
	if victim < 0 {
		return fmt.Errorf("no replica of the cluster status matches an address of %v", addrs)
	}
	countLive := func() int {
		var k int
		pool.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname LIKE 'mf\_burst\_%'`).Scan(&k)
		return k
	}
	time.Sleep(time.Until(T.Add(100 * time.Millisecond)))
	killedAt := time.Now()
	procs[victim].Process.Kill()
	procs[victim].Wait()
	leftAtKill := countLive()
	// The leases it had claimed and not finished: they wait for their
	// claims to lapse.
	var claimed int
	c, err := pgx.Connect(ctx, storeDSN())
	if err != nil {
		return err
	}
	err = c.QueryRow(ctx, "SELECT count(*) FROM leases WHERE claimed_by = $1 AND claim_until > $2", victimID, time.Now().UnixNano()).Scan(&claimed)
	c.Close(ctx)
	if err != nil {
		return fmt.Errorf("count the killed replica's claims: %w", err)
	}
	// Survivors only from here on.
	var alive []string
	for i, a := range addrs {
		if i != victim {
			alive = append(alive, a)
		}
	}
	for _, c := range []*httpapi.Client{b.client, b.leaver, b.burst} {
		c.HTTP = &http.Client{Transport: &roundRobin{addrs: alive, next: &http.Transport{MaxIdleConnsPerHost: 64}}}
	}
	var takeover time.Duration
	var gone time.Duration
	for takeover == 0 || gone == 0 {
		if time.Since(killedAt) > 3*time.Minute {
			return fmt.Errorf("failover did not finish in 3 minutes (accounts left %d, takeover %v)", countLive(), takeover)
		}
		if gone == 0 && countLive() == 0 {
			gone = time.Since(T)
		}
		if takeover == 0 {
			st, err := cluster()
			if err == nil {
				moved := 0
				for _, r := range st.Replicas {
					for _, w := range r.Leads {
						if slices.Contains(led, w) && r.Alive && !strings.HasSuffix(r.Address, port(addrs[victim])) {
							moved++
						}
					}
				}
				if moved == len(led) {
					takeover = time.Since(killedAt)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("## Failover: %d leases expiring together across %d replicas; the replica leading %v SIGKILLed 100 ms after their expiry\n\n", n, len(b.peers)+1, led)
	fmt.Printf("Accounts left when it was killed: %d; leases it had claimed and not finished: %d. All accounts gone %s after the expiry. Its singleton work running elsewhere %s after the kill.\n\n",
		leftAtKill, claimed, gone.Round(time.Millisecond), takeover.Round(time.Millisecond))
	return nil
}
