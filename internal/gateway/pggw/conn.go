package pggw

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
)

const (
	// startupTimeout bounds the start of a connection: TLS, startup,
	// authentication and the connection to the target.
	startupTimeout = 30 * time.Second
	// maxStartupBody bounds messages before authentication.
	maxStartupBody = 64 << 10
	// maxBody bounds messages after it, like PostgreSQL's own 1 GB.
	maxBody = 1 << 30
	// touchEvery throttles the activity reported to the idle check.
	touchEvery = mayfly.GatewayActivityEvery
)

// conn is one client connection.
type conn struct {
	g      *Gateway
	client net.Conn
	pid    uint32
	key    []byte

	leaseID string

	mu          sync.Mutex
	backend     net.Conn
	backendAddr string
	backendPID  uint32
	backendKey  []byte
	reason      string // why the gateway closed it
	clientConn  net.Conn

	lastTouch time.Time // client-to-server goroutine only
}

// kill closes both sides now, for reason (the first one given wins).
func (c *conn) kill(reason string) {
	c.mu.Lock()
	if c.reason == "" {
		c.reason = reason
	}
	cl, be := c.clientConn, c.backend
	c.mu.Unlock()
	if cl != nil {
		cl.Close()
	}
	c.client.Close()
	if be != nil {
		be.Close()
	}
}

func (c *conn) killedFor() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// fatal sends a FATAL error to the client.
func fatal(be *pgproto3.Backend, code, format string, args ...any) {
	be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: fmt.Sprintf(format, args...)})
	be.Flush()
}

func (g *Gateway) handle(ctx context.Context, nc net.Conn) {
	c := &conn{g: g, client: nc, clientConn: nc}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(startupTimeout))
	crd := &boundedReader{r: nc}
	be := pgproto3.NewBackend(crd, nc)
	be.SetMaxBodyLen(maxStartupBody)
	var cl net.Conn = nc
	tlsOn := false
	var startup *pgproto3.StartupMessage
	for startup == nil {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if g.o.TLS == nil || tlsOn {
				if _, err := nc.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			if _, err := nc.Write([]byte{'S'}); err != nil {
				return
			}
			tc := tls.Server(nc, g.o.TLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return
			}
			cl, tlsOn = tc, true
			c.mu.Lock()
			c.clientConn = tc
			c.mu.Unlock()
			crd = &boundedReader{r: tc}
			be = pgproto3.NewBackend(crd, tc)
			be.SetMaxBodyLen(maxStartupBody)
		case *pgproto3.GSSEncRequest:
			if _, err := nc.Write([]byte{'N'}); err != nil {
				return
			}
		case *pgproto3.CancelRequest:
			g.cancel(ctx, m)
			return
		case *pgproto3.StartupMessage:
			startup = m
			crd.typed = true
		}
	}
	if g.o.TLS != nil && !tlsOn {
		fatal(be, "28000", "the Mayfly gateway requires TLS: connect with sslmode=require (or verify-full)")
		return
	}
	if startup.ProtocolVersion != pgproto3.ProtocolVersion30 {
		// Only 3.0 is spoken; a client asking for a newer minor
		// version is told so and continues with 3.0.
		var opts []string
		for k := range startup.Parameters {
			if strings.HasPrefix(k, "_pq_.") {
				opts = append(opts, k)
			}
		}
		be.Send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: opts})
	}
	user, database := startup.Parameters["user"], startup.Parameters["database"]
	if startup.Parameters["replication"] != "" && startup.Parameters["replication"] != "false" {
		fatal(be, "28000", "replication connections are not allowed through the Mayfly gateway")
		return
	}
	l, err := g.authenticate(ctx, be, user)
	if err != nil {
		if msg := mayfly.ErrorMessage(err); err == errBadProof || errors.Is(err, errBadProof) {
			fatal(be, "28P01", "password authentication failed for user %q", user)
		} else if mayfly.ErrorCode(err) != mayfly.EINTERNAL {
			fatal(be, "28000", "%s", msg)
		} else {
			g.log.Warn("postgres gateway: authentication", "user", user, "err", err)
			fatal(be, "08006", "the Mayfly gateway could not authenticate you (see its log)")
		}
		return
	}
	be.SetMaxBodyLen(maxBody)

	// Connect to the target as the lease's account.
	hj, cred, err := g.connectTarget(ctx, l, database, startup.Parameters)
	if err != nil {
		g.log.Warn("postgres gateway: connect to target", "lease", l.ID, "target", l.Target, "err", err)
		fatal(be, "08006", "the Mayfly gateway could not connect to target %s: %s", l.Target, targetErrorText(err))
		return
	}
	c.mu.Lock()
	c.leaseID = l.ID
	c.backend, c.backendAddr = hj.Conn, hj.Conn.RemoteAddr().String()
	c.backendPID, c.backendKey = hj.PID, hj.SecretKey
	c.mu.Unlock()
	defer hj.Conn.Close()

	ses := &mayfly.Session{Kind: mayfly.SessionPostgres, LeaseID: l.ID, RequestID: l.RequestID, User: l.Requester,
		Target: l.Target, Grant: l.Grant, Account: cred.Username, ClientAddr: nc.RemoteAddr().String(),
		Data: map[string]string{"database": hj.Config.Database}}
	if tlsOn {
		ses.Data["tls"] = "true"
	}
	if a := startup.Parameters["application_name"]; a != "" {
		ses.Data["application_name"] = a
	}
	rec, err := g.o.Log.Start(ctx, ses)
	if err != nil {
		g.log.Error("postgres gateway: start session log", "lease", l.ID, "err", err)
		fatal(be, "08006", "the Mayfly gateway could not record the session, so it is refused")
		return
	}
	g.register(ctx, c)
	defer g.unregister(c)
	if until := time.Until(l.ExpiresAt); until > 0 {
		t := time.AfterFunc(until, func() { c.kill("expired") })
		defer t.Stop()
	} else {
		c.kill("expired")
	}
	g.o.Broker.TouchActivity(l.ID, time.Now())

	be.Send(&pgproto3.AuthenticationOk{})
	for k, v := range hj.ParameterStatuses {
		be.Send(&pgproto3.ParameterStatus{Name: k, Value: v})
	}
	be.Send(&pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: c.key})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: hj.TxStatus})
	if err := be.Flush(); err != nil {
		c.kill("client")
	}
	nc.SetDeadline(time.Time{})

	reason := c.relay(cl, hj, rec, l)
	if r := c.killedFor(); r != "" {
		reason = r
	}
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := rec.End(ectx, reason); err != nil {
		g.log.Error("postgres gateway: end session log", "session", rec.ID(), "err", err)
	}
}

// authenticate runs SCRAM-SHA-256 with the client for login name user (a
// lease id) and returns the lease when the client proved its secret and
// the lease is live.
func (g *Gateway) authenticate(ctx context.Context, be *pgproto3.Backend, user string) (*mayfly.Lease, error) {
	var l *mayfly.Lease
	var vs string
	if user != "" {
		err := g.o.Broker.Store().View(ctx, func(tx mayfly.Tx) error {
			var err error
			if l, err = tx.GetLease(user); err != nil {
				return err
			}
			vs, err = tx.GetSetting(broker.GatewayVerifierKey(user))
			return err
		})
		if err != nil && mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			return nil, err
		}
	}
	s := &scramServer{v: decoyVerifier()}
	if v, err := parseVerifier(vs); err == nil {
		s.v = v
	}
	be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{scramMechanism}})
	if err := be.Flush(); err != nil {
		return nil, err
	}
	be.SetAuthType(pgproto3.AuthTypeSASL)
	msg, err := be.Receive()
	if err != nil {
		return nil, err
	}
	first, ok := msg.(*pgproto3.SASLInitialResponse)
	if !ok || first.AuthMechanism != scramMechanism {
		return nil, mayfly.Errorf(mayfly.EINVALID, "the Mayfly gateway authenticates with SCRAM-SHA-256 only")
	}
	sf, err := s.clientFirst(first.Data)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "%v", err)
	}
	be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(sf)})
	if err := be.Flush(); err != nil {
		return nil, err
	}
	be.SetAuthType(pgproto3.AuthTypeSASLContinue)
	msg, err = be.Receive()
	if err != nil {
		return nil, err
	}
	final, ok := msg.(*pgproto3.SASLResponse)
	if !ok {
		return nil, mayfly.Errorf(mayfly.EINVALID, "expected a SCRAM response")
	}
	sfinal, err := s.clientFinal(final.Data)
	if err == errBadProof || l == nil {
		return nil, errBadProof
	}
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "%v", err)
	}
	be.SetAuthType(pgproto3.AuthTypeOk)
	switch {
	case l.State != mayfly.LeaseActive:
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "lease %s is %s (%s): its gateway credential no longer works", l.ID, l.State, orUnknown(l.EndReason))
	case !time.Now().Before(l.ExpiresAt):
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "lease %s has expired", l.ID)
	}
	t, ok := g.o.Broker.Config().Targets[l.Target]
	if !ok || t.Grants[l.Grant].Via != mayfly.ViaGateway {
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "lease %s is not for a grant reached through the gateway", l.ID)
	}
	be.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte(sfinal)})
	return l, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason recorded"
	}
	return s
}

// connectTo connects to the target as lease l's account, passing the
// client's run-time parameters on.
func (g *Gateway) connectTarget(ctx context.Context, l *mayfly.Lease, database string, params map[string]string) (*pgconn.HijackedConn, mayfly.Credential, error) {
	cctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		cred, t, err := g.targetCred(cctx, l, database, attempt > 0)
		if err != nil {
			return nil, cred, err
		}
		cfg := t.SessionConfig(cred)
		if database != "" {
			cfg.Database = database
		}
		for k, v := range params {
			switch k {
			case "user", "database", "replication":
			default:
				if !strings.HasPrefix(k, "_pq_.") {
					cfg.RuntimeParams[k] = v
				}
			}
		}
		pc, err := pgconn.ConnectConfig(cctx, cfg)
		if err != nil {
			var pe *pgconn.PgError
			if attempt == 0 && errors.As(err, &pe) && pe.Code == "28P01" {
				// The password held was replaced (by another replica's
				// gateway, or before a restart): set a new one.
				continue
			}
			if pgconn.Timeout(err) {
				after := startupTimeout
				if cfg.ConnectTimeout > 0 {
					after = min(after, cfg.ConnectTimeout)
				}
				err = targetTimeout{err, after}
			}
			return nil, cred, err
		}
		hj, err := pc.Hijack()
		if err != nil {
			pc.Close(ctx)
			return nil, cred, err
		}
		if hj.Frontend.ReadBufferLen() > 0 {
			hj.Conn.Close()
			return nil, cred, errors.New("unexpected data from the target after connecting")
		}
		return hj, cred, nil
	}
}

// targetTimeout is a target that did not answer within after (the
// connect_timeout of the target's DSN, 10 s by default).
type targetTimeout struct {
	err   error
	after time.Duration
}

func (e targetTimeout) Error() string { return e.err.Error() }
func (e targetTimeout) Unwrap() error { return e.err }

// targetErrorText is what the client is told of a failure to reach the
// target: the server's own message, never connection details.
func targetErrorText(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code + ": " + pe.Message
	}
	var te targetTimeout
	if errors.As(err, &te) {
		return fmt.Sprintf("the target did not answer within %s", te.after)
	}
	if mayfly.ErrorCode(err) != mayfly.EINTERNAL {
		return mayfly.ErrorMessage(err)
	}
	return "the target is unreachable"
}

// relay passes the bytes both ways until either side ends, recording
// statements, and returns why it ended ("client" or "server"). Each read is
// written on as it is, after the messages in it that the session log needs
// are decoded and tracked (frames.go).
func (c *conn) relay(cl net.Conn, hj *pgconn.HijackedConn, rec *sessionlog.Recorder, l *mayfly.Lease) string {
	grant := c.g.o.Broker.Config().Targets[l.Target].Grants[l.Grant]
	t := &tracker{rec: rec, clear: grant.RecordParams == "clear", hash: c.g.o.Broker.HashSecret,
		statements: map[string]string{}, portals: map[string]portal{}, hold: true}
	c.lastTouch = time.Now() // touched when the session started
	done := make(chan string, 2)
	go func() {
		// Client to server.
		var ms clientMessages
		done <- c.pipe(cl, hj.Conn, clientBuf, newFrames(frontendTypes, clientWanted, maxBody), func(typ byte, body []byte, now time.Time) (bool, error) {
			msg := ms.of(typ)
			if err := msg.Decode(body); err != nil {
				return false, err
			}
			if typ == 'Q' || typ == 'E' {
				c.touch(l.ID, now)
			}
			t.fromClient(msg, now)
			return typ == 'X', nil
		}, nil, "client", "server")
	}()
	go func() {
		// Server to client.
		var ms serverMessages
		done <- c.pipe(hj.Conn, cl, serverBuf, newFrames("", serverWanted, 0), func(typ byte, body []byte, now time.Time) (bool, error) {
			msg := ms.of(typ)
			if err := msg.Decode(body); err != nil {
				return false, err
			}
			t.fromServer(msg, now)
			return false, nil
		}, t.recordReady, "server", "client")
	}()
	reason := <-done
	c.kill(reason)
	<-done
	t.abandon(time.Now())
	return reason
}

// The most one read of the relay takes, each way: clients send little but
// COPY data; results can be large. Buffers start at minBuf and double
// each time a read fills one, so an idle or chatty session holds little.
const (
	minBuf    = 4 << 10
	clientBuf = 16 << 10
	serverBuf = 64 << 10
)

// pipe copies src to dst, handing the wanted messages of each read to
// handle before writing the read on; handle returns true for the last
// message of the connection (Terminate). It returns the side that ended
// it: srcName when src closed, sent something invalid or ended, dstName
// when dst refused a write.
func (c *conn) pipe(src, dst net.Conn, bufSize int, f *frames, handle func(typ byte, body []byte, now time.Time) (bool, error), after func(), srcName, dstName string) string {
	buf := make([]byte, minBuf)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			now := time.Now()
			last := false
			ferr := f.feed(buf[:n], func(typ byte, body []byte) error {
				l, err := handle(typ, body, now)
				last = last || l
				return err
			})
			if ferr != nil {
				c.g.log.Warn("postgres gateway: invalid message, connection closed", "lease", c.leaseID, "from", srcName, "err", ferr)
				return srcName
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return dstName
			}
			if after != nil {
				// Back-pressure: the next read waits for this.
				after()
			}
			if last {
				return srcName
			}
			if n == len(buf) && len(buf) < bufSize {
				buf = make([]byte, min(2*len(buf), bufSize))
			}
		}
		if err != nil {
			return srcName
		}
	}
}

// touch reports activity on lease id to the idle check, at most every
// touchEvery.
func (c *conn) touch(id string, now time.Time) {
	if now.Sub(c.lastTouch) >= touchEvery {
		c.g.o.Broker.TouchActivity(id, now)
		c.lastTouch = now
	}
}

// clientMessages and serverMessages hold one message of each type the
// tracker reads, decoded into again for each message of the type (every
// Decode sets all of its message's fields; the tracker keeps none of
// them), so following a connection allocates no message.
type clientMessages struct {
	bind     pgproto3.Bind
	close    pgproto3.Close
	execute  pgproto3.Execute
	function pgproto3.FunctionCall
	parse    pgproto3.Parse
	query    pgproto3.Query
	sync     pgproto3.Sync
	term     pgproto3.Terminate
}

func (m *clientMessages) of(typ byte) pgproto3.FrontendMessage {
	switch typ {
	case 'B':
		return &m.bind
	case 'C':
		return &m.close
	case 'E':
		return &m.execute
	case 'F':
		return &m.function
	case 'P':
		return &m.parse
	case 'Q':
		return &m.query
	case 'S':
		return &m.sync
	case 'X':
		return &m.term
	}
	panic(fmt.Sprintf("pggw: frontend message %q is not tracked", typ))
}

type serverMessages struct {
	complete  pgproto3.CommandComplete
	err       pgproto3.ErrorResponse
	empty     pgproto3.EmptyQueryResponse
	ready     pgproto3.ReadyForQuery
	suspended pgproto3.PortalSuspended
}

func (m *serverMessages) of(typ byte) pgproto3.BackendMessage {
	switch typ {
	case 'C':
		return &m.complete
	case 'E':
		return &m.err
	case 'I':
		return &m.empty
	case 'Z':
		return &m.ready
	case 's':
		return &m.suspended
	}
	panic(fmt.Sprintf("pggw: backend message %q is not tracked", typ))
}

// portal is a bound statement.
type portal struct {
	text   string
	params []*string
	hmacs  []string
}

// pending is a statement sent to the server and not yet answered, or a
// Sync.
type pending struct {
	sync   bool
	simple bool
	stmt   mayfly.Statement
	start  time.Time
	end    time.Time // when its answer was read
}

// tracker follows the conversation to record each statement once it is
// answered. fromClient runs on the client-to-server goroutine, fromServer
// on the other; the queue between them is locked.
type tracker struct {
	rec   *sessionlog.Recorder
	clear bool
	hash  func(string) string

	// Client side only.
	statements map[string]string
	portals    map[string]portal
	lastParse  string

	mu     sync.Mutex
	queue  []*pending
	failed bool // an error in the current extended-protocol batch

	// Server side only: with hold, statements answered are kept in ready
	// until recordReady, which the relay calls once it has passed the
	// answer on, so that recording is not on the round trip's path.
	hold  bool
	ready []*pending
}

func (t *tracker) push(p *pending) {
	t.mu.Lock()
	t.queue = append(t.queue, p)
	t.mu.Unlock()
}

func (t *tracker) fromClient(msg pgproto3.FrontendMessage, now time.Time) {
	switch m := msg.(type) {
	case *pgproto3.Query:
		t.push(&pending{simple: true, start: now, stmt: mayfly.Statement{Text: m.String, Protocol: "simple"}})
	case *pgproto3.Parse:
		t.statements[m.Name] = m.Query
		t.lastParse = m.Query
	case *pgproto3.Bind:
		p := portal{text: t.statements[m.PreparedStatement]}
		for i, v := range m.Parameters {
			binary := formatOf(m.ParameterFormatCodes, i) == 1
			switch {
			case v == nil && t.clear:
				p.params = append(p.params, nil)
			case v == nil:
				p.hmacs = append(p.hmacs, "")
			case t.clear && binary:
				s := `\x` + hex.EncodeToString(v)
				p.params = append(p.params, &s)
			case t.clear:
				s := string(v)
				p.params = append(p.params, &s)
			default:
				p.hmacs = append(p.hmacs, t.hash(string(v)))
			}
		}
		t.portals[m.DestinationPortal] = p
	case *pgproto3.Execute:
		p := t.portals[m.Portal]
		t.push(&pending{start: now, stmt: mayfly.Statement{Text: p.text, Protocol: "extended", Params: p.params, ParamsHMAC: p.hmacs}})
	case *pgproto3.Sync:
		t.push(&pending{sync: true})
	case *pgproto3.Close:
		if m.ObjectType == 'S' {
			delete(t.statements, m.Name)
		} else {
			delete(t.portals, m.Name)
		}
	case *pgproto3.FunctionCall:
		t.push(&pending{simple: true, start: now, stmt: mayfly.Statement{Text: fmt.Sprintf("(function call, oid %d)", m.Function), Protocol: "function"}})
	}
}

func formatOf(codes []int16, i int) int16 {
	switch len(codes) {
	case 0:
		return 0
	case 1:
		return codes[0]
	}
	if i < len(codes) {
		return codes[i]
	}
	return 0
}

// head returns the first queued entry (nil when none); t.mu is held.
func (t *tracker) head() *pending {
	if len(t.queue) == 0 {
		return nil
	}
	return t.queue[0]
}

func (t *tracker) fromServer(msg pgproto3.BackendMessage, now time.Time) {
	var done []*pending
	t.mu.Lock()
	h := t.head()
	switch m := msg.(type) {
	case *pgproto3.CommandComplete:
		if h != nil && !h.sync {
			tag := pgconn.NewCommandTag(string(m.CommandTag))
			h.stmt.Tag = tag.String()
			h.stmt.Rows += tag.RowsAffected()
			if !h.simple {
				done = append(done, t.pop())
			}
		}
	case *pgproto3.EmptyQueryResponse:
		if h != nil && !h.simple && !h.sync {
			done = append(done, t.pop())
		}
	case *pgproto3.PortalSuspended:
		if h != nil && !h.simple && !h.sync {
			h.stmt.Tag = "(suspended)"
			done = append(done, t.pop())
		}
	case *pgproto3.ErrorResponse:
		text := m.Code + ": " + m.Message
		switch {
		case h == nil:
		case h.simple:
			h.stmt.Error = text
		case h.sync:
			// A Parse, Bind or Describe failed with no Execute in its
			// batch: recorded with the statement last parsed.
			done = append(done, &pending{start: now, stmt: mayfly.Statement{Text: t.lastParse, Protocol: "extended", Error: text}})
			t.failed = true
		default:
			h.stmt.Error = text
			done = append(done, t.pop())
			t.failed = true
		}
	case *pgproto3.ReadyForQuery:
		for len(t.queue) > 0 {
			p := t.pop()
			if p.sync {
				break
			}
			if !p.simple && p.stmt.Error == "" {
				p.stmt.Error = "not executed: an earlier message of its batch failed"
			}
			done = append(done, p)
			if p.simple {
				break
			}
		}
		t.failed = false
	}
	t.mu.Unlock()
	for _, p := range done {
		p.end = now
		if t.hold {
			t.ready = append(t.ready, p)
			continue
		}
		t.record(p)
	}
}

// pop removes the head; t.mu is held.
func (t *tracker) pop() *pending {
	p := t.queue[0]
	t.queue[0] = nil
	t.queue = t.queue[1:]
	return p
}

// recordReady records the statements answered in what was just passed to
// the client (hold).
func (t *tracker) recordReady() {
	for i, p := range t.ready {
		t.record(p)
		t.ready[i] = nil
	}
	t.ready = t.ready[:0]
}

func (t *tracker) record(p *pending) {
	p.stmt.Start = p.start.UTC()
	p.stmt.DurationUS = p.end.Sub(p.start).Microseconds()
	// Waits while the log is behind (back-pressure): the server's
	// answers are not read meanwhile.
	t.rec.Record(context.Background(), p.start, mayfly.SessionEventStatement, &p.stmt)
}

// abandon records the statements still waiting for an answer when the
// connection ended.
func (t *tracker) abandon(now time.Time) {
	// Answered, not yet recorded: the write to the client failed.
	t.recordReady()
	t.mu.Lock()
	q := t.queue
	t.queue = nil
	t.mu.Unlock()
	for _, p := range q {
		if p.sync {
			continue
		}
		if p.stmt.Error == "" {
			p.stmt.Error = "connection closed before the statement finished"
		}
		p.end = now
		t.record(p)
	}
}
