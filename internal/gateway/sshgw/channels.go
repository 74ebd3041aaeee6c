package sshgw

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	gossh "golang.org/x/crypto/ssh"
)

const (
	permitPTY     = "permit-pty"
	permitAgent   = "permit-agent-forwarding"
	permitForward = "permit-port-forwarding"
)

// clientRequests answers the client's global requests: remote port
// forwarding goes to the host when the grant permits it; everything else
// (keepalives included) gets a failure reply, which OpenSSH takes as alive.
func (c *gwConn) clientRequests(reqs <-chan *gossh.Request) {
	for r := range reqs {
		switch r.Type {
		case "tcpip-forward", "cancel-tcpip-forward", "streamlocal-forward@openssh.com", "cancel-streamlocal-forward@openssh.com":
			if !c.route.Allows(permitForward) || c.host == nil {
				c.refuse(nil, "port forwarding", r.Type)
				r.Reply(false, nil)
				continue
			}
			ok, payload, err := c.host.SendRequest(r.Type, r.WantReply, r.Payload)
			if err != nil {
				ok = false
			}
			if ok && r.Type == "tcpip-forward" {
				c.record(EventForward, Refusal{What: "remote port forwarding", Detail: forwardTarget(r.Payload)})
			}
			r.Reply(ok, payload)
		default:
			r.Reply(false, nil)
		}
	}
}

// forwardTarget reads "host port" from a tcpip-forward or direct-tcpip
// payload (its first string and uint32).
func forwardTarget(p []byte) string {
	d := decoder{b: p}
	host := d.str()
	port := d.u32()
	if d.bad {
		return ""
	}
	return fmt.Sprintf("%s:%d", host, port)
}

func (c *gwConn) refuse(ch *int, what, detail string) {
	c.record(EventRefused, Refusal{Channel: ch, What: what, Detail: detail})
}

// channel handles a channel the client opens.
func (c *gwConn) channel(nch gossh.NewChannel) {
	switch nch.ChannelType() {
	case "session":
		c.session(nch)
	case "direct-tcpip", "direct-streamlocal@openssh.com":
		if !c.route.Allows(permitForward) {
			c.refuse(nil, "port forwarding", nch.ChannelType()+" "+forwardTarget(nch.ExtraData()))
			nch.Reject(gossh.Prohibited, "mayfly: port forwarding is not permitted by grant "+c.lease.Grant)
			return
		}
		c.record(EventForward, Refusal{What: "local port forwarding", Detail: forwardTarget(nch.ExtraData())})
		c.bridge(nch, c.host)
	default:
		nch.Reject(gossh.UnknownChannelType, "mayfly: channel type "+nch.ChannelType()+" is not supported")
	}
}

// hostChannels handles channels the host opens towards the client:
// forwarded ports and agent requests, when the grant permits them.
func (c *gwConn) hostChannels(chans <-chan gossh.NewChannel) {
	for nch := range chans {
		var allowed bool
		switch nch.ChannelType() {
		case "forwarded-tcpip", "forwarded-streamlocal@openssh.com":
			allowed = c.route.Allows(permitForward)
		case "auth-agent@openssh.com":
			allowed = c.route.Allows(permitAgent)
		}
		if !allowed {
			nch.Reject(gossh.Prohibited, "mayfly: not permitted")
			continue
		}
		go c.bridge(nch, c.client)
	}
}

// bridge opens the same channel on the other side and copies both ways.
func (c *gwConn) bridge(nch gossh.NewChannel, other gossh.Conn) {
	och, oreqs, err := other.OpenChannel(nch.ChannelType(), nch.ExtraData())
	if err != nil {
		var oe *gossh.OpenChannelError
		if errors.As(err, &oe) {
			nch.Reject(oe.Reason, oe.Message)
		} else {
			nch.Reject(gossh.ConnectionFailed, "mayfly: cannot open the channel")
		}
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		och.Close()
		return
	}
	go gossh.DiscardRequests(reqs)
	go gossh.DiscardRequests(oreqs)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(och, ch); och.CloseWrite() }()
	go func() { defer wg.Done(); io.Copy(ch, och); ch.CloseWrite() }()
	wg.Wait()
	ch.Close()
	och.Close()
}

// sessionChan is one proxied session channel and its recording.
type sessionChan struct {
	c    *gwConn
	n    int
	ch   gossh.Channel // client side
	up   gossh.Channel // host side
	info ChannelInfo

	mu      sync.Mutex
	started bool
	cast    *cast
	// limit, when above 0, is how many bytes of each stream the terminal
	// recording keeps (channels without a pty: bulk data, not a screen);
	// kept counts them per stream ("i", "o").
	limit int64
	kept  map[string]int64
	sftp  *sftpReader
	scp   string // scp's command line, when the channel runs scp
	exit  *Exit

	bytesIn, bytesOut atomic.Int64
	outputDone        chan struct{}
	// ready closes once the shell, command or subsystem was asked for
	// (or the client's requests ended): input waits for it, so it reaches
	// the host, and the recording, after the request, as the client sent it.
	ready     chan struct{}
	readyOnce sync.Once
}

func (sc *sessionChan) setReady() { sc.readyOnce.Do(func() { close(sc.ready) }) }

func (c *gwConn) session(nch gossh.NewChannel) {
	up, upReqs, err := c.host.OpenChannel("session", nch.ExtraData())
	if err != nil {
		var oe *gossh.OpenChannelError
		if errors.As(err, &oe) {
			nch.Reject(oe.Reason, oe.Message)
		} else {
			nch.Reject(gossh.ConnectionFailed, "mayfly: cannot open a session on the host")
		}
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		up.Close()
		return
	}
	sc := &sessionChan{c: c, n: int(c.chanSeq.Add(1)) - 1, ch: ch, up: up, outputDone: make(chan struct{}), ready: make(chan struct{})}
	sc.info.Channel = sc.n
	c.sessMu.Lock()
	c.sessions[ch] = struct{}{}
	c.sessMu.Unlock()
	defer func() {
		c.sessMu.Lock()
		delete(c.sessions, ch)
		c.sessMu.Unlock()
	}()

	var wg sync.WaitGroup
	wg.Add(3)
	// Client input to the host.
	go func() {
		defer wg.Done()
		sc.copyIn()
		up.CloseWrite()
	}()
	// Host output (stdout and stderr) to the client.
	var outWG sync.WaitGroup
	outWG.Add(2)
	go func() { defer outWG.Done(); sc.copyOut(ch, up) }()
	go func() { defer outWG.Done(); sc.copyOut(ch.Stderr(), up.Stderr()) }()
	go func() { outWG.Wait(); close(sc.outputDone) }()
	// The host's channel requests (exit-status, exit-signal) go to the
	// client after all the output, then the channel closes.
	go func() {
		defer wg.Done()
		sc.hostRequests(upReqs)
		<-sc.outputDone
		ch.CloseWrite()
		ch.Close()
	}()
	// The client's channel requests go to the host, filtered.
	go func() {
		defer wg.Done()
		sc.clientRequests(reqs)
		sc.setReady()
		up.Close()
	}()
	wg.Wait()
	up.Close()
	ch.Close()
	sc.finish()
}

func (sc *sessionChan) copyIn() {
	buf := make([]byte, 256<<10) // as in copyOut
	for {
		n, err := sc.ch.Read(buf)
		if n > 0 {
			<-sc.ready
			sc.c.touch()
			sc.bytesIn.Add(int64(n))
			sc.record("i", buf[:n])
			if _, werr := sc.up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (sc *sessionChan) copyOut(dst io.Writer, src io.Reader) {
	// A read takes all that has arrived, up to this: fewer, larger reads
	// mean fewer window adjustments sent to the host.
	buf := make([]byte, 256<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			sc.c.touch()
			sc.bytesOut.Add(int64(n))
			sc.record("o", buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				// The client is gone: keep reading so the host side
				// finishes, recording what it still sends.
				dst = io.Discard
			}
		}
		if err != nil {
			return
		}
	}
}

// record hands data to the terminal recording or the SFTP reader. It may
// block while the session log catches up.
func (sc *sessionChan) record(kind string, p []byte) {
	sc.mu.Lock()
	k, f := sc.cast, sc.sftp
	sc.mu.Unlock()
	switch {
	case k != nil:
		p, full := sc.keep(kind, p)
		if len(p) > 0 {
			k.event(sc.c.s.o.Now(), kind, p)
		}
		if full {
			what := map[string]string{"i": "input", "o": "output"}[kind]
			k.marker(sc.c.s.o.Now(), fmt.Sprintf("mayfly: %s beyond %d bytes is not recorded without a terminal; the exit event counts every byte", what, sc.limit))
		}
	case f != nil && kind == "i":
		f.fromClient(p)
	case f != nil:
		f.fromHost(p)
	}
}

// keep returns what of p the recording keeps on stream kind: all of it on a
// terminal, the first limit bytes without one. The first time a stream
// reaches the limit, full is true: the recording then gets a marker saying
// so. The exit event still counts every byte.
func (sc *sessionChan) keep(kind string, p []byte) (kept []byte, full bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.limit <= 0 {
		return p, false
	}
	room := sc.limit - sc.kept[kind]
	if room <= 0 {
		return nil, false
	}
	if int64(len(p)) >= room {
		p, full = p[:room], true
	}
	sc.kept[kind] += int64(len(p))
	return p, full
}

func (sc *sessionChan) clientRequests(reqs <-chan *gossh.Request) {
	c := sc.c
	for r := range reqs {
		forward := true
		switch r.Type {
		case "pty-req":
			if !c.route.Allows(permitPTY) {
				c.refuse(&sc.n, "pty", "")
				forward = false
				break
			}
			d := decoder{b: r.Payload}
			term, w, h := d.str(), d.u32(), d.u32()
			if !d.bad {
				sc.mu.Lock()
				sc.info.Term, sc.info.Width, sc.info.Height = term, int(w), int(h)
				sc.mu.Unlock()
			}
		case "env":
			d := decoder{b: r.Payload}
			if name := d.str(); !d.bad {
				sc.mu.Lock()
				sc.info.Env = append(sc.info.Env, name)
				sc.mu.Unlock()
			}
		case "shell":
			sc.begin("shell", "", "")
		case "exec":
			d := decoder{b: r.Payload}
			cmd := d.str()
			if d.bad {
				forward = false
				break
			}
			sc.begin("exec", cmd, "")
		case "subsystem":
			d := decoder{b: r.Payload}
			name := d.str()
			if d.bad {
				forward = false
				break
			}
			sc.begin("subsystem", "", name)
		case "window-change":
			d := decoder{b: r.Payload}
			w, h := d.u32(), d.u32()
			if !d.bad {
				sc.mu.Lock()
				sc.info.Width, sc.info.Height = int(w), int(h)
				k := sc.cast
				sc.mu.Unlock()
				if k != nil {
					k.event(c.s.o.Now(), "r", fmt.Appendf(nil, "%dx%d", w, h))
				}
			}
		case "auth-agent-req@openssh.com":
			if !c.route.Allows(permitAgent) {
				c.refuse(&sc.n, "agent forwarding", "")
				forward = false
			} else {
				c.record(EventForward, Refusal{Channel: &sc.n, What: "agent forwarding"})
			}
		case "x11-req":
			c.refuse(&sc.n, "X11 forwarding", "")
			forward = false
		}
		if !forward {
			if r.WantReply {
				r.Reply(false, nil)
			}
			continue
		}
		ok, err := sc.up.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			r.Reply(ok && err == nil, nil)
		}
		if r.Type == "shell" || r.Type == "exec" || r.Type == "subsystem" {
			sc.setReady()
		}
	}
}

// begin records the start of a shell, command or subsystem and sets up its
// recording: SFTP is followed packet by packet, scp by its command line and
// bytes, everything else as a terminal recording.
func (sc *sessionChan) begin(typ, cmd, subsystem string) {
	sc.mu.Lock()
	if sc.started {
		sc.mu.Unlock()
		return
	}
	sc.started = true
	sc.info.Type, sc.info.Command, sc.info.Subsystem = typ, cmd, subsystem
	info := sc.info
	c := sc.c
	now := c.s.o.Now()
	switch {
	case subsystem == "sftp":
		sc.sftp = newSFTPReader(sc.n, func(t Transfer) { c.record(EventTransfer, t) })
	case typ == "exec" && isSCP(cmd):
		sc.scp = cmd
	case subsystem != "":
	default:
		w, h := info.Width, info.Height
		if w == 0 || h == 0 {
			w, h = 80, 24
		}
		hdr := CastHeader{Width: w, Height: h, Command: cmd}
		if info.Term != "" {
			hdr.Env = map[string]string{"TERM": info.Term}
		}
		sc.cast = newCast(sc.n, now, hdr, func(b CastBody) error { return c.record(EventCast, b) })
		if info.Term == "" {
			sc.limit, sc.kept = c.s.untermLimit(), map[string]int64{}
		}
		c.castMu.Lock()
		c.casts[sc.cast] = struct{}{}
		c.castMu.Unlock()
	}
	sc.mu.Unlock()
	c.record(EventChannel, info)
}

// isSCP reports whether a command runs scp in its legacy server modes.
func isSCP(cmd string) bool {
	f := strings.Fields(cmd)
	if len(f) < 2 || (f[0] != "scp" && !strings.HasSuffix(f[0], "/scp")) {
		return false
	}
	for _, a := range f[1:] {
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.ContainsAny(a, "tf") {
			return true
		}
	}
	return false
}

// hostRequests forwards the host's channel requests to the client and
// records exit statuses and signals.
func (sc *sessionChan) hostRequests(reqs <-chan *gossh.Request) {
	for r := range reqs {
		switch r.Type {
		case "exit-status", "exit-signal":
			// After all the output, as sshd means it.
			<-sc.outputDone
			ex := Exit{Channel: sc.n}
			d := decoder{b: r.Payload}
			if r.Type == "exit-status" {
				if st := d.u32(); !d.bad {
					v := int(st)
					ex.Status = &v
				}
			} else if sig := d.str(); !d.bad {
				ex.Signal = sig
			}
			sc.mu.Lock()
			sc.exit = &ex
			sc.mu.Unlock()
		}
		ok, err := sc.ch.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			r.Reply(ok && err == nil, nil)
		}
	}
}

// finish closes the recording of the channel: the rest of the terminal
// recording, open SFTP files, scp's transfer and the exit.
func (sc *sessionChan) finish() {
	c := sc.c
	now := c.s.o.Now()
	sc.mu.Lock()
	k, f, scp, ex := sc.cast, sc.sftp, sc.scp, sc.exit
	sc.mu.Unlock()
	if k != nil {
		k.close(now)
		c.castMu.Lock()
		delete(c.casts, k)
		c.castMu.Unlock()
	}
	if f != nil {
		f.finish()
	}
	if scp != "" {
		t := Transfer{Channel: sc.n, Protocol: "scp", Command: scp, Op: "download"}
		if scpSink(scp) {
			t.Op, t.BytesWritten = "upload", sc.bytesIn.Load()
		} else {
			t.BytesRead = sc.bytesOut.Load()
		}
		c.record(EventTransfer, t)
	}
	if ex == nil {
		ex = &Exit{Channel: sc.n}
	}
	if sc.info.Type == "" {
		return
	}
	ex.BytesIn, ex.BytesOut = sc.bytesIn.Load(), sc.bytesOut.Load()
	c.record(EventExit, ex)
}

// scpSink reports whether scp runs in sink mode (-t: the client uploads).
func scpSink(cmd string) bool {
	for _, a := range strings.Fields(cmd)[1:] {
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.Contains(a, "t") {
			return true
		}
	}
	return false
}
