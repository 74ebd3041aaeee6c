package sshgw

import (
	"context"
	"io"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
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
		n, _ := io.Copy(io.Discard, out)
		s.Wait()
		if n != size {
			t.Fatalf("read %d bytes", n)
		}
		return float64(size) / (1 << 20) / time.Since(start).Seconds()
	}
	for range 2 {
		d, g := cat(direct), cat(gw)
		t.Logf("cat 256 MiB: direct %.0f MiB/s, gateway %.0f MiB/s (%.0f%%)", d, g, 100*g/d)
	}
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
	var total int64
	var ss []*mayfly.Session
	r.log.st.View(context.Background(), func(tx mayfly.Tx) error { ss, _ = tx.ListSessions(mayfly.SessionFilter{}); return nil })
	var evs []*mayfly.SessionEvent
	for _, x := range ss {
		evs = append(evs, r.log.events(t, x.ID)...)
	}
	for _, e := range evs {
		if e.Kind == EventCast {
			total += int64(len(e.Body))
		}
	}
	t.Logf("busy terminal (40 lines, 20 screens/s) for 10 s: %d KiB of cast events, %.1f MiB per minute", total>>10, float64(total)*6/(1<<20))
}
