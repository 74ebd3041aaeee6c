package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	pgstore "github.com/mayflyhq/mayfly/internal/store/postgres"
)

// The floor of the one-call issue: the least any broker must do for it
// while keeping intent before action, served by processes of its own (one
// a replica) so that it pays the same process hops as Mayfly: one HTTP
// call in; a new password and its SCRAM verifier; the CREATE ROLE sent in
// a transaction left open on the target; meanwhile the intent committed,
// durably, to the store's database (one INSERT); then the role's COMMIT;
// the credential out. No authentication, policy, audit, lease record or
// response view: what is left is round trips and wake-ups, the part of
// the issue latency no implementation can remove. The latency part times
// it beside Mayfly's issue (-store postgres only).
//
// A second floor (POST /issue?records=1) writes, instead of the one
// INSERT, the records the issue asks of any broker in the same durable
// transaction, through Mayfly's own PostgreSQL store on a database of its
// own: the request, the lease and three audit events chained on the head
// (request.create, lease.intent, lease.activate), as the broker's
// one-call transaction does. What Mayfly takes beyond it is its
// authentication, policy, HTTP handling and the target's mark.

var floorServe = flag.String("floor-serve", "", "internal: serve the floor of the one-call issue at this address (the latency part starts it)")

// floorTable holds the floor's intents, in the store's database.
const floorTable = "mayfly_bench_floor"

// floorRole prefixes the floor's roles (dropped with the bare ones).
const floorRole = "mf_bench_floor_"

// floorDB is the database of the second floor's store.
const floorDB = "mayfly_bench_floor"

// floorCredential is the floor's answer.
type floorCredential struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// serveFloor serves POST /issue at addr until killed.
func serveFloor(ctx context.Context, addr string) error {
	target, err := floorPool(ctx, *pgDSN)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	store, err := floorPool(ctx, storeDSN())
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if _, err := store.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+floorTable+" (id bigserial PRIMARY KEY, username text NOT NULL, expires_at timestamptz NOT NULL)"); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	records, err := floorStore(ctx)
	if err != nil {
		return fmt.Errorf("records: %w", err)
	}
	var n int
	http.HandleFunc("POST /issue", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Duration string `json:"duration"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d, err := time.ParseDuration(body.Duration)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n++ // one client: calls never overlap
		name, until := fmt.Sprintf("%s%d_%d", floorRole, os.Getpid(), n), time.Now().Add(d)
		intent := func(ctx context.Context) error {
			_, err := store.Exec(ctx, "INSERT INTO "+floorTable+" (username, expires_at) VALUES ($1, $2)", name, until)
			return err
		}
		if r.URL.Query().Get("records") == "1" {
			intent = func(ctx context.Context) error { return floorRecords(ctx, records, n, name, until) }
		}
		cred, err := floorIssue(r.Context(), target, intent, name, until)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(cred)
	})
	return http.ListenAndServe(addr, nil)
}

// floorPool is a pool that keeps a connection open, as Mayfly's do, and
// never pings one before use (pgxpool's default after a second idle: a
// round trip Mayfly's pools do not make either).
func floorPool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MinConns = 2
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	return pgxpool.NewWithConfig(ctx, cfg)
}

// floorStore opens Mayfly's PostgreSQL store on the second floor's
// database (made by freshDatabase).
func floorStore(ctx context.Context) (*pgstore.DB, error) {
	u, err := url.Parse(storeServerDSN())
	if err != nil {
		return nil, err
	}
	u.Path = "/" + floorDB
	return pgstore.Open(ctx, u.String(), 4)
}

// dropFloorStore drops the second floor's database.
func dropFloorStore(ctx context.Context) {
	if c, err := pgx.Connect(ctx, storeServerDSN()); err == nil {
		c.Exec(ctx, "DROP DATABASE IF EXISTS "+floorDB+" WITH (FORCE)")
		c.Close(ctx)
	}
}

// floorRecords commits, in one transaction of Mayfly's store, what the
// broker's one-call transaction records: the request, the active lease
// (its intent, unless the user is suspended) and three chained events.
func floorRecords(ctx context.Context, db *pgstore.DB, n int, name string, until time.Time) error {
	now := time.Now().UTC()
	id := fmt.Sprintf("%d_%d", os.Getpid(), n)
	r := &mayfly.Request{ID: "req_" + id, Requester: "bench", Target: "pg", Grant: "readonly", Reason: "bench", Duration: time.Hour,
		Policy: "bench", CreatedAt: now, DecidedAt: now, State: mayfly.RequestApproved, LeaseID: "lse_" + id}
	l := &mayfly.Lease{ID: r.LeaseID, RequestID: r.ID, Requester: "bench", Target: "pg", Grant: "readonly", Username: name,
		State: mayfly.LeaseActive, CreatedAt: now, ExpiresAt: until, DueAt: until, SecretHMAC: "hmac"}
	event := func(action string) *mayfly.AuditEvent {
		return &mayfly.AuditEvent{Time: now, Actor: "bench", Action: action, Subject: "lease:" + l.ID, Target: "pg",
			RequestID: r.ID, LeaseID: l.ID, Reason: "bench", Source: "api", Data: map[string]string{"username": name}}
	}
	return db.Update(ctx, func(tx mayfly.Tx) error {
		mayfly.DeferNextWrite(tx)
		if err := tx.CreateRequest(r); err != nil {
			return err
		}
		if err := tx.AppendAudit(event("request.create")); err != nil {
			return err
		}
		if err := mayfly.WriteIntentUnless(tx, l, "suspended", "deprovisioned"); err != nil {
			return err
		}
		if err := tx.AppendAudit(event("lease.intent")); err != nil {
			return err
		}
		return tx.AppendAudit(event("lease.activate"))
	})
}

// floorIssue makes role name, valid until until, with the intent
// committed to the store (by intent) before the role is.
func floorIssue(ctx context.Context, target *pgxpool.Pool, intent func(context.Context) error, name string, until time.Time) (floorCredential, error) {
	pw := postgres.GeneratePassword()
	salt := make([]byte, 16)
	rand.Read(salt)
	conn, err := target.Acquire(ctx)
	if err != nil {
		return floorCredential{}, err
	}
	defer conn.Release()
	create := fmt.Sprintf("BEGIN; SET LOCAL synchronous_commit TO off; CREATE ROLE %s LOGIN PASSWORD '%s' VALID UNTIL '%s' CONNECTION LIMIT 10 IN ROLE pg_read_all_data",
		pgx.Identifier{name}.Sanitize(), postgres.SCRAMVerifier(pw, salt, 1), until.UTC().Format(time.RFC3339))
	staged := conn.Conn().PgConn().Exec(ctx, create)
	serr := intent(ctx)
	_, terr := staged.ReadAll()
	if err := errors.Join(serr, terr); err != nil {
		conn.Exec(ctx, "ROLLBACK")
		return floorCredential{}, err
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return floorCredential{}, err
	}
	return floorCredential{Username: name, Password: pw}, nil
}

// floor is the floor's servers, started by the latency part: as many
// processes as the broker's replicas, sharing the store, each call sent
// to the next in turn as the broker's are, so that the floor pays the
// same wake-ups of processes idle between their calls.
type floor struct {
	cmds   []*exec.Cmd
	urls   []string
	next   int
	client *http.Client
}

// withRecords is the second floor's query.
const withRecords = "?records=1"

// startFloor starts the floor's servers, copies of this program, one
// after the other (each makes the first floor's table if missing).
func startFloor(ctx context.Context, n int) (*floor, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if err := freshDatabase(ctx, floorDB); err != nil {
		return nil, fmt.Errorf("the floor's store: %w", err)
	}
	f := &floor{client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
	for range max(n, 1) {
		addr := freePort()
		cmd := exec.Command(self, append([]string{"-floor-serve", addr}, os.Args[1:]...)...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			f.stop()
			return nil, err
		}
		f.cmds, f.urls = append(f.cmds, cmd), append(f.urls, "http://"+addr+"/issue")
		f.next = len(f.urls) - 1
		deadline := time.Now().Add(30 * time.Second)
		for {
			cred, err := f.issue(ctx, time.Minute, "")
			if err == nil {
				err = floorLogin(cred)
				if err != nil {
					f.stop()
					return nil, err
				}
				break
			}
			if time.Now().After(deadline) {
				f.stop()
				return nil, fmt.Errorf("the floor's server at %s: %w", addr, err)
			}
			f.next = len(f.urls) - 1
			time.Sleep(20 * time.Millisecond)
		}
	}
	return f, nil
}

// issue makes one account through the floor (with query withRecords, the
// second floor).
func (f *floor) issue(ctx context.Context, d time.Duration, query string) (floorCredential, error) {
	var cred floorCredential
	body, _ := json.Marshal(map[string]string{"duration": d.String()})
	u := f.urls[f.next]
	f.next = (f.next + 1) % len(f.urls)
	req, err := http.NewRequestWithContext(ctx, "POST", u+query, bytes.NewReader(body))
	if err != nil {
		return cred, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return cred, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cred, fmt.Errorf("floor: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&cred); err != nil {
		return cred, err
	}
	if cred.Username == "" || cred.Password == "" {
		return cred, errors.New("floor: no credential")
	}
	return cred, nil
}

// floorLogin proves that cred logs in to the target: the floor makes
// working accounts.
func floorLogin(cred floorCredential) error {
	cfg, err := pgx.ParseConfig(*pgDSN)
	if err != nil {
		return err
	}
	cfg.User, cfg.Password = cred.Username, cred.Password
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("the floor's credential does not log in: %w", err)
	}
	return c.Close(ctx)
}

func (f *floor) stop() {
	for _, c := range f.cmds {
		c.Process.Kill()
		c.Wait()
	}
	dropFloorStore(context.Background())
}
