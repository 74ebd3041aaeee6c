package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/mayflyhq/mayfly/internal/config"
)

// serverTLS holds the server's TLS settings, swapped whole on reload: a
// new handshake sees the certificate (and client CAs) of the last good
// load, connections already open keep theirs.
type serverTLS struct {
	cur atomic.Pointer[tls.Config]
}

// newServerTLS loads t; nil when TLS is off.
func newServerTLS(t config.TLS) (*serverTLS, error) {
	if !t.Enabled() {
		return nil, nil
	}
	s := &serverTLS{}
	if err := s.reload(t); err != nil {
		return nil, err
	}
	return s, nil
}

// reload re-reads the certificate, key and client CAs of t. When they do
// not load, the old ones stay and the error says why.
func (s *serverTLS) reload(t config.TLS) error {
	cert, pool, err := config.LoadTLS(t)
	if err != nil {
		return err
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if pool != nil {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = pool
	}
	s.cur.Store(c)
	return nil
}

// config is the listener's TLS configuration: each handshake takes the
// current one.
func (s *serverTLS) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load(), nil
		},
	}
}

// serveHTTP serves srv on ln, over TLS when st is not nil. Handshake
// failures and other connection errors go to log as warnings.
func serveHTTP(srv *http.Server, ln net.Listener, st *serverTLS, log *slog.Logger) error {
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	if st == nil {
		return srv.Serve(ln)
	}
	srv.TLSConfig = st.config()
	return srv.ServeTLS(ln, "", "")
}

// clearHTTPWarning is logged at every start that serves clear HTTP on an
// address that is not loopback (insecure_http: true).
func clearHTTPWarning(listen string) string {
	return fmt.Sprintf("configuration: insecure_http is set and tls is not: serving clear HTTP on %s, which is not loopback; "+
		"bearer tokens and credentials cross the network readable unless a TLS-terminating proxy is in front", listen)
}
