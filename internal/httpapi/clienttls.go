package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/mayflyhq/mayfly"
)

// TLSOptions are what the client trusts and presents.
type TLSOptions struct {
	// CAFile is a PEM file of CA certificates trusted besides the
	// system's roots (MAYFLY_CA_CERT).
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// servers that require one (MAYFLY_CLIENT_CERT, MAYFLY_CLIENT_KEY).
	CertFile, KeyFile string
}

// UseTLS makes the client trust the system roots plus o.CAFile and present
// o's client certificate. Errors name the file and what is wrong with it.
func (c *Client) UseTLS(o TLSOptions) error {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		data, err := os.ReadFile(o.CAFile)
		if err != nil {
			return mayfly.Errorf(mayfly.EINVALID, "MAYFLY_CA_CERT: %v", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(data) {
			return mayfly.Errorf(mayfly.EINVALID, "MAYFLY_CA_CERT: %s holds no PEM certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return mayfly.Errorf(mayfly.EINVALID, "MAYFLY_CLIENT_CERT and MAYFLY_CLIENT_KEY go together: set both (PEM client certificate and its key) or neither")
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return mayfly.Errorf(mayfly.EINVALID, "MAYFLY_CLIENT_CERT %s and MAYFLY_CLIENT_KEY %s: %v", o.CertFile, o.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	// HTTP/1.1: a server's refusal of the client certificate then comes
	// back as its TLS alert, which HTTP/2 would hide.
	t.ForceAttemptHTTP2 = false
	c.HTTP.Transport = t
	return nil
}

// CheckClearText refuses to send a token over http:// to a host that is
// not loopback, where anyone on the way could read it. It runs before
// anything is sent.
func CheckClearText(addr string) error {
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return mayfly.Errorf(mayfly.EINVALID, "MAYFLY_ADDR %q is not a URL such as https://mayfly.example.com or http://127.0.0.1:8765", addr)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
	default:
		return mayfly.Errorf(mayfly.EINVALID, "MAYFLY_ADDR %q: want an https:// or http:// URL", addr)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || strings.EqualFold(host, "localhost") {
		return nil
	}
	return mayfly.Errorf(mayfly.EINVALID, "refusing to send your token in clear text to %s (nothing was sent): use an https:// address, or http:// only to a loopback address such as 127.0.0.1", addr)
}

// transportError turns a failure to exchange with the server into one
// clear line: certificate problems say what is wrong and what to set.
func transportError(addr string, err error) error {
	err = unwrapURLError(err)
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var rhe tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "the server's certificate is not trusted (signed by an unknown authority): set MAYFLY_CA_CERT to the PEM of its CA")
	case errors.As(err, &host):
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "the server's certificate is not valid for %s (it is for %s): use the name it was issued for in MAYFLY_ADDR", host.Host, certNames(host.Certificate))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "the server's certificate has expired or is not yet valid (%s): the server needs a new one", invalid.Detail)
	case errors.As(err, &invalid):
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "the server's certificate is not valid: %v", invalid)
	case clientCertRefused(err):
		return mayfly.Errorf(mayfly.EUNAUTHORIZED, "the server at %s requires a client certificate it trusts and got none it accepts (%v): set MAYFLY_CLIENT_CERT and MAYFLY_CLIENT_KEY to your certificate and key", addr, err)
	case errors.As(err, &rhe) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "the server at %s does not speak HTTPS: check MAYFLY_ADDR", addr)
	}
	return mayfly.Errorf(mayfly.EUNAVAILABLE, "cannot reach the Mayfly server at %s (set MAYFLY_ADDR): %v", addr, err)
}

// clientCertRefused reports whether err is the server's TLS alert that it
// wants a client certificate or does not accept the one sent.
func clientCertRefused(err error) bool {
	var op *net.OpError
	var alert tls.AlertError
	msg := ""
	switch {
	case errors.As(err, &alert):
		msg = alert.Error()
	case errors.As(err, &op) && op.Op == "remote error":
		msg = op.Err.Error()
	default:
		return false
	}
	for _, s := range []string{"certificate required", "bad certificate", "unknown certificate authority", "unsupported certificate", "expired certificate", "certificate revoked"} {
		if strings.HasSuffix(msg, s) {
			return true
		}
	}
	return false
}

// certNames lists the names a certificate is valid for.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "other names"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no host name"
	}
	return strings.Join(names, ", ")
}

// httpsHint is the error for a clear-HTTP request answered by an HTTPS
// server (it answers 400 with this text).
func httpsHint(addr string, status int, body []byte) error {
	if status == http.StatusBadRequest && strings.Contains(string(body), "HTTP request to an HTTPS server") {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "the server at %s speaks HTTPS: use an https:// MAYFLY_ADDR", addr)
	}
	return nil
}
