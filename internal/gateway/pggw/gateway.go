// Package pggw is Mayfly's PostgreSQL gateway: clients of grants with
// via: gateway connect to it with a secret valid only there, for one lease,
// while the lease lives; it authenticates them (SCRAM-SHA-256, over TLS
// when configured), connects to the target as the lease's account with the
// password only the broker holds, relays the PostgreSQL protocol both ways
// with pgproto3 (simple and extended queries, COPY, cancel requests,
// notices unchanged), records every statement in the session log, and
// closes the connection the moment the lease ends.
package pggw

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
)

// secretIterations is the SCRAM iteration count of gateway secrets: they
// are random and long (256 bits), so iterations add nothing against
// guessing; 4096 is PostgreSQL's default.
const secretIterations = 4096

// Target is what the gateway needs of a PostgreSQL connector.
type Target interface {
	// SessionConfig returns the settings to connect to the target as cred.
	SessionConfig(cred mayfly.Credential) *pgconn.Config
	// ResetPassword gives a lease's account a new password.
	ResetPassword(ctx context.Context, leaseID, username, database string) (mayfly.Credential, error)
}

var _ Target = (*postgres.Connector)(nil)

// Options configure a Gateway.
type Options struct {
	Broker *broker.Broker
	Log    *sessionlog.Log
	Logger *slog.Logger
	// TLS, when set, is required of every client.
	TLS *tls.Config
	// Host and Port are the address credentials give.
	Host string
	Port int
	// Replica, when set, is this process's replica id on a store that
	// replicas share: each connection's cancel key is then recorded in the
	// store, so that a cancel request reaching another replica's gateway
	// (a new connection, which a load balancer may send anywhere) is
	// forwarded to the target from there.
	Replica string
}

// Gateway is the PostgreSQL gateway.
type Gateway struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	creds   map[string]mayfly.Credential // lease id → the account's own credential
	conns   map[*conn]struct{}
	cancels map[uint32]*conn // gateway process id → connection
}

// New returns a gateway; Serve runs it.
func New(o Options) *Gateway {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Gateway{o: o, log: o.Logger, creds: map[string]mayfly.Credential{}, conns: map[*conn]struct{}{},
		cancels: map[uint32]*conn{}}
}

var _ broker.GatewayIssuer = (*Gateway)(nil)

// Issue keeps target, the lease's account credential, in memory and
// returns the gateway credential: this gateway's address, the lease id as
// the login name and a new random secret, whose SCRAM verifier the broker
// stores.
func (g *Gateway) Issue(l *mayfly.Lease, target mayfly.Credential) (mayfly.Credential, string, error) {
	secret := postgres.GeneratePassword()
	salt := make([]byte, 16)
	rand.Read(salt)
	v := postgres.SCRAMVerifier(secret, salt, secretIterations)
	g.mu.Lock()
	g.creds[l.ID] = target
	g.mu.Unlock()
	return mayfly.Credential{Username: l.ID, Password: secret, Host: g.o.Host, Port: g.o.Port, Database: target.Database}, v, nil
}

// Serve accepts clients on ln until ctx ends, then closes every
// connection and records their sessions' ends.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); g.watch(ctx) }()
	if g.o.Replica != "" {
		wg.Add(1)
		go func() { defer wg.Done(); g.pruneLoop(ctx) }()
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				g.closeAll("shutdown")
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			g.closeAll("shutdown")
			return fmt.Errorf("postgres gateway: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.handle(ctx, nc)
		}()
	}
}

// watch closes connections whose lease has ended or expired: at once on
// every committed change of state (local or, on a shared store, another
// replica's), and at least every second.
func (g *Gateway) watch(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		changed := g.o.Broker.Changed()
		g.checkLeases(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// checkLeases ends the connections of leases no longer active.
func (g *Gateway) checkLeases(ctx context.Context) {
	g.mu.Lock()
	byLease := map[string][]*conn{}
	for c := range g.conns {
		if c.leaseID != "" {
			byLease[c.leaseID] = append(byLease[c.leaseID], c)
		}
	}
	g.mu.Unlock()
	if len(byLease) == 0 {
		return
	}
	ids := make([]string, 0, len(byLease))
	for id := range byLease {
		ids = append(ids, id)
	}
	var ls []*mayfly.Lease
	err := g.o.Broker.Store().View(ctx, func(tx mayfly.Tx) error {
		var err error
		ls, err = tx.ListLeases(mayfly.LeaseFilter{IDs: ids})
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("postgres gateway: read leases of live sessions", "err", err)
		}
		return
	}
	now := g.o.Broker.Now()
	live := map[string]bool{}
	for _, l := range ls {
		if l.State == mayfly.LeaseActive && now.Before(l.ExpiresAt) {
			live[l.ID] = true
		}
	}
	for id, cs := range byLease {
		if live[id] {
			continue
		}
		g.mu.Lock()
		delete(g.creds, id)
		g.mu.Unlock()
		for _, c := range cs {
			c.kill("revoked")
		}
	}
}

func (g *Gateway) closeAll(reason string) {
	g.mu.Lock()
	cs := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		cs = append(cs, c)
	}
	g.mu.Unlock()
	for _, c := range cs {
		c.kill(reason)
	}
}

// register adds c to the live connections under a new cancel key, one
// that no other replica's connection has when the store is shared.
func (g *Gateway) register(ctx context.Context, c *conn) {
	g.mu.Lock()
	g.conns[c] = struct{}{}
	g.mu.Unlock()
	for {
		g.mu.Lock()
		for {
			var b [8]byte
			rand.Read(b[:])
			pid := binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
			if _, taken := g.cancels[pid]; pid == 0 || taken {
				continue
			}
			c.pid, c.key = pid, b[4:]
			g.cancels[pid] = c
			break
		}
		g.mu.Unlock()
		if g.o.Replica == "" {
			return
		}
		taken, err := g.shareCancel(ctx, c)
		if err != nil {
			g.log.Warn("postgres gateway: record the cancel key in the store; cancel requests for this connection that reach another replica will be ignored", "lease", c.leaseID, "err", err)
			return
		}
		if !taken {
			return
		}
		g.mu.Lock()
		delete(g.cancels, c.pid)
		g.mu.Unlock()
	}
}

func (g *Gateway) unregister(c *conn) {
	g.mu.Lock()
	delete(g.conns, c)
	mine := g.cancels[c.pid] == c
	if mine {
		delete(g.cancels, c.pid)
	}
	g.mu.Unlock()
	if mine && g.o.Replica != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := g.o.Broker.Store().Update(ctx, func(tx mayfly.Tx) error { return tx.DeleteSetting(cancelSetting(c.pid)) })
		if err != nil {
			g.log.Warn("postgres gateway: remove the cancel key from the store (the next prune does)", "err", err)
		}
	}
}

// cancelKeyPrefix starts the store settings that record, on a store
// replicas share, where each gateway connection's cancel requests go. The
// key is the gateway process id the client was given.
const cancelKeyPrefix = "pggw.cancel."

func cancelSetting(pid uint32) string { return cancelKeyPrefix + strconv.FormatUint(uint64(pid), 10) }

// sharedCancel is what a replica records of a connection for the others: the
// client's secret key and the target backend's cancel key. Whoever reads the
// store can cancel that connection's queries with it, nothing more.
type sharedCancel struct {
	Key        string `json:"key"` // the client's, hex
	Addr       string `json:"addr"`
	PID        uint32 `json:"pid"`
	BackendKey string `json:"backend_key"` // hex
	Replica    string `json:"replica"`
}

// shareCancel records c's cancel key in the store; taken reports that
// another replica's connection has its process id.
func (g *Gateway) shareCancel(ctx context.Context, c *conn) (taken bool, err error) {
	c.mu.Lock()
	rec := sharedCancel{Key: hex.EncodeToString(c.key), Addr: c.backendAddr, PID: c.backendPID,
		BackendKey: hex.EncodeToString(c.backendKey), Replica: g.o.Replica}
	c.mu.Unlock()
	v, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = g.o.Broker.Store().Update(ctx, func(tx mayfly.Tx) error {
		taken = false
		if _, err := tx.GetSetting(cancelSetting(c.pid)); err == nil {
			taken = true
			return nil
		} else if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			return err
		}
		return tx.PutSetting(cancelSetting(c.pid), string(v))
	})
	return taken, err
}

// pruneEvery is how often a replica removes the cancel keys that replicas
// killed before they removed their own left in the store.
const pruneEvery = 10 * time.Minute

// The first prune is at start.
func (g *Gateway) pruneLoop(ctx context.Context) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		if err := g.pruneCancels(ctx, time.Now()); err != nil && ctx.Err() == nil {
			g.log.Warn("postgres gateway: prune the cancel keys of replicas that are gone", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneCancels removes the cancel keys of replicas not seen for a minute
// (killed before they removed their own).
func (g *Gateway) pruneCancels(ctx context.Context, now time.Time) error {
	return g.o.Broker.Store().Update(ctx, func(tx mayfly.Tx) error {
		keys, err := tx.ListSettings(cancelKeyPrefix)
		if err != nil || len(keys) == 0 {
			return err
		}
		reps, err := tx.ListReplicas()
		if err != nil {
			return err
		}
		live := map[string]bool{g.o.Replica: true}
		for _, r := range reps {
			live[r.ID] = now.Sub(r.LastSeen) < time.Minute
		}
		for k, v := range keys {
			var rec sharedCancel
			if json.Unmarshal([]byte(v), &rec) == nil && live[rec.Replica] {
				continue
			}
			if err := tx.DeleteSetting(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// cancel forwards a client's cancel request to the backend of the
// connection it names, when its key matches: one of this gateway's, or on
// a shared store one of another replica's, as the store records it.
func (g *Gateway) cancel(ctx context.Context, req *pgproto3.CancelRequest) {
	g.mu.Lock()
	c := g.cancels[req.ProcessID]
	g.mu.Unlock()
	var addr string
	var pid uint32
	var key []byte
	switch {
	case c != nil:
		if subtle.ConstantTimeCompare(c.key, req.SecretKey) != 1 {
			return
		}
		c.mu.Lock()
		addr, pid, key = c.backendAddr, c.backendPID, c.backendKey
		c.mu.Unlock()
	case g.o.Replica != "":
		var v string
		err := g.o.Broker.Store().View(ctx, func(tx mayfly.Tx) error {
			var err error
			v, err = tx.GetSetting(cancelSetting(req.ProcessID))
			return err
		})
		if err != nil {
			if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
				g.log.Warn("postgres gateway: look up a cancel key in the store", "err", err)
			}
			return
		}
		var rec sharedCancel
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			return
		}
		ck, err1 := hex.DecodeString(rec.Key)
		bk, err2 := hex.DecodeString(rec.BackendKey)
		if err1 != nil || err2 != nil || subtle.ConstantTimeCompare(ck, req.SecretKey) != 1 {
			return
		}
		addr, pid, key = rec.Addr, rec.PID, bk
	}
	if addr == "" {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		g.log.Warn("postgres gateway: send cancel request", "err", err)
		return
	}
	defer nc.Close()
	fe := pgproto3.NewFrontend(nc, nc)
	fe.Send(&pgproto3.CancelRequest{ProcessID: pid, SecretKey: key})
	if err := fe.Flush(); err != nil {
		g.log.Warn("postgres gateway: send cancel request", "err", err)
		return
	}
	// The server closes the connection when it has read the request.
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	nc.Read(b[:])
}

// targetCred returns the account credential of lease l: the one held in
// memory, or (after a restart, or when fresh is set because the held one
// was refused) a new password set on the account now.
func (g *Gateway) targetCred(ctx context.Context, l *mayfly.Lease, database string, fresh bool) (mayfly.Credential, Target, error) {
	conn := g.o.Broker.Connector(l.Target)
	if w, ok := conn.(interface{ Inner() mayfly.Connector }); ok {
		// A connector whose admin credential is sealed and may rotate
		// (internal/credential): the one in force now.
		conn = w.Inner()
	}
	t, ok := conn.(Target)
	if !ok {
		return mayfly.Credential{}, nil, mayfly.Errorf(mayfly.EINVALID, "target %s is not a PostgreSQL target", l.Target)
	}
	g.mu.Lock()
	cred, ok := g.creds[l.ID]
	g.mu.Unlock()
	if ok && !fresh {
		return cred, t, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cred, err := t.ResetPassword(rctx, l.ID, l.Username, database)
	if err != nil {
		return mayfly.Credential{}, nil, err
	}
	g.mu.Lock()
	g.creds[l.ID] = cred
	g.mu.Unlock()
	return cred, t, nil
}
