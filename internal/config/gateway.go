package config

import (
	"net"
	"slices"
	"strconv"

	"github.com/mayflyhq/mayfly"
)

// Gateway configures the gateways users connect through for grants with
// via: gateway (docs/gateway.md).
type Gateway struct {
	Postgres *PostgresGateway `yaml:"postgres"`
	// SSH is the SSH gateway (docs/ssh-gateway.md).
	SSH *SSHGateway `yaml:"ssh"`
}

// PostgresGateway is the PostgreSQL wire-protocol gateway, run in the
// server process.
type PostgresGateway struct {
	// Listen is the address clients connect to (host:port).
	Listen string `yaml:"listen"`
	// TLS, when set, is the gateway's certificate; clients must then use
	// TLS (sslmode=require or stricter).
	TLS GatewayTLS `yaml:"tls"`
	// AdvertiseHost is the host name credentials give (default: the host
	// of Listen, or 127.0.0.1 when it listens on every address).
	AdvertiseHost string `yaml:"advertise_host"`
}

// GatewayTLS is a gateway's certificate and key, PEM files.
type GatewayTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Address returns the host and port credentials of the gateway give.
func (g *PostgresGateway) Address() (string, int) {
	host, port, _ := net.SplitHostPort(g.Listen)
	p, _ := strconv.Atoi(port)
	if g.AdvertiseHost != "" {
		host = g.AdvertiseHost
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return host, p
}

func (c *Config) validateGateway(lines map[string]seqLines) error {
	f, line := c.Path, lines["gateway"].at(0)
	if g := c.Gateway.Postgres; g != nil {
		_, port, err := net.SplitHostPort(g.Listen)
		if g.Listen == "" || err != nil {
			return lineErr(f, line, "gateway.postgres.listen %q: want host:port, e.g. 127.0.0.1:6432", g.Listen)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return lineErr(f, line, "gateway.postgres.listen %q: port must be a number from 0 to 65535", g.Listen)
		}
		t := g.TLS
		if t.CertFile != "" || t.KeyFile != "" {
			if t.CertFile == "" || t.KeyFile == "" {
				return lineErr(f, line, "gateway.postgres.tls: cert_file and key_file are both required (PEM certificate and its private key)")
			}
			if !c.offline {
				if _, _, err := LoadTLS(TLS{CertFile: t.CertFile, KeyFile: t.KeyFile}); err != nil {
					return lineErr(f, line, "gateway.postgres.%v", err)
				}
			}
		}
	}
	tlines := lines["targets"]
	for i, t := range c.Targets {
		for _, name := range sortedKeys(t.Grants) {
			g := t.Grants[name]
			switch {
			case g.Via != mayfly.ViaGateway || t.Kind == mayfly.KindSSH:
				// The SSH connector checks its own grants (sshgw).
			case t.Kind != mayfly.KindPostgres:
				return lineErr(f, tlines.at(i), "target %q grant %q: via: gateway is for postgres and ssh targets (kind %q has no gateway)", t.Name, name, t.Kind)
			case c.Gateway.Postgres == nil:
				return lineErr(f, tlines.at(i), "target %q grant %q: via: gateway needs gateway.postgres.listen", t.Name, name)
			}
			if t.Kind == mayfly.KindPostgres && g.Via != "" && g.Via != "direct" && g.Via != mayfly.ViaGateway {
				return lineErr(f, tlines.at(i), "target %q grant %q: via %q: want gateway or direct", t.Name, name, g.Via)
			}
			switch g.RecordParams {
			case "", "hmac", "clear":
			default:
				return lineErr(f, tlines.at(i), "target %q grant %q: record_params %q: want hmac or clear", t.Name, name, g.RecordParams)
			}
			if g.RecordParams != "" && g.Via != mayfly.ViaGateway {
				return lineErr(f, tlines.at(i), "target %q grant %q: record_params applies to grants with via: gateway", t.Name, name)
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
