package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/connector/ssh"
	"github.com/mayflyhq/mayfly/internal/gateway/sshgw"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
)

// startSSHGateway listens on gateway.ssh.listen and serves the SSH gateway
// until the returned stop is called; nothing when it is not configured.
// With shared (a store replicas share) and no host_key_file of its own, the
// gateway's host key is kept in the store, so every replica presents it.
func startSSHGateway(cfg *config.Config, b *broker.Broker, conns *connectors, shared mayfly.Store, log *slog.Logger) (stop func(), err error) {
	g := cfg.Gateway.SSH
	if g == nil {
		return func() {}, nil
	}
	if conns.ca == nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "%s: gateway.ssh is set but no ssh target is configured", cfg.Path)
	}
	var hostKey gossh.Signer
	if def := config.DefaultSSHGatewayHostKeyFile(cfg); shared != nil && g.HostKeyFile == def {
		if hostKey, err = conns.ca.SharedHostKey(shared, def); err != nil {
			return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "gateway.ssh: host key kept in the store: %s", mayfly.ErrorMessageOrText(err))
		}
	} else if hostKey, err = loadOrCreateHostKey(g.HostKeyFile); err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "gateway.ssh.host_key_file %s: %v", g.HostKeyFile, err)
	}
	ln, err := net.Listen("tcp", g.Listen)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "gateway.ssh: listen on %s: %v", g.Listen, err)
	}
	port := g.PublicPort
	if port == 0 {
		port = ln.Addr().(*net.TCPAddr).Port
	}
	for _, sc := range conns.ssh {
		sc.SetGateway(g.PublicHost, port, strings.TrimSpace(string(gossh.MarshalAuthorizedKey(hostKey.PublicKey()))))
	}
	srv, err := sshgw.New(sshgw.Options{
		HostKey: hostKey, CA: conns.ca, Leases: brokerLeases{b: b, ssh: conns.ssh},
		Log: sessionlog.New(b.Store(), nil, log), Logger: log,
		RecordWithoutPTY: g.RecordWithoutPTY,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil {
			log.Error("ssh gateway stopped", "err", err)
		}
	}()
	log.Info("ssh gateway ready", "listen", ln.Addr().String(), "host_key", gossh.FingerprintSHA256(hostKey.PublicKey()))
	return func() { srv.Close(); <-done }, nil
}

// loadOrCreateHostKey reads the gateway's host key, creating an ed25519
// key (mode 0600) on first start.
func loadOrCreateHostKey(path string) (gossh.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		block, err := gossh.MarshalPrivateKey(priv, "mayfly ssh gateway")
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if b, err = createOnce(path, pem.EncodeToMemory(block)); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	s, err := gossh.ParsePrivateKey(b)
	if err != nil {
		return nil, errors.New("not an unencrypted OpenSSH private key")
	}
	return s, nil
}

// createOnce writes data to path unless path exists, and returns what path
// holds then: of replicas that share a state_dir and start at once, one
// makes the key and all use it.
func createOnce(path string, data []byte) ([]byte, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	// A hard link fails when path exists, where a rename would replace it.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return os.ReadFile(path)
}

// brokerLeases answers the gateway from the broker: leases as the store
// has them, routes from the configuration and the SSH connectors.
type brokerLeases struct {
	b   *broker.Broker
	ssh map[string]*ssh.Connector
}

func (l brokerLeases) Lease(ctx context.Context, id string) (*mayfly.Lease, error) {
	var out *mayfly.Lease
	err := l.b.Store().View(ctx, func(tx mayfly.Tx) error {
		var err error
		out, err = tx.GetLease(id)
		return err
	})
	return out, err
}

func (l brokerLeases) Route(lease *mayfly.Lease) (*ssh.Connector, ssh.Route, error) {
	sc, ok := l.ssh[lease.Target]
	t, tok := l.b.Config().Targets[lease.Target]
	if !ok || !tok {
		return nil, ssh.Route{}, mayfly.Errorf(mayfly.ENOTFOUND, "no ssh target %q", lease.Target)
	}
	g, ok := t.Grants[lease.Grant]
	if !ok {
		return nil, ssh.Route{}, mayfly.Errorf(mayfly.ENOTFOUND, "target %q has no grant %q", lease.Target, lease.Grant)
	}
	g.Name = lease.Grant
	r, err := sc.Route(lease.Username, g)
	return sc, r, err
}

func (l brokerLeases) Changed() <-chan struct{} { return l.b.Changed() }

func (l brokerLeases) Touch(id string, at time.Time) { l.b.TouchActivity(id, at) }
