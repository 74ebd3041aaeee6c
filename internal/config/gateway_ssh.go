package config

import (
	"net"
	"path/filepath"
	"strconv"

	"github.com/mayflyhq/mayfly"
)

// SSHGateway configures the SSH gateway, through which users reach the
// grants of ssh targets marked `via: gateway`, every session recorded.
type SSHGateway struct {
	// Listen is the address the gateway accepts SSH connections on.
	Listen string `yaml:"listen"`
	// HostKeyFile is the gateway's own host key (an OpenSSH private key),
	// created on first start when missing; default: in the state
	// directory. Relative paths are relative to the configuration file.
	HostKeyFile string `yaml:"host_key_file"`
	// PublicHost and PublicPort are what credentials tell users to
	// connect to (default: the listen address; localhost for a wildcard).
	PublicHost string `yaml:"public_host"`
	PublicPort int    `yaml:"public_port"`
	// RecordWithoutPTY is how many bytes of each stream (input, output)
	// the recording keeps of a channel without a terminal (`ssh host cmd`,
	// piped data): default 1 MiB (1048576); -1 keeps everything, at the
	// cost of bulk transfers' speed. Terminals are always recorded whole;
	// the exit event counts every byte either way.
	RecordWithoutPTY int64 `yaml:"record_without_pty"`
}

// DefaultRecordWithoutPTY is gateway.ssh.record_without_pty's default.
const DefaultRecordWithoutPTY = 1 << 20

func (c *Config) validateSSHGateway(lines map[string]seqLines) error {
	g := c.Gateway.SSH
	line := lines["gateway"].at(0)
	via := ""
	for _, t := range c.Targets {
		for name, gr := range t.Grants {
			if t.Kind == mayfly.KindSSH && gr.Via == "gateway" && via == "" {
				via = t.Name + "/" + name
			}
		}
	}
	if g == nil || g.Listen == "" {
		if via != "" {
			return lineErr(c.Path, line, "grant %s is reached via the gateway, but gateway.ssh.listen is not set", via)
		}
		if g != nil {
			return lineErr(c.Path, line, "gateway.ssh.listen is required (host:port, e.g. 127.0.0.1:2222)")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(g.Listen)
	p, perr := strconv.Atoi(port)
	if err != nil || perr != nil || p < 0 || p > 65535 {
		return lineErr(c.Path, line, "gateway.ssh.listen %q: want host:port", g.Listen)
	}
	if g.PublicPort < 0 || g.PublicPort > 65535 {
		return lineErr(c.Path, line, "gateway.ssh.public_port %d: want 1 to 65535", g.PublicPort)
	}
	if g.RecordWithoutPTY < -1 {
		return lineErr(c.Path, line, "gateway.ssh.record_without_pty %d: want a number of bytes, or -1 to record everything", g.RecordWithoutPTY)
	}
	if g.RecordWithoutPTY == 0 {
		g.RecordWithoutPTY = DefaultRecordWithoutPTY
	}
	if g.PublicHost == "" {
		g.PublicHost = host
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			g.PublicHost = "localhost"
		}
	}
	if g.PublicPort == 0 {
		g.PublicPort = p
	}
	if g.HostKeyFile == "" {
		g.HostKeyFile = DefaultSSHGatewayHostKeyFile(c)
	} else if !filepath.IsAbs(g.HostKeyFile) && c.Path != "" {
		g.HostKeyFile = filepath.Join(filepath.Dir(c.Path), g.HostKeyFile)
	}
	return nil
}

// DefaultSSHGatewayHostKeyFile is where the SSH gateway's host key is kept
// when gateway.ssh.host_key_file is not set: in state_dir (on a PostgreSQL
// store the key is kept in the store, and this file is only imported).
func DefaultSSHGatewayHostKeyFile(c *Config) string {
	return filepath.Join(c.StateDir, "ssh-gateway-host-key")
}
