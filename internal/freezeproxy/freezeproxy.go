// Package freezeproxy is a TCP proxy in front of a real server that can
// stop answering on command: once frozen it forwards nothing more on open
// connections and holds new ones without a word, like a target that hangs
// with its port open. Cut instead drops every connection and refuses new
// ones, like a server that went away. Tests and the load tool use it to
// hang or cut off a real PostgreSQL or Redis on loopback.
package freezeproxy

import (
	"net"
	"sync"
	"sync/atomic"
)

// Proxy forwards TCP from its own loopback address to an upstream server.
type Proxy struct {
	ln       net.Listener
	upstream string
	frozen   atomic.Bool
	cut      atomic.Bool
	done     chan struct{}
	once     sync.Once

	mu    sync.Mutex
	conns []net.Conn
}

// New listens on a free loopback port and forwards to upstream until
// Close.
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, done: make(chan struct{})}
	go p.serve()
	return p, nil
}

// Addr is the proxy's address, to give a target instead of upstream's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Freeze stops all forwarding: open connections hang, new ones are held.
func (p *Proxy) Freeze() { p.frozen.Store(true) }

// Thaw ends a Freeze or a Cut: it drops every connection and forwards
// again.
func (p *Proxy) Thaw() {
	p.dropAll()
	p.frozen.Store(false)
	p.cut.Store(false)
}

// Cut drops every connection and refuses new ones (each is closed as soon
// as accepted), like a server that went away, until Thaw.
func (p *Proxy) Cut() {
	p.cut.Store(true)
	p.dropAll()
}

func (p *Proxy) dropAll() {
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
}

// Close stops listening and drops every connection. It is safe to call
// more than once.
func (p *Proxy) Close() {
	p.once.Do(func() {
		p.ln.Close()
		close(p.done)
		p.Thaw()
	})
}

func (p *Proxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			c.Close()
			continue
		}
		p.track(c)
		if p.frozen.Load() {
			continue // held, never answered
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.track(up)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

// pipe copies src to dst until either closes, or, once frozen, stops
// forwarding and waits for the end.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.frozen.Load() {
			<-p.done
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}
