package sshgw

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/ssh"
	"github.com/mayflyhq/mayfly/internal/sshdtest"
)

// benchClients returns an SSH client through the gateway and one straight
// to the host, both as the same host user, for the same kind of lease.
func benchClients(tb *testing.T) (*rig, *gossh.Client, *gossh.Client) {
	r := newRig(tb)
	k := r.lease("shell")
	dial := func(addr, login string, signer gossh.Signer, hostKey gossh.PublicKey) *gossh.Client {
		c, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{User: login, Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)}, HostKeyCallback: gossh.FixedHostKey(hostKey)})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		return c
	}
	keyPEM, _ := os.ReadFile(k.key)
	certLine, _ := os.ReadFile(k.cert)
	signer, err := gossh.ParsePrivateKey(keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	pub, _, _, _, err := gossh.ParseAuthorizedKey(certLine)
	if err != nil {
		tb.Fatal(err)
	}
	cs, err := gossh.NewCertSigner(pub.(*gossh.Certificate), signer)
	if err != nil {
		tb.Fatal(err)
	}
	known, _ := os.ReadFile(r.known)
	_, _, gwPub, _, _, err := gossh.ParseKnownHosts(known)
	if err != nil {
		tb.Fatal(err)
	}
	viaGW := dial(r.addr, k.login, cs, gwPub)
	// Direct: the gateway's own kind of certificate, for the host.
	route, err := r.leases.sc.Route(k.account, r.leases.grants["shell"])
	if err != nil {
		tb.Fatal(err)
	}
	hs, err := r.leases.sc.GatewaySigner(k.id, route)
	if err != nil {
		tb.Fatal(err)
	}
	direct := dial(r.host.Addr, sshdtest.Login, hs, route.HostKey)
	return r, viaGW, direct
}

// cpuTime is the user and system time this process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// directOpenSSH returns the arguments of OpenSSH's ssh straight to the
// host with a certificate of the kind the gateway uses there.
func directOpenSSH(t *testing.T, r *rig) []string {
	route, err := r.leases.sc.Route("mf_direct", r.leases.grants["shell"])
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := r.ca.Sign(ssh.CertRequest{Key: sshPub, KeyID: "direct", Principals: []string{route.Login},
		ValidAfter: time.Now().Add(-time.Minute), ValidBefore: time.Now().Add(time.Hour), Extensions: route.Extensions})
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(r.dir, "direct")
	sshdtest.Write(t, key, pem.EncodeToMemory(block), 0o600)
	sshdtest.Write(t, key+"-cert.pub", gossh.MarshalAuthorizedKey(cert), 0o644)
	host, port, _ := net.SplitHostPort(r.host.Addr)
	known := filepath.Join(r.dir, "direct_known_hosts")
	sshdtest.Write(t, known, []byte("["+host+"]:"+port+" "+sshdtest.Authorized(route.HostKey)+"\n"), 0o600)
	return []string{"-p", port, "-F", "/dev/null", "-o", "UserKnownHostsFile=" + known, "-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i", key, "-o", "CertificateFile=" + key + "-cert.pub",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", route.Login + "@" + host}
}

// TestBenchSSHGateway measures, in one run, the throughput of a large cat
// and the keystroke round trip through the gateway and straight to the
// host, and the recording's size for a busy terminal. Run it with
// MAYFLY_SSHGW_BENCH=1 (docs/benchmarks.md).
func TestBenchSSHGateway(t *testing.T) {
	if os.Getenv("MAYFLY_SSHGW_BENCH") == "" {
		t.Skip("set MAYFLY_SSHGW_BENCH=1 to measure")
	}
	r, gw, direct := benchClients(t)
	const size = 256 << 20
	cat := func(c *gossh.Client) float64 {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out, _ := s.StdoutPipe()
		start := time.Now()
		if err := s.Start("head -c " + strconv.Itoa(size) + " /dev/zero"); err != nil {
			t.Fatal(err)
		}
		// Large reads, as a real client makes (io.Discard would read
		// 8 KiB at a time, each read a window adjustment).
		var n int64
		buf := make([]byte, 256<<10)
		for {
			k, err := out.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		s.Wait()
		if n != size {
			t.Fatalf("read %d bytes", n)
		}
		return float64(size) / (1 << 20) / time.Since(start).Seconds()
	}
	var ds, gs []float64
	for range 5 {
		d, g := cat(direct), cat(gw)
		ds, gs = append(ds, d), append(gs, g)
		t.Logf("cat 256 MiB: direct %.0f MiB/s, gateway %.0f MiB/s (%.0f%%)", d, g, 100*g/d)
	}
	slices.Sort(ds)
	slices.Sort(gs)
	t.Logf("cat 256 MiB, Go client, median of 5: direct %.0f MiB/s, gateway %.0f MiB/s (%.0f%%)", ds[2], gs[2], 100*gs[2]/ds[2])

	// The same with OpenSSH's ssh, its output to /dev/null: what a user
	// runs, and a client that leaves the CPU to the gateway and sshd.
	k := r.lease("shell")
	directArgs := directOpenSSH(t, r)
	sshCat := func(args []string) float64 {
		cmd := exec.Command("ssh", append(args, "head -c "+strconv.Itoa(size)+" /dev/zero")...)
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer null.Close()
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = null, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("ssh: %v: %s", err, stderr.String())
		}
		return float64(size) / (1 << 20) / time.Since(start).Seconds()
	}
	ds, gs = nil, nil
	var caps []float64
	// MAYFLY_SSHGW_BENCH_CPUPROFILE=FILE writes this process's CPU
	// profile during the OpenSSH runs (the gateway alone) to FILE.
	if f := os.Getenv("MAYFLY_SSHGW_BENCH_CPUPROFILE"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			t.Fatal(err)
		}
		defer pf.Close()
		defer pprof.StopCPUProfile()
	}
	for range 5 {
		d := sshCat(directArgs)
		// This process runs only the gateway now: its CPU time is the
		// gateway's cost, whatever the other processes take.
		cpu0 := cpuTime(t)
		g := sshCat(append([]string{"-p", strconv.Itoa(r.port)}, append(r.opts(k), k.login+"@127.0.0.1")...))
		c := float64(size) / (1 << 20) / (cpuTime(t) - cpu0).Seconds()
		ds, gs, caps = append(ds, d), append(gs, g), append(caps, c)
		t.Logf("cat 256 MiB, OpenSSH client: direct %.0f MiB/s, gateway %.0f MiB/s (%.0f%%); the gateway's CPU: %.0f MiB per CPU-second", d, g, 100*g/d, c)
	}
	slices.Sort(ds)
	slices.Sort(gs)
	slices.Sort(caps)
	t.Logf("cat 256 MiB, OpenSSH client, median of 5: direct %.0f MiB/s, gateway %.0f MiB/s (%.0f%%); gateway on a core of its own could carry %.0f MiB/s (%.0f%% of direct)",
		ds[2], gs[2], 100*gs[2]/ds[2], caps[2], 100*caps[2]/ds[2])
	rtt := func(c *gossh.Client) time.Duration {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.RequestPty("xterm", 24, 80, gossh.TerminalModes{gossh.ECHO: 0}); err != nil {
			t.Fatal(err)
		}
		in, _ := s.StdinPipe()
		out, _ := s.StdoutPipe()
		if err := s.Start("stty raw -echo; cat"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		buf := make([]byte, 1)
		var ds []time.Duration
		for i := range 1000 {
			start := time.Now()
			in.Write([]byte{'a' + byte(i%26)})
			if _, err := io.ReadFull(out, buf); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	d, g := rtt(direct), rtt(gw)
	t.Logf("keystroke round trip p50: direct %s, gateway %s (added %s)", d, g, g-d)

	// A busy terminal for 10 s: a screenful of text 20 times a second.
	s, err := gw.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 40, 120, nil); err != nil {
		t.Fatal(err)
	}
	out, _ := s.StdoutPipe()
	go io.Copy(io.Discard, out)
	if err := s.Run("end=$(($(date +%s)+10)); while [ $(date +%s) -lt $end ]; do ls -l /usr/bin | head -40; sleep 0.05; done"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	time.Sleep(time.Second)
	// Only the busy terminal's channel: the last one opened.
	var ss []*mayfly.Session
	r.log.st.View(context.Background(), func(tx mayfly.Tx) error { ss, _ = tx.ListSessions(mayfly.SessionFilter{}); return nil })
	var casts []CastBody
	for _, x := range ss {
		casts = append(casts, bodies[CastBody](t, r.log.events(t, x.ID), EventCast)...)
	}
	last := -1
	for _, b := range casts {
		last = max(last, b.Channel)
	}
	var total int64
	for _, b := range casts {
		if b.Channel == last {
			total += int64(len(b.Cast))
		}
	}
	t.Logf("busy terminal (40 lines, 20 screens/s) for 10 s: %d KiB of cast events, %.1f MiB per minute", total>>10, float64(total)*6/(1<<20))
}
