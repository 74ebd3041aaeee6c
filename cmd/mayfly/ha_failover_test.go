package main

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/store/postgres/pgtest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestDeadReplicasClaimsMoveWithinSeconds: replica A claims a due lease
// and its revocation hangs (A reaches the target through a proxy that
// stops answering). Replica B, started meanwhile, leaves the lease alone
// while A lives: A renews its claim, though its attempt outlasts the
// claim's term many times. A is SIGKILLed: B revokes the lease once the
// claim lapses, seconds later (the claim's term is 3 s), not after a
// minute.
func TestDeadReplicasClaimsMoveWithinSeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("two server processes; skipped with -short")
	}
	dsn := pgtest.NewDatabase(t)
	b := make([]byte, 3)
	rand.Read(b)
	prefix := "mf_fo" + hex.EncodeToString(b) + "_"
	base := newProcessWorld(t, worldOpts{prefix: prefix})
	base.usePostgresStore(dsn, base.addr)
	t.Cleanup(func() {
		if t.Failed() {
			dropRolesLike(t, prefix)
		}
	})
	proxy, target := testenv.ProxyTo(t, testenv.PostgresDSN())
	cfg, err := os.ReadFile(base.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), target.Host) {
		t.Fatalf("the target's address %s is not in the configuration", target.Host)
	}
	replica := func(mod func(string) string) *procReplica {
		w := &world{t: t, dir: t.TempDir(), addr: freeAddr(t), tokens: base.tokens, stderr: &syncBuffer{}}
		w.cfg = filepath.Join(w.dir, "mayfly.yaml")
		c := strings.Replace(string(cfg), "listen: "+base.addr, "listen: "+w.addr, 1)
		if err := os.WriteFile(w.cfg, []byte(mod(c)), 0o600); err != nil {
			t.Fatal(err)
		}
		r := &procReplica{world: w}
		t.Cleanup(func() {
			if r.cmd != nil {
				r.cmd.Process.Kill()
				<-r.done
			}
		})
		return r
	}
	// A reaches the target only through the proxy (the store directly).
	a := replica(func(c string) string {
		i := strings.Index(c, "targets:")
		return c[:i] + strings.ReplaceAll(c[i:], target.Host, proxy.Addr())
	})
	bRep := replica(func(c string) string { return c })
	a.start()

	var r reqOut
	a.ok("alice", &r, "request", "local-pg/readonly", "--for", "2s", "--reason", "failover", "-o", "json")
	var c credsOut
	a.ok("alice", &c, "creds", r.ID, "-o", "json")
	proxy.Freeze()
	// A claims the lease at its expiry and hangs revoking it.
	time.Sleep(time.Until(c.ExpiresAt.Add(1500 * time.Millisecond)))
	if n := rolesLike(t, prefix); n != 1 {
		t.Fatalf("%d roles with the prefix after the expiry, through a frozen proxy; want 1", n)
	}
	bRep.start()
	// Many claim terms with both alive: the role stays (A holds the lease
	// and renews its claim; B does not take it).
	time.Sleep(8 * time.Second)
	if n := rolesLike(t, prefix); n != 1 {
		t.Fatalf("%d roles with the prefix while A holds the lease; want 1 (B took the lease over from a live replica)", n)
	}
	a.kill()
	killed := time.Now()
	waitFor(t, "B to revoke the dead replica's lease", 30*time.Second, func() bool { return rolesLike(t, prefix) == 0 })
	took := time.Since(killed)
	t.Logf("the lease claimed by the killed replica was revoked by the other %s after the kill", took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("revoked %s after the kill; want within seconds (claims last 3 s)", took.Round(time.Millisecond))
	}
	// The outcome is recorded just after the role is dropped.
	waitFor(t, "B to record the lease revoked", 10*time.Second, func() bool {
		var ls []leaseOut
		bRep.ok("carol", &ls, "leases", "--all", "-o", "json")
		for _, l := range ls {
			if l.ID == c.LeaseID {
				return l.State == "revoked"
			}
		}
		return false
	})
}

// TestLeaseOfStoppedReplicaRevokedOnTime: a lease issued through replica
// A, which stops before the lease expires, is revoked by replica B within
// seconds of its expiry. B's scheduler had nothing due when it last read the
// store and was never told of the lease (A wakes only its own scheduler),
// so it finds the lease by polling the shared store; a sleep of the
// single-process default (30 s) would leave the account for up to that long.
func TestLeaseOfStoppedReplicaRevokedOnTime(t *testing.T) {
	a, b, _ := twoReplicas(t, worldOpts{})
	// B's scheduler has read the store and gone to sleep with nothing due.
	time.Sleep(500 * time.Millisecond)

	var r reqOut
	a.ok("alice", &r, "request", "local-pg/readonly", "--for", "3s", "--reason", "INC-7 replica stops", "-o", "json")
	var c credsOut
	a.ok("alice", &c, "creds", r.ID, "-o", "json")
	if !roleExists(t, c.Username) {
		t.Fatalf("role %s not created", c.Username)
	}
	a.halt()
	waitFor(t, "B to revoke the stopped replica's lease", 40*time.Second, func() bool { return !roleExists(t, c.Username) })
	late := time.Since(c.ExpiresAt)
	t.Logf("the lease of the stopped replica was revoked by the other %s after its expiry", late.Round(time.Millisecond))
	if late > 4*time.Second {
		t.Errorf("revoked %s after the expiry; want within a few seconds (schedulers on a shared store poll every %s)",
			late.Round(time.Millisecond), broker.SharedMaxSleep)
	}
	var l leaseOut
	waitFor(t, "B to record the lease revoked", 10*time.Second, func() bool {
		var ls []leaseOut
		b.ok("carol", &ls, "leases", "--all", "-o", "json")
		for _, x := range ls {
			if x.ID == c.LeaseID {
				l = x
			}
		}
		return l.State == "revoked"
	})
	if l.EndReason != "expired" {
		t.Errorf("lease %s ended for %q; want expired", l.ID, l.EndReason)
	}
}
