package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// TestHTTPServerClosesIdleConnections checks that the API server closes a
// kept-alive connection that sends nothing more, and one that never
// finishes its headers, instead of holding them forever.
func TestHTTPServerClosesIdleConnections(t *testing.T) {
	def := newHTTPServer(http.NotFoundHandler(), defaultHTTPTimeouts())
	if def.ReadHeaderTimeout <= 0 || def.IdleTimeout <= 0 || def.MaxHeaderBytes <= 0 {
		t.Errorf("default server: ReadHeaderTimeout %s, IdleTimeout %s, MaxHeaderBytes %d; want all set",
			def.ReadHeaderTimeout, def.IdleTimeout, def.MaxHeaderBytes)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tm := defaultHTTPTimeouts()
	tm.ReadHeader, tm.Idle = 300*time.Millisecond, 300*time.Millisecond
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), tm)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// closed waits for the server to close c, failing if it has not
	// within a bound far above the timeouts.
	closed := func(what string, c net.Conn, r *bufio.Reader) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		_, err := io.Copy(io.Discard, r)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.Errorf("%s: connection still open after %s", what, time.Since(start).Round(time.Millisecond))
		case err != nil && !errors.Is(err, net.ErrClosed):
			// A reset is a close too.
			t.Logf("%s: closed with %v", what, err)
		}
	}

	t.Run("idle after a request", func(t *testing.T) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: mayfly\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatal("server closed the connection after the request; want keep-alive")
		}
		closed("kept-alive connection", c, r)
	})

	t.Run("headers never finished", func(t *testing.T) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: mayfly\r\n"); err != nil {
			t.Fatal(err)
		}
		closed("connection with unfinished headers", c, bufio.NewReader(c))
	})
}
