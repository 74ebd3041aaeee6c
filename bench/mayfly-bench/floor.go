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
	"os"
	"os/exec"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayflyhq/mayfly/internal/connector/postgres"
)

// The floor of the one-call issue: the least any broker must do for it
// while keeping intent before action, served by a process of its own so
// that it pays the same process hops as Mayfly: one HTTP call in; a new
// password and its SCRAM verifier; the CREATE ROLE sent in a transaction
// left open on the target; meanwhile the intent committed, durably, to
// the store's database (one INSERT); then the role's COMMIT; the
// credential out. No authentication, policy, audit, lease record or
// response view: what is left is round trips and wake-ups, the part of
// the issue latency no implementation can remove. The latency part times
// it beside Mayfly's issue (-store postgres only).

var floorServe = flag.String("floor-serve", "", "internal: serve the floor of the one-call issue at this address (the latency part starts it)")

// floorTable holds the floor's intents, in the store's database.
const floorTable = "mayfly_bench_floor"

// floorRole prefixes the floor's roles (dropped with the bare ones).
const floorRole = "mf_bench_floor_"

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
		cred, err := floorIssue(r.Context(), target, store, fmt.Sprintf("%s%d_%d", floorRole, os.Getpid(), n), time.Now().Add(d))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(cred)
	})
	return http.ListenAndServe(addr, nil)
}

// floorPool is a pool that keeps a connection open, as Mayfly's do.
func floorPool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MinConns = 2
	return pgxpool.NewWithConfig(ctx, cfg)
}

// floorIssue makes role name, valid until until, with the intent
// committed to the store before the role is.
func floorIssue(ctx context.Context, target, store *pgxpool.Pool, name string, until time.Time) (floorCredential, error) {
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
	_, serr := store.Exec(ctx, "INSERT INTO "+floorTable+" (username, expires_at) VALUES ($1, $2)", name, until)
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

// floor is the floor's server, started by the latency part.
type floor struct {
	cmd    *exec.Cmd
	url    string
	client *http.Client
}

// startFloor starts the floor's server, a copy of this program.
func startFloor() (*floor, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr := freePort()
	args := append([]string{"-floor-serve", addr}, os.Args[1:]...)
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	f := &floor{cmd: cmd, url: "http://" + addr + "/issue", client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if cred, err := f.issue(context.Background(), time.Minute); err == nil {
			if err := floorLogin(cred); err != nil {
				f.stop()
				return nil, err
			}
			return f, nil
		} else if time.Now().After(deadline) {
			f.stop()
			return nil, fmt.Errorf("the floor's server at %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// issue makes one account through the floor.
func (f *floor) issue(ctx context.Context, d time.Duration) (floorCredential, error) {
	var cred floorCredential
	body, _ := json.Marshal(map[string]string{"duration": d.String()})
	req, err := http.NewRequestWithContext(ctx, "POST", f.url, bytes.NewReader(body))
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
	f.cmd.Process.Kill()
	f.cmd.Wait()
}
