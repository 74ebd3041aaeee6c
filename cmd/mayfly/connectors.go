package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/connector/mysql"
	"github.com/mayflyhq/mayfly/internal/connector/postgres"
	"github.com/mayflyhq/mayfly/internal/connector/redis"
	"github.com/mayflyhq/mayfly/internal/connector/script"
	"github.com/mayflyhq/mayfly/internal/connector/ssh"
	"github.com/mayflyhq/mayfly/internal/credential"
)

// connectors holds one connector per target, and the SSH pieces the API
// serves (CA public keys, revocation lists).
type connectors struct {
	all map[string]mayfly.Connector
	ca  *ssh.CA
	ssh map[string]*ssh.Connector
	// creds made the connectors of the kinds whose admin credential may
	// be kept sealed in the store (nil: none).
	creds *credential.Manager
}

func (c *connectors) Close() {
	for _, x := range c.all {
		x.Close()
	}
	if c.creds != nil {
		c.creds.Close()
	}
	if c.ca != nil {
		c.ca.Close()
	}
}

// credentialKinds is the registry of the target kinds whose admin
// credential Mayfly can keep sealed and rotate: where the credential goes
// in the target, and how its password is replaced.
func credentialKinds() map[string]credential.Kind {
	dsnInConfig := func(t mayfly.Target) bool { return t.DSN != "" || t.DSNEnv != "" }
	applyDSN := func(t *mayfly.Target, cred string) { t.DSN, t.DSNEnv = cred, "" }
	return map[string]credential.Kind{
		mayfly.KindPostgres: {
			New: func(t mayfly.Target, getenv func(string) string) (mayfly.Connector, error) {
				c, err := postgres.New(t, getenv)
				if err != nil {
					return nil, err
				}
				return c, nil
			},
			InConfig: dsnInConfig, Apply: applyDSN, WithPassword: postgres.WithPassword, Full: true,
			Describe: "dsn or dsn_env: the admin DSN",
		},
		mayfly.KindMySQL: {
			New: func(t mayfly.Target, getenv func(string) string) (mayfly.Connector, error) {
				c, err := mysql.New(t, getenv)
				if err != nil {
					return nil, err
				}
				return c, nil
			},
			InConfig: dsnInConfig, Apply: applyDSN, WithPassword: mysql.WithPassword,
			Describe: "dsn or dsn_env: the admin DSN",
		},
		mayfly.KindRedis: {
			New: func(t mayfly.Target, getenv func(string) string) (mayfly.Connector, error) {
				c, err := redis.New(t, getenv)
				if err != nil {
					return nil, err
				}
				return c, nil
			},
			// Without admin_user, Mayfly logs in as the default user,
			// which may need no password.
			InConfig: func(t mayfly.Target) bool {
				return t.AdminPassword != "" || t.AdminPasswordEnv != "" || t.AdminUser == ""
			},
			Apply:        func(t *mayfly.Target, cred string) { t.AdminPassword, t.AdminPasswordEnv = cred, "" },
			WithPassword: func(_, password string) (string, error) { return password, nil },
			Describe:     "admin_password or admin_password_env: the admin_user's password",
		},
	}
}

// openCA opens (creating on first use) the SSH user CA, whose keys are
// encrypted with the passphrase from the configured environment variable:
// in ssh_ca.dir, or in the store when replicas share it (shared), where a
// CA found in ssh_ca.dir is copied on first use.
func openCA(cfg *config.Config, getenv func(string) string, shared mayfly.Store) (*ssh.CA, error) {
	env := cfg.SSHCA.PassphraseEnv
	pass := getenv(env)
	if pass == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "%s: SSH targets need the CA passphrase in $%s (ssh_ca.passphrase_env)", cfg.Path, env)
	}
	if shared != nil {
		ca, err := ssh.OpenSharedCA(shared, cfg.SSHCA.Dir, []byte(pass))
		if err != nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "open the SSH CA kept in the store: %s", mayfly.ErrorMessageOrText(err))
		}
		return ca, nil
	}
	ca, err := ssh.OpenCA(cfg.SSHCA.Dir, []byte(pass))
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "open SSH CA in %s: %s", cfg.SSHCA.Dir, mayfly.ErrorMessageOrText(err))
	}
	return ca, nil
}

// sshTarget is the SSH target t with its krl_file, when relative, made
// relative to the configuration file's directory.
func sshTarget(cfg *config.Config, t mayfly.Target) mayfly.Target {
	if t.KRLFile != "" && !filepath.IsAbs(t.KRLFile) {
		t.KRLFile = filepath.Join(filepath.Dir(cfg.Path), t.KRLFile)
	}
	return t
}

// buildConnectors creates one connector per configured target. This is
// the registry of connector kinds.
// Targets whose kind creds supports get their connector from it, with the
// admin credential stored sealed when there is one. SSH targets keep their
// CA and records in shared, a store replicas share, when it is set, and in
// state_dir otherwise.
func buildConnectors(ctx context.Context, cfg *config.Config, getenv func(string) string, creds *credential.Manager, shared mayfly.Store) (*connectors, error) {
	out := &connectors{all: map[string]mayfly.Connector{}, ssh: map[string]*ssh.Connector{}, creds: creds}
	fail := func(err error) (*connectors, error) {
		out.Close()
		return nil, err
	}
	base := filepath.Dir(cfg.Path)
	for _, t := range cfg.Targets {
		var c mayfly.Connector
		var err error
		switch {
		case creds != nil && creds.Supports(t.Kind):
			c, err = creds.Connector(ctx, t)
		case t.Kind == mayfly.KindScript:
			// Relative command paths are relative to the config file.
			for _, argv := range []*[]string{&t.Commands.Provision, &t.Commands.Revoke, &t.Commands.Accounts, &t.Commands.Check} {
				if len(*argv) > 0 && strings.Contains((*argv)[0], "/") && !filepath.IsAbs((*argv)[0]) {
					(*argv)[0] = filepath.Join(base, (*argv)[0])
				}
			}
			c, err = script.New(t, getenv)
		case t.Kind == mayfly.KindSSH:
			if out.ca == nil {
				if out.ca, err = openCA(cfg, getenv, shared); err != nil {
					return fail(err)
				}
			}
			t = sshTarget(cfg, t)
			var sc *ssh.Connector
			if shared != nil {
				sc, err = ssh.NewShared(t, out.ca, cfg.StateDir, shared, getenv)
			} else {
				sc, err = ssh.New(t, out.ca, cfg.StateDir, getenv)
			}
			if err == nil {
				out.ssh[t.Name] = sc
				c = sc
			}
		default:
			err = mayfly.Errorf(mayfly.EINVALID, "kind %q is not supported", t.Kind)
		}
		if err != nil {
			msg := mayfly.ErrorMessageOrText(err)
			if !strings.Contains(msg, fmt.Sprintf("target %q", t.Name)) {
				msg = fmt.Sprintf("target %q: %s", t.Name, msg)
			}
			return fail(mayfly.Errorf(mayfly.EINVALID, "%s: %s", cfg.Path, msg))
		}
		out.all[t.Name] = c
	}
	return out, nil
}

// sshService adapts the SSH connectors to the API.
type sshService struct{ c *connectors }

func (s sshService) CAPublicKeys() []string { return s.c.ca.PublicKeys() }
func (s sshService) RotateCA(step string) error {
	switch step {
	case "prepare":
		_, err := s.c.ca.PrepareRotation()
		return err
	case "activate":
		return s.c.ca.ActivateRotation()
	}
	return s.c.ca.Rotate()
}
func (s sshService) CANextKey() (string, time.Time, bool) { return s.c.ca.NextKey() }
func (s sshService) RevokedKeys(target string) ([]byte, error) {
	sc, ok := s.c.ssh[target]
	if !ok {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "no SSH target %q", target)
	}
	return sc.RevokedKeys()
}
