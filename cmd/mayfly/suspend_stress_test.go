package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestSuspendDuringConcurrentActivations suspends a user while hundreds of
// their activations are in flight on PostgreSQL, MariaDB and Redis, then
// proves that none of their accounts is left on any of the three servers
// and that no lease of theirs stayed active: a suspension always wins over
// an activation, whatever the interleaving.
func TestSuspendDuringConcurrentActivations(t *testing.T) {
	ctx := context.Background()
	mdb, rdb := requireMariaDB(t), requireRedis(t)
	const prefix = "mfss_"
	targets := fmt.Sprintf(`  - {name: local-maria, kind: mysql, dsn: %q, prefix: %s,
     grants: {readonly: {statements: ["GRANT SELECT ON test.* TO {{name}}"]}}}
  - {name: local-redis, kind: redis, address: %q, prefix: %s,
     grants: {read: {acl: "~app:* +@read"}}}
`, testenv.MySQLDSN(), prefix, testenv.RedisAddr(), prefix)
	extra := `  - {name: stress, groups: [eng], targets: [local-maria, local-redis], grants: ["*"], max_duration: 1h}
`
	w := startWorld(t, worldOpts{prefix: prefix, targets: targets, extraYAML: extra})

	accesses := []string{"local-pg/readonly", "local-maria/readonly", "local-redis/read"}
	// Workers activate continuously while the user is suspended and
	// resumed several times, then suspended for good: each suspension lands
	// among activations in flight.
	const maxAttempts, workers, rounds, perRound = 1500, 24, 6, 40
	var next, issued, refused atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := next.Add(1)
				if n > maxAttempts {
					return
				}
				_, err := w.try("alice", "request", accesses[int(n)%len(accesses)], "--for", "30m", "--reason", "load", "--creds", "-o", "json")
				if err != nil {
					refused.Add(1)
				} else {
					issued.Add(1)
				}
			}
		}()
	}
	// waitFor waits until c reaches n, or the workers ran out of attempts.
	waitFor := func(c *atomic.Int32, n int32) {
		for c.Load() < n && next.Load() <= maxAttempts {
			time.Sleep(time.Millisecond)
		}
	}
	for r := int32(1); r <= rounds; r++ {
		waitFor(&issued, issued.Load()+perRound)
		w.ok("carol", nil, "users", "suspend", "alice")
		waitFor(&refused, refused.Load()+workers)
		if r < rounds {
			w.ok("carol", nil, "users", "resume", "alice")
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d activations issued a credential, %d refused", issued.Load(), refused.Load())
	if issued.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("issued %d, refused %d: the suspensions did not land among the activations", issued.Load(), refused.Load())
	}

	// Every lease of alice ends, none stays active.
	deadline := time.Now().Add(60 * time.Second)
	var live []string
	var ls []leaseOut
	for {
		w.ok("carol", &ls, "leases", "--user", "alice", "--all", "-o", "json")
		live = live[:0]
		for _, l := range ls {
			if l.State == "provisioning" || l.State == "active" || l.State == "revoking" {
				live = append(live, l.ID+" "+l.State)
			}
		}
		if len(live) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(live) > 0 {
		t.Fatalf("%d leases of the suspended user are still live after 60s: %v", len(live), live[:min(len(live), 10)])
	}

	// No lease went backwards: none was activated after it was ended.
	var events []struct {
		Action  string `json:"action"`
		LeaseID string `json:"lease_id"`
	}
	w.ok("carol", &events, "audit", "--actor", "alice", "--all", "-o", "json")
	var sys []struct {
		Action  string `json:"action"`
		LeaseID string `json:"lease_id"`
	}
	w.ok("carol", &sys, "audit", "--actor", "carol", "--all", "-o", "json")
	endedAt := map[string]bool{}
	for _, e := range sys {
		if e.Action == "lease.revoke" && e.LeaseID != "" {
			endedAt[e.LeaseID] = true
		}
	}
	backwards := 0
	for _, e := range events {
		if e.Action == "lease.activate" && endedAt[e.LeaseID] {
			// Activation and suspension events of one lease: the
			// activation must come first, or it wrote over the end.
			backwards += activatedAfterEnd(t, w, e.LeaseID)
		}
	}
	if backwards > 0 {
		t.Errorf("%d leases were activated after a suspension ended them", backwards)
	}

	// And the servers agree: no account made for any of these leases is
	// left on any of the three servers.
	pg, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	left := map[string][]string{}
	for _, l := range ls {
		var n int
		switch l.Target {
		case "local-pg":
			err = pg.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, l.Username).Scan(&n)
		case "local-maria":
			err = mdb.QueryRowContext(ctx, `SELECT count(*) FROM mysql.user WHERE user = ?`, l.Username).Scan(&n)
		case "local-redis":
			var u any
			u, err = rdb.Do(ctx, "ACL", "GETUSER", l.Username).Result()
			if err == redis.Nil {
				err = nil
			}
			if u != nil {
				n = 1
			}
		}
		if err != nil {
			t.Fatalf("look up %s on %s: %v", l.Username, l.Target, err)
		}
		if n > 0 {
			left[l.Target] = append(left[l.Target], l.Username+" ("+l.State+"/"+l.EndReason+")")
		}
	}
	if len(ls) < int(issued.Load()) {
		t.Fatalf("%d leases listed; want at least the %d issued", len(ls), issued.Load())
	}
	if len(left) > 0 {
		t.Errorf("accounts of the suspended user left on the servers: %v", left)
	}
}

// activatedAfterEnd reports 1 when lease id's audit trail has its
// activation after the suspension's end of it.
func activatedAfterEnd(t *testing.T, w *world, id string) int {
	t.Helper()
	var evs []struct {
		Seq    int64  `json:"seq"`
		Action string `json:"action"`
	}
	w.ok("carol", &evs, "audit", "--lease", id, "-o", "json")
	var revoke, activate int64
	for _, e := range evs {
		switch e.Action {
		case "lease.revoke":
			revoke = e.Seq
		case "lease.activate":
			activate = e.Seq
		}
	}
	if activate > revoke {
		return 1
	}
	return 0
}
