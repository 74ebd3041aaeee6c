package main

import (
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestPostgresGatewayTargetDown: while the target cannot be reached, or
// hangs, a client of the gateway is refused with an error that names the
// target and says why, and tells nothing of the target's address; no
// session is recorded for it; once the target is back, the same credential
// works.
func TestPostgresGatewayTargetDown(t *testing.T) {
	proxy, target := testenv.ProxyTo(t, testenv.PostgresDSN())
	opts := gatewayOpts(t, "", "", "")
	if !strings.Contains(opts.targets, target.Host) {
		t.Fatalf("the target's address %s is not in the configuration", target.Host)
	}
	// A target that hangs is given up after the DSN's connect_timeout.
	opts.targets = strings.Replace(opts.targets, target.Host, proxy.Addr(), 1)
	if !strings.Contains(opts.targets, "?") {
		t.Fatalf("the target's DSN has no query to add connect_timeout to: %s", opts.targets)
	}
	opts.targets = strings.Replace(opts.targets, "?", "?connect_timeout=2&", 1)
	w := startWorld(t, opts)
	c := gatewayCreds(t, w)

	sessions := func() int {
		var ss []gwSession
		w.ok("alice", &ss, "sessions", "--lease", c.Username, "-o", "json")
		return len(ss)
	}
	if out, err := psqlAt(t, c, c.Password, "-c", "SELECT 40 + 2"); err != nil || strings.TrimSpace(out) != "42" {
		t.Fatalf("psql through the gateway = %q, %v; want 42", out, err)
	}
	before := sessions()

	proxy.Cut()
	out, err := psqlAt(t, c, c.Password, "-c", "SELECT 1")
	if err == nil {
		t.Fatalf("psql through the gateway with the target down = %q; want an error", out)
	}
	msg := err.Error()
	if !strings.Contains(msg, "could not connect to target gw-pg") || !strings.Contains(msg, "the target is unreachable") {
		t.Errorf("psql with the target down: %q; want the target named and unreachable", msg)
	}
	// What the gateway said (psql names the gateway's own address before it).
	_, said, _ := strings.Cut(msg, "FATAL:")
	_, proxyPort, _ := strings.Cut(proxy.Addr(), ":")
	for _, leak := range []string{proxy.Addr(), ":" + proxyPort, target.Host, c.Password} {
		if strings.Contains(said, leak) {
			t.Errorf("the gateway's error tells %q: %s", leak, said)
		}
	}
	t.Logf("refused with: %s", strings.TrimSpace(said))
	if n := sessions(); n != before {
		t.Errorf("sessions after a refused connection = %d; want %d (none recorded)", n, before)
	}

	proxy.Thaw()
	if out, err := psqlAt(t, c, c.Password, "-c", "SELECT 40 + 2"); err != nil || strings.TrimSpace(out) != "42" {
		t.Fatalf("psql through the gateway once the target is back = %q, %v; want 42", out, err)
	}

	// A target that accepts the connection and then says nothing: the
	// gateway gives up after the DSN's connect_timeout (2 s here, before
	// psql's own 5 s) and says so, rather than leaving the client to time
	// out on its own.
	before = sessions()
	proxy.Freeze()
	out, err = psqlAt(t, c, c.Password, "-c", "SELECT 1")
	if err == nil {
		t.Fatalf("psql through the gateway with the target hanging = %q; want an error", out)
	}
	if msg := err.Error(); !strings.Contains(msg, "could not connect to target gw-pg: the target did not answer within 2s") {
		t.Errorf("psql with the target hanging: %q; want the gateway to say the target did not answer within 2s", msg)
	}
	if n := sessions(); n != before {
		t.Errorf("sessions after a connection to a hanging target = %d; want %d (none recorded)", n, before)
	}
	proxy.Thaw()
	if out, err := psqlAt(t, c, c.Password, "-c", "SELECT 40 + 2"); err != nil || strings.TrimSpace(out) != "42" {
		t.Fatalf("psql through the gateway once the target answers again = %q, %v; want 42", out, err)
	}
}
