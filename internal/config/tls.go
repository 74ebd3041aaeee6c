package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
)

// TLS configures HTTPS for the API (and SCIM, and /metrics: one listener).
type TLS struct {
	// CertFile and KeyFile are the PEM server certificate (with any
	// intermediates after it) and its private key. Both are re-read on
	// reload (SIGHUP, `mayfly policy reload`), so they can rotate without
	// a restart.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, is a PEM bundle of the CAs whose client
	// certificates the server requires (mutual TLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the server speaks HTTPS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// LoadTLS reads the certificate pair and the client CAs of t; errors name
// the file and what is wrong with it.
func LoadTLS(t TLS) (tls.Certificate, *x509.CertPool, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return tls.Certificate{}, nil, fmt.Errorf("tls: cert_file and key_file are both required")
	}
	for _, f := range []string{t.CertFile, t.KeyFile} {
		if _, err := os.Stat(f); err != nil {
			return tls.Certificate{}, nil, fmt.Errorf("tls: %v", err)
		}
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tls: cert_file %s and key_file %s are not a usable pair: %v", t.CertFile, t.KeyFile, err)
	}
	if t.ClientCAFile == "" {
		return cert, nil, nil
	}
	pool, err := LoadCertPool(t.ClientCAFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tls: client_ca_file: %v", err)
	}
	return cert, pool, nil
}

// LoadCertPool reads a PEM file of one or more CA certificates.
func LoadCertPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// IsLoopback reports whether the host of a listen address (host:port) is
// a loopback IP or "localhost". An empty host, 0.0.0.0 or :: listens on
// every interface and is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateTLS checks the tls section (the files must load as a pair now)
// and refuses clear HTTP on an address other hosts can reach unless
// insecure_http says so.
func (c *Config) validateTLS(lines map[string]seqLines) error {
	f := c.Path
	t := c.TLS
	if t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			return lineErr(f, lines["tls"].at(0), "tls: cert_file and key_file are both required (PEM certificate and its private key)")
		}
		if c.offline {
			return nil
		}
		if _, _, err := LoadTLS(t); err != nil {
			return lineErr(f, lines["tls"].at(0), "%v", err)
		}
		return nil
	}
	if !c.InsecureHTTP && !IsLoopback(c.Listen) {
		return lineErr(f, lines["listen"].at(0), "listen %s: refusing to serve clear HTTP on an address that is not loopback, where bearer tokens would cross the network readable; "+
			"configure tls: {cert_file, key_file} (or put a TLS-terminating proxy in front and set insecure_http: true)", c.Listen)
	}
	return nil
}
