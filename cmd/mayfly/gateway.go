package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/gateway/pggw"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
)

// startGateways starts the PostgreSQL gateway when configured, in this
// process (docs/gateway.md says why), and makes the broker issue its
// credentials for grants with via: gateway. It runs until ctx ends.
// replica is this process's replica id when the store is shared by
// replicas, and empty otherwise.
func startGateways(ctx context.Context, cfg *config.Config, b *broker.Broker, replica string, log *slog.Logger, bg *sync.WaitGroup) error {
	gc := cfg.Gateway.Postgres
	if gc == nil {
		return nil
	}
	var tc *tls.Config
	if gc.TLS.CertFile != "" {
		cert, _, err := config.LoadTLS(config.TLS{CertFile: gc.TLS.CertFile, KeyFile: gc.TLS.KeyFile})
		if err != nil {
			return mayfly.Errorf(mayfly.EINVALID, "gateway.postgres.%v", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", gc.Listen)
	if err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "gateway.postgres: listen on %s: %v", gc.Listen, err)
	}
	host, port := gc.Address()
	if port == 0 {
		port = ln.Addr().(*net.TCPAddr).Port
	}
	gw := pggw.New(pggw.Options{Broker: b, Log: sessionlog.New(b.Store(), nil, log), Logger: log, TLS: tc, Host: host, Port: port, Replica: replica})
	b.SetGateway(gw)
	bg.Add(1)
	go func() {
		defer bg.Done()
		if err := gw.Serve(ctx, ln); err != nil {
			log.Error("postgres gateway stopped", "err", err)
		}
	}()
	log.Info("postgres gateway ready", "listen", ln.Addr().String(), "tls", tc != nil, "advertise", net.JoinHostPort(host, strconv.Itoa(port)))
	return nil
}
