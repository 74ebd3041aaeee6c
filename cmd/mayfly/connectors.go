package main

import (
	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
)

// buildConnectors creates one connector per configured target. This is
// the registry of connector kinds.
func buildConnectors(cfg *config.Config, getenv func(string) string) (map[string]mayfly.Connector, error) {
	out := map[string]mayfly.Connector{}
	fail := func(err error) (map[string]mayfly.Connector, error) {
		for _, c := range out {
			c.Close()
		}
		return nil, err
	}
	for _, t := range cfg.Targets {
		var c mayfly.Connector
		var err error
		switch t.Kind {
		case mayfly.KindPostgres:
			c, err = postgres.New(t, getenv)
		default:
			err = mayfly.Errorf(mayfly.EINVALID, "target %q: kind %q is not supported by this build", t.Name, t.Kind)
		}
		if err != nil {
			return fail(mayfly.Errorf(mayfly.EINVALID, "%s: target %q: %s", cfg.Path, t.Name, mayfly.ErrorMessageOrText(err)))
		}
		out[t.Name] = c
	}
	return out, nil
}
