// Package sshgw is Mayfly's SSH gateway. Users reach hosts whose grants say
// `via: gateway` through it with plain OpenSSH: they authenticate with the
// key and certificate of their lease, the gateway checks the lease at the
// broker and logs in to the host with a short-lived certificate of its own
// that never leaves it, and proxies the channels (shells, exec, SFTP and
// scp, and — where the grant permits — agent and port forwarding) while it
// records them into the session log: terminal output and input as asciicast
// v2, commands with their exit status, file transfers by name and size.
// Revoking the lease closes its connections at once.
package sshgw

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/ssh"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
)

const (
	// extLease carries the lease ID from authentication to the connection.
	extLease = "mayfly-lease@mayfly"
	// recheckEvery is how often live connections' leases are read again
	// even when the broker reports no change (a change made by another
	// replica that was missed).
	recheckEvery = 2 * time.Second
	// touchEvery bounds how often activity is reported to the broker.
	touchEvery  = mayfly.GatewayActivityEvery
	dialTimeout = 10 * time.Second
	// closeWait is how long Close waits for connections to finish
	// recording before it gives up on the session log.
	closeWait = 15 * time.Second
)

// Leases is what the gateway needs from the broker.
type Leases interface {
	// Lease returns the lease with id as the store has it now.
	Lease(ctx context.Context, id string) (*mayfly.Lease, error)
	// Route returns the connector of the lease's target and where its
	// sessions go; an error when the grant is not reached via the gateway.
	Route(l *mayfly.Lease) (*ssh.Connector, ssh.Route, error)
	// Changed returns a channel closed at the next committed state change.
	Changed() <-chan struct{}
	// Touch records activity of the lease seen at the gateway.
	Touch(id string, at time.Time)
}

// Options configure a Server.
type Options struct {
	HostKey gossh.Signer
	CA      *ssh.CA
	Leases  Leases
	// Log is the session log every session is recorded in.
	Log    *sessionlog.Log
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// RecordWithoutPTY is how many bytes of each stream a channel without
	// a terminal has recorded (DefaultRecordWithoutPTY when 0; every byte
	// when negative).
	RecordWithoutPTY int64
}

// DefaultRecordWithoutPTY is Options.RecordWithoutPTY's default: enough
// for what a command prints, not for bulk data (which would make every
// transfer as slow as the store).
const DefaultRecordWithoutPTY = 1 << 20

// untermLimit is the per-stream recording limit of channels without a
// terminal (0: none).
func (s *Server) untermLimit() int64 {
	switch n := s.o.RecordWithoutPTY; {
	case n == 0:
		return DefaultRecordWithoutPTY
	case n < 0:
		return 0
	default:
		return n
	}
}

// Server is the SSH gateway.
type Server struct {
	o   Options
	cfg *gossh.ServerConfig

	mu     sync.Mutex
	conns  map[string]map[*gwConn]struct{} // by lease ID
	ls     []net.Listener
	closed bool
	wg     sync.WaitGroup
	stop   chan struct{}
	// ctx bounds waits for the session log; cancelled when Close gives up
	// waiting for the connections to finish recording.
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns a gateway; Serve starts it.
func New(o Options) (*Server, error) {
	if o.HostKey == nil || o.CA == nil || o.Leases == nil || o.Log == nil {
		return nil, errors.New("sshgw: host key, CA, leases and log are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{o: o, conns: map[string]map[*gwConn]struct{}{}, stop: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.cfg = &gossh.ServerConfig{
		PublicKeyCallback: s.authenticate,
		ServerVersion:     "SSH-2.0-Mayfly",
		MaxAuthTries:      6,
	}
	// Every byte crosses the gateway twice, decrypted and encrypted again:
	// offer only AES-GCM, which CPUs do in hardware (OpenSSH would pick
	// ChaCha20-Poly1305 first, at half the gateway's throughput). Every
	// OpenSSH since 6.2 has it.
	s.cfg.Ciphers = []string{gossh.CipherAES128GCM, gossh.CipherAES256GCM}
	s.cfg.AddHostKey(o.HostKey)
	s.wg.Add(1)
	go s.watch()
	return s, nil
}

// authenticate accepts only a certificate of Mayfly's CA issued for an
// active lease of a grant via the gateway, presented for the login the
// lease uses on its host.
func (s *Server) authenticate(meta gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
	cert, ok := key.(*gossh.Certificate)
	if !ok {
		return nil, errors.New("a certificate of a Mayfly lease is required")
	}
	if cert.CertType != gossh.UserCert || !s.o.CA.IsAuthority(cert.SignatureKey) {
		return nil, errors.New("certificate not issued by Mayfly's CA")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := s.o.Leases.Lease(ctx, cert.KeyId)
	if err != nil {
		s.o.Logger.Info("ssh gateway: login refused", "lease", cert.KeyId, "client", meta.RemoteAddr().String(), "why", mayfly.ErrorMessageOrText(err))
		return nil, fmt.Errorf("lease %q: %w", cert.KeyId, err)
	}
	if l.State != mayfly.LeaseActive || !s.o.Now().Before(l.ExpiresAt) {
		s.o.Logger.Info("ssh gateway: login refused", "lease", l.ID, "state", string(l.State), "client", meta.RemoteAddr().String())
		return nil, fmt.Errorf("lease %s is %s", l.ID, l.State)
	}
	sc, route, err := s.o.Leases.Route(l)
	if err != nil {
		return nil, err
	}
	checker := gossh.CertChecker{
		IsUserAuthority:          s.o.CA.IsAuthority,
		SupportedCriticalOptions: []string{"force-command", "source-address"},
		Clock:                    s.o.Now,
	}
	if err := checker.CheckCert(ssh.GatewayPrincipal(l.Username), cert); err != nil {
		return nil, err
	}
	if revoked, err := sc.CertRevoked(cert); err != nil || revoked {
		return nil, fmt.Errorf("certificate of lease %s is revoked", l.ID)
	}
	if meta.User() != route.Login {
		return nil, fmt.Errorf("lease %s logs in as %q, not %q", l.ID, route.Login, meta.User())
	}
	perms := &gossh.Permissions{CriticalOptions: map[string]string{}, Extensions: map[string]string{extLease: l.ID}}
	if sa := cert.CriticalOptions["source-address"]; sa != "" {
		// Enforced by the ssh package after this callback.
		perms.CriticalOptions["source-address"] = sa
	}
	return perms, nil
}

// Serve accepts connections on ln until it is closed or the server is.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.ls = append(s.ls, ln)
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

// Close stops accepting, ends every connection (recording its end) and
// waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, ln := range s.ls {
		ln.Close()
	}
	var all []*gwConn
	for _, m := range s.conns {
		for c := range m {
			all = append(all, c)
		}
	}
	close(s.stop)
	s.mu.Unlock()
	for _, c := range all {
		c.end("gateway shut down")
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeWait):
		// The session log does not answer: stop waiting for it.
		s.cancel()
		<-done
	}
	s.cancel()
	return nil
}

func (s *Server) register(c *gwConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	m := s.conns[c.lease.ID]
	if m == nil {
		m = map[*gwConn]struct{}{}
		s.conns[c.lease.ID] = m
	}
	m[c] = struct{}{}
	return true
}

func (s *Server) unregister(c *gwConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns[c.lease.ID], c)
	if len(s.conns[c.lease.ID]) == 0 {
		delete(s.conns, c.lease.ID)
	}
}

// watch ends the connections of leases that are no longer active, as soon
// as the broker commits a change (and every recheckEvery regardless).
func (s *Server) watch() {
	defer s.wg.Done()
	t := time.NewTicker(recheckEvery)
	defer t.Stop()
	for {
		changed := s.o.Leases.Changed()
		select {
		case <-s.stop:
			return
		case <-changed:
		case <-t.C:
		}
		s.recheck()
	}
}

func (s *Server) recheck() {
	s.mu.Lock()
	byLease := map[string][]*gwConn{}
	for id, m := range s.conns {
		for c := range m {
			byLease[id] = append(byLease[id], c)
		}
	}
	s.mu.Unlock()
	now := s.o.Now()
	for id, cs := range byLease {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l, err := s.o.Leases.Lease(ctx, id)
		cancel()
		reason := ""
		switch {
		case err != nil && mayfly.ErrorCode(err) == mayfly.ENOTFOUND:
			reason = "lease not found"
		case err != nil:
			continue // the store is unreachable: try again later
		case l.State != mayfly.LeaseActive:
			reason = "lease " + string(l.State)
			if l.EndReason != "" {
				reason += " (" + l.EndReason + ")"
			}
		case !now.Before(l.ExpiresAt):
			reason = "lease expired"
		}
		if reason == "" {
			continue
		}
		for _, c := range cs {
			go c.end(reason)
		}
	}
}

func (s *Server) handle(nc net.Conn) {
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	bc := readAhead(nc)
	sconn, chans, reqs, err := gossh.NewServerConn(bc, s.cfg)
	if err != nil {
		bc.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	leaseID := sconn.Permissions.Extensions[extLease]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	l, err := s.o.Leases.Lease(ctx, leaseID)
	cancel()
	if err != nil || l.State != mayfly.LeaseActive {
		sconn.Close()
		return
	}
	sc, route, err := s.o.Leases.Route(l)
	if err != nil {
		sconn.Close()
		return
	}
	c := &gwConn{s: s, lease: l, route: route, client: sconn, ended: make(chan struct{})}
	if !s.register(c) {
		sconn.Close()
		return
	}
	defer s.unregister(c)
	c.run(sc, chans, reqs)
}

// gwConn is one client connection and its connection to the host.
type gwConn struct {
	s      *Server
	id     string
	lease  *mayfly.Lease
	route  ssh.Route
	client *gossh.ServerConn
	hostMu sync.Mutex // guards host against end
	host   gossh.Conn
	rec    *sessionlog.Recorder

	endOnce   sync.Once
	ended     chan struct{}
	endReason atomic.Pointer[string]
	chanSeq   atomic.Int64
	lastTouch atomic.Int64
	chans     sync.WaitGroup

	castMu sync.Mutex
	casts  map[*cast]struct{}
	// sessions are the open session channels, for telling the user why
	// the connection ends.
	sessMu   sync.Mutex
	sessions map[gossh.Channel]struct{}
}

// end closes the connection for reason; the first reason is recorded.
func (c *gwConn) end(reason string) {
	c.endOnce.Do(func() {
		c.endReason.Store(&reason)
		c.sessMu.Lock()
		for ch := range c.sessions {
			ch.Stderr().Write([]byte("\r\nmayfly: connection closed: " + reason + "\r\n"))
		}
		c.sessMu.Unlock()
		close(c.ended)
		c.client.Close()
		c.hostMu.Lock()
		if c.host != nil {
			c.host.Close()
		}
		c.hostMu.Unlock()
	})
}

func (c *gwConn) run(sc *ssh.Connector, chans <-chan gossh.NewChannel, reqs <-chan *gossh.Request) {
	s := c.s
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	rec, err := s.o.Log.Start(ctx, &mayfly.Session{
		Kind: mayfly.SessionSSH, LeaseID: c.lease.ID, RequestID: c.lease.RequestID, User: c.lease.Requester, Target: c.lease.Target,
		Grant: c.lease.Grant, Account: c.route.Login, ClientAddr: c.client.RemoteAddr().String(), StartedAt: s.o.Now().UTC(),
		Data: map[string]string{"client_version": string(c.client.ClientVersion()), "host": c.route.Address},
	})
	cancel()
	if err != nil {
		s.o.Logger.Error("ssh gateway: cannot start the session log; refusing the connection", "lease", c.lease.ID, "err", err)
		c.client.Close()
		return
	}
	c.rec, c.id = rec, rec.ID()
	c.casts = map[*cast]struct{}{}
	c.sessions = map[gossh.Channel]struct{}{}

	host, hostChans, hostReqs, err := c.dialHost(sc)
	if err != nil {
		s.o.Logger.Warn("ssh gateway: cannot log in to the host", "lease", c.lease.ID, "host", c.route.Address, "err", err)
		c.record(EventRefused, Refusal{What: "host", Detail: "cannot log in to the host"})
		c.end("cannot log in to the host")
	} else {
		c.hostMu.Lock()
		c.host = host
		c.hostMu.Unlock()
		select {
		case <-c.ended: // revoked while dialing
			host.Close()
		default:
		}
	}
	flushDone := make(chan struct{})
	go c.flushCasts(flushDone)
	if c.host != nil {
		go gossh.DiscardRequests(hostReqs)
		go c.hostChannels(hostChans)
	}
	go c.clientRequests(reqs)
	for nch := range chans {
		if c.host == nil {
			nch.Reject(gossh.ConnectionFailed, "mayfly: cannot reach the host")
			continue
		}
		c.chans.Add(1)
		go func() {
			defer c.chans.Done()
			c.channel(nch)
		}()
	}
	// The client is gone: close the host side, let the channels finish.
	c.end("client disconnected")
	c.chans.Wait()
	close(flushDone)
	c.castMu.Lock()
	for k := range c.casts {
		k.close(s.o.Now())
	}
	c.castMu.Unlock()
	ctx, cancel = context.WithTimeout(s.ctx, closeWait)
	defer cancel()
	if err := c.rec.End(ctx, *c.endReason.Load()); err != nil {
		s.o.Logger.Error("ssh gateway: record session end", "session", c.id, "err", err)
	}
}

// record records an event of the session now. It waits while the session
// log catches up: nothing is dropped.
func (c *gwConn) record(kind string, body any) error {
	return c.rec.Record(c.s.ctx, c.s.o.Now(), kind, body)
}

func (c *gwConn) dialHost(sc *ssh.Connector) (gossh.Conn, <-chan gossh.NewChannel, <-chan *gossh.Request, error) {
	signer, err := sc.GatewaySigner(c.lease.ID, c.route)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg := &gossh.ClientConfig{
		User:            c.route.Login,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.FixedHostKey(c.route.HostKey),
		Timeout:         dialTimeout,
		ClientVersion:   "SSH-2.0-Mayfly-gateway",
	}
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.Dial("tcp", c.route.Address)
	if err != nil {
		return nil, nil, nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	nc.SetDeadline(time.Now().Add(dialTimeout))
	bc := readAhead(nc)
	conn, chans, reqs, err := gossh.NewClientConn(bc, c.route.Address, cfg)
	if err != nil {
		bc.Close()
		return nil, nil, nil, err
	}
	nc.SetDeadline(time.Time{})
	return conn, chans, reqs, nil
}

// touch reports activity to the broker, at most every touchEvery.
func (c *gwConn) touch() {
	now := c.s.o.Now()
	last := c.lastTouch.Load()
	if now.UnixNano()-last < int64(touchEvery) || !c.lastTouch.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	c.s.o.Leases.Touch(c.lease.ID, now)
}

func (c *gwConn) flushCasts(done <-chan struct{}) {
	t := time.NewTicker(castFlush / 2)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		c.castMu.Lock()
		cs := make([]*cast, 0, len(c.casts))
		for k := range c.casts {
			cs = append(cs, k)
		}
		c.castMu.Unlock()
		now := c.s.o.Now()
		for _, k := range cs {
			k.flushIfStale(now)
		}
	}
}

// readAheadSize is how much of a connection's incoming bytes one read
// system call may take.
const readAheadSize = 256 << 10

// readAhead wraps c so that reads take all that has arrived, up to
// readAheadSize: x/crypto/ssh reads each packet through a 4 KiB buffer (two
// or three system calls per 32 KiB packet), which on a bulk transfer
// through the gateway, decrypted and encrypted once more, is a good part
// of its cost.
//
// Writes are handed to a goroutine of the connection's own, which makes
// the system calls while the next packet is encrypted, and writes what
// accumulated meanwhile in one call. Close the connection through the
// wrapper: that sends what is queued and ends the goroutine.
func readAhead(c net.Conn) net.Conn {
	b := &bufConn{Conn: c, r: bufio.NewReaderSize(c, readAheadSize), done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.writer()
	return b
}

// writeBehindSize bounds the bytes a connection holds for its writer: a
// Write waits while that many are pending.
const writeBehindSize = 512 << 10

type bufConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	cond    *sync.Cond
	pending []byte // written, not yet sent
	spare   []byte
	sending bool  // the writer has bytes out of pending, in a system call
	err     error // the first write error, or net.ErrClosed after Close
	closing bool
	done    chan struct{} // closed when the writer returns
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Write queues p for the writer; it fails with the error of an earlier
// write, as the connection would have.
func (b *bufConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.err == nil && !b.closing && len(b.pending) >= writeBehindSize {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.closing {
		return 0, net.ErrClosed
	}
	b.pending = append(b.pending, p...)
	b.cond.Broadcast()
	return len(p), nil
}

func (b *bufConn) writer() {
	defer close(b.done)
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		for len(b.pending) == 0 && !b.closing {
			b.cond.Wait()
		}
		if len(b.pending) == 0 {
			return // closing, all sent
		}
		out := b.pending
		b.pending, b.spare = b.spare[:0], nil
		b.sending = true
		b.mu.Unlock()
		_, err := b.Conn.Write(out)
		b.mu.Lock()
		b.sending = false
		b.spare = out[:0]
		if err != nil {
			if b.err == nil {
				b.err = err
			}
			b.pending = nil
			b.cond.Broadcast()
			return
		}
		b.cond.Broadcast()
	}
}

// Close sends what is queued (a disconnect message, say), for up to a
// few seconds, then closes the connection.
func (b *bufConn) Close() error {
	b.mu.Lock()
	b.closing = true
	b.cond.Broadcast()
	b.mu.Unlock()
	select {
	case <-b.done:
	case <-time.After(2 * time.Second):
	}
	err := b.Conn.Close()
	<-b.done // the connection's close ends a write in progress
	b.mu.Lock()
	if b.err == nil {
		b.err = net.ErrClosed
	}
	b.mu.Unlock()
	return err
}
