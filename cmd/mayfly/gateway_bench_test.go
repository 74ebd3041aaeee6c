package main

import (
	"context"
	"fmt"

	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestGatewayBenchmark measures the PostgreSQL gateway against a direct
// connection in the same run (docs/benchmarks.md): SELECT 1 round trips,
// pgbench -S with 8 clients, and the memory of open gateway sessions. It
// runs only with MAYFLY_GATEWAY_BENCH=1.
func TestGatewayBenchmark(t *testing.T) {
	if os.Getenv("MAYFLY_GATEWAY_BENCH") == "" {
		t.Skip("set MAYFLY_GATEWAY_BENCH=1 to run the gateway benchmark")
	}
	ctx := context.Background()
	adminExec(t, `SELECT 1`)
	if out, err := exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'mf_bench'").Output(); err != nil || strings.TrimSpace(string(out)) != "1" {
		adminExec(t, `CREATE DATABASE mf_bench`)
	}
	if b, err := exec.Command("pgbench", "-i", "-q", "-s", "1", "-h", "127.0.0.1", "-U", "postgres", "mf_bench").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, b)
	}
	fmt.Println(idleSetting())
	w := gatewayWorld(t, "")
	gw := gatewayCreds(t, w)
	var r struct {
		Credentials *credsOut `json:"credentials"`
	}
	w.ok("alice", &r, "request", "local-pg/readonly", "--for", "30m", "--reason", "bench", "--creds", "-o", "json")
	direct := *r.Credentials

	// SELECT 1 round trips, alternating so both see the same load.
	const n = 5000
	connect := func(c credsOut) *pgx.Conn {
		conn, err := pgx.Connect(ctx, gwDSN(c, c.Password))
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	// The floor of any recording proxy: a bare relay that reads each
	// side and writes what it read to the other, nothing else, in this
	// process as the gateway is.
	relay := bareRelay(t, net.JoinHostPort(direct.Host, fmt.Sprint(direct.Port)))
	viaRelay := direct
	viaRelay.Host, viaRelay.Port = "127.0.0.1", relay

	dc, rc, gc := connect(direct), connect(viaRelay), connect(gw)
	defer dc.Close(ctx)
	defer rc.Close(ctx)
	defer gc.Close(ctx)
	lats, err := select1Rounds(ctx, []*pgx.Conn{dc, rc, gc}, n)
	if err != nil {
		t.Fatal(err)
	}
	dl, rl, gl := lats[0], lats[1], lats[2]
	fmt.Printf("SELECT 1 (pgx, extended protocol), %d each, client in this process: direct p50 %v p99 %v; bare relay p50 %v p99 %v (%.2f×); gateway p50 %v p99 %v; p50 ratio %.2f (%.2f× the bare relay)\n",
		n, pctile(dl, .5), pctile(dl, .99), pctile(rl, .5), pctile(rl, .99), float64(pctile(rl, .5))/float64(pctile(dl, .5)),
		pctile(gl, .5), pctile(gl, .99), float64(pctile(gl, .5))/float64(pctile(dl, .5)), float64(pctile(gl, .5))/float64(pctile(rl, .5)))

	// The same with the client in a process of its own, as psql or an
	// application is: every hop to the gateway then crosses processes.
	// Where socat is installed, a relay written in C, in a process of its
	// own, is measured too: the floor of a proxy that is not Go's.
	dsns := []string{gwDSN(direct, direct.Password), gwDSN(viaRelay, viaRelay.Password), gwDSN(gw, gw.Password)}
	if port, ok := socatRelay(t, net.JoinHostPort(direct.Host, fmt.Sprint(direct.Port))); ok {
		viaSocat := direct
		viaSocat.Host, viaSocat.Port = "127.0.0.1", port
		dsns = append(dsns, gwDSN(viaSocat, viaSocat.Password))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MAYFLY_GATEWAY_BENCH_CLIENT="+strings.Join(dsns, " "))
	out, err := cmd.CombinedOutput()
	m := regexp.MustCompile(`p50-ns((?: \d+)+)`).FindStringSubmatch(string(out))
	if err != nil || m == nil || len(strings.Fields(m[1])) != len(dsns) {
		t.Fatalf("the benchmark's client process: %v\n%s", err, out)
	}
	p50 := make([]float64, len(dsns))
	for i, f := range strings.Fields(m[1]) {
		fmt.Sscan(f, &p50[i])
	}
	dp, rp, gp := p50[0], p50[1], p50[2]
	socat := ""
	if len(p50) > 3 {
		socat = fmt.Sprintf("; socat relay p50 %v (%.2f×)", time.Duration(p50[3]), p50[3]/dp)
	}
	fmt.Printf("SELECT 1, %d each, client in another process: direct p50 %v; bare relay p50 %v (%.2f×); gateway p50 %v; p50 ratio %.2f (%.2f× the bare relay)%s\n",
		n, time.Duration(dp), time.Duration(rp), rp/dp, time.Duration(gp), gp/dp, gp/rp, socat)

	// pgbench -S -c 8.
	tps := regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	processed := regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`)
	var pinCmd []string
	// Each pgbench run through the gateway must be in the session log,
	// every statement: pgbench -S runs one per transaction, plus its
	// check of the scale and the statements in flight when it stops.
	var lastProcessed int64
	recorded := func() (stmts int64, open int) {
		var ss []struct {
			Events  int64     `json:"events"`
			EndedAt time.Time `json:"ended_at"`
		}
		w.ok("alice", &ss, "sessions", "--lease", gw.Username, "--all", "-o", "json")
		for _, s := range ss {
			if s.EndedAt.IsZero() {
				open++
				stmts += s.Events - 1 // start
			} else {
				stmts += s.Events - 2 // start, end
			}
		}
		return stmts, open
	}
	checkRecorded := func(mode string, before int64, openBefore int) {
		deadline := time.Now().Add(10 * time.Second)
		after, open := recorded()
		for open > openBefore && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			after, open = recorded()
		}
		got := after - before
		if got < lastProcessed || got > lastProcessed+16 {
			t.Fatalf("pgbench -M %s through the gateway processed %d transactions; the session log holds %d statements of that run (%d sessions still open); want every one",
				mode, lastProcessed, got, open-openBefore)
		}
		fmt.Printf("  gateway round recorded: %d transactions processed, %d statements in the session log\n", lastProcessed, got)
	}
	bench := func(c credsOut, mode string) float64 {
		args := append(slices.Clone(pinCmd), "pgbench", "-n", "-S", "-c", "8", "-j", "2", "-T", fmt.Sprint(benchSeconds), "-M", mode, "-h", c.Host, "-p", fmt.Sprint(c.Port), "-U", c.Username, "mf_bench")
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+c.Password, "PGSSLMODE=disable")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench: %v\n%s", err, b)
		}
		m := tps.FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("pgbench output has no tps:\n%s", b)
		}
		var tps float64
		fmt.Sscan(m[1], &tps)
		if m := processed.FindStringSubmatch(string(b)); m != nil {
			fmt.Sscan(m[1], &lastProcessed)
		} else {
			t.Fatalf("pgbench output has no count of transactions:\n%s", b)
		}
		return tps
	}
	// Twice: first with the two cores shared by all, then with the
	// gateway on a core of its own, as where it runs on its own machine:
	// PostgreSQL's new backends and pgbench on CPU 0, this process (the
	// gateway, the bare relay, the session log) on CPU 1.
	// MAYFLY_GATEWAY_BENCH_PLACEMENTS (say "pinned") runs only the
	// placements it lists; "none" runs none (the SELECT 1 part alone).
	placements := []string{"shared", "pinned"}
	if v := os.Getenv("MAYFLY_GATEWAY_BENCH_PLACEMENTS"); v == "none" {
		placements = nil
	} else if v != "" {
		placements = strings.Split(v, ",")
	}
	for _, placement := range placements {
		if placement == "pinned" {
			if runtime.NumCPU() < 2 {
				break
			}
			unpin := pinForBench(t)
			defer unpin()
			pinCmd = []string{"taskset", "-c", "0"}
		}
		for _, mode := range []string{"simple", "extended"} {
			// Rounds alternate the three paths so that all see the same
			// load; each path's figure is its median round.
			var ds, rs, gs []float64
			for round := range benchRounds {
				ds = append(ds, bench(direct, mode))
				rs = append(rs, bench(viaRelay, mode))
				// MAYFLY_GATEWAY_BENCH_CPUPROFILE=PREFIX writes this
				// process's CPU profile during the first gateway round to
				// PREFIX-PLACEMENT-MODE.pprof.
				stopProfile := func() {}
				if prefix := os.Getenv("MAYFLY_GATEWAY_BENCH_CPUPROFILE"); prefix != "" && round == 0 {
					f, err := os.Create(prefix + "-" + placement + "-" + mode + ".pprof")
					if err != nil {
						t.Fatal(err)
					}
					if err := pprof.StartCPUProfile(f); err != nil {
						t.Fatal(err)
					}
					stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
				}
				before, openBefore := recorded()
				gs = append(gs, bench(gw, mode))
				stopProfile()
				checkRecorded(mode, before, openBefore)
			}
			df, rf, gf := median(ds), median(rs), median(gs)
			fmt.Printf("pgbench -S -c 8 -j 2 -T %d -M %s, cores %s, median of %d: direct %.0f tps, bare relay %.0f tps (%.0f%%), gateway %.0f tps (%.0f%% of direct, %.0f%% of the bare relay); rounds: direct %.0f, relay %.0f, gateway %.0f\n",
				benchSeconds, mode, placement, benchRounds, df, rf, 100*rf/df, gf, 100*gf/df, 100*gf/rf, ds, rs, gs)
		}
	}

	// Memory of open gateway sessions: the server runs in this process,
	// and so do the test's pgx clients. The same number of direct pgx
	// connections measures the clients' share, taken off the gateway's.
	const open = 8 // each role's connection limit is 10; dc and rc hold two of the direct one
	// Live heap (after a collection) and goroutine stacks.
	memFor := func(c credsOut) (heap, stacks int64) {
		var conns []*pgx.Conn
		defer func() {
			for _, c := range conns {
				c.Close(ctx)
			}
		}()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range open {
			conn := connect(c)
			var one int
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
		}
		time.Sleep(100 * time.Millisecond) // the sessions' goroutines settle
		runtime.GC()
		runtime.ReadMemStats(&after)
		return int64(after.HeapAlloc) - int64(before.HeapAlloc), int64(after.StackInuse) - int64(before.StackInuse)
	}
	ch, cs := memFor(direct)
	gh, gs := memFor(gw)
	fmt.Printf("memory of %d more open sessions: gateway sessions with their pgx clients heap +%d, stacks +%d bytes; "+
		"the same number of direct pgx clients heap +%d, stacks +%d; the gateway alone per session: heap %d, stacks %d bytes\n",
		open, gh, gs, ch, cs, (gh-ch)/open, (gs-cs)/open)
}

// select1Rounds runs n SELECT 1 round trips on each connection, in turn
// so that all see the same load, and returns each one's latencies.
func select1Rounds(ctx context.Context, conns []*pgx.Conn, n int) ([][]time.Duration, error) {
	lats := make([][]time.Duration, len(conns))
	var one int
	for i := range len(conns) * n {
		k := i % len(conns)
		start := time.Now()
		if err := conns[k].QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			return nil, err
		}
		lats[k] = append(lats[k], time.Since(start))
	}
	return lats, nil
}

func pctile(ls []time.Duration, p float64) time.Duration {
	s := slices.Clone(ls)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// gatewayBenchClient is TestGatewayBenchmark's client in a process of
// its own (the test binary again, which TestMain sends here when
// MAYFLY_GATEWAY_BENCH_CLIENT is set): SELECT 1 round trips on each DSN of
// dsns in turn, their medians printed in nanoseconds.
func gatewayBenchClient(dsns string) error {
	ctx := context.Background()
	var conns []*pgx.Conn
	for _, dsn := range strings.Fields(dsns) {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		conns = append(conns, c)
	}
	lats, err := select1Rounds(ctx, conns, 5000)
	if err != nil {
		return err
	}
	fmt.Print("p50-ns")
	for _, l := range lats {
		fmt.Printf(" %d", pctile(l, .5))
	}
	fmt.Println()
	return nil
}

// The pgbench part: rounds of benchSeconds per path.
const (
	benchRounds  = 3
	benchSeconds = 8
)

// idleSetting describes how this machine's idle CPUs wait, which sets
// the cost of every wake-up a proxy adds: on a virtual machine whose idle
// vCPUs halt without polling first (cpuidle-haltpoll with
// guest_halt_poll_ns 0), a wake-up leaves the guest.
func idleSetting() string {
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return "unknown"
		}
		return strings.TrimSpace(string(b))
	}
	s := "CPU idle: driver " + read("/sys/devices/system/cpu/cpuidle/current_driver")
	if poll := read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"); poll != "unknown" {
		s += ", guest halt polling " + poll + " ns"
	}
	return s
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// pinForBench puts PostgreSQL's postmaster (so the backends it starts
// from now on) on CPU 0 and every thread of this process on CPU 1, and
// returns what undoes it.
func pinForBench(t *testing.T) func() {
	t.Helper()
	out, err := exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW data_directory").Output()
	if err != nil {
		t.Fatalf("psql: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "postmaster.pid"))
	if err != nil {
		t.Fatalf("the postmaster's pid (the benchmark pins it and so must run as its owner or root): %v", err)
	}
	pm, _, _ := strings.Cut(string(b), "\n")
	all := fmt.Sprintf("0-%d", runtime.NumCPU()-1)
	run := func(args ...string) {
		if b, err := exec.Command("taskset", args...).CombinedOutput(); err != nil {
			t.Fatalf("taskset %v: %v\n%s", args, err, b)
		}
	}
	run("-p", "-c", "0", pm)
	run("-a", "-p", "-c", "1", fmt.Sprint(os.Getpid()))
	// What Go would choose on a machine of one core.
	procs := runtime.GOMAXPROCS(1)
	return func() {
		runtime.GOMAXPROCS(procs)
		run("-p", "-c", all, pm)
		run("-a", "-p", "-c", all, fmt.Sprint(os.Getpid()))
	}
}

// socatRelay starts socat relaying 127.0.0.1:PORT to target, stopped when
// t ends, and returns PORT; ok is false when socat is not installed.
func socatRelay(t *testing.T, target string) (port int, ok bool) {
	t.Helper()
	if _, err := exec.LookPath("socat"); err != nil {
		return 0, false
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command("socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,nodelay", port), "TCP:"+target+",nodelay")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return port, true
		}
		if time.Now().After(deadline) {
			t.Fatal("socat does not listen")
		}
	}
}

// bareRelay listens on 127.0.0.1 and relays each connection to target
// with a read-then-write loop each way, and returns its port.
func bareRelay(t *testing.T, target string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				s, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				go copyClose(s, c)
				copyClose(c, s)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
