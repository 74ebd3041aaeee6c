package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/credential"
	"github.com/mayflyhq/mayfly/internal/seal"
)

// credentialSyncEvery is how often a replica reads the stored credentials
// to follow a change made on another.
const credentialSyncEvery = 2 * time.Second

// openCredentials opens the sealed credentials of the store: with the
// configured master key, which must match the store's key check, or
// without one (then only the configuration's credentials are usable).
// readOnly leaves the store as it is (a pending rotation unresolved), for a
// diagnosis beside a running server.
func openCredentials(ctx context.Context, cfg *config.Config, st mayfly.Store, getenv func(string) string, log *slog.Logger, holder string, committed func(), readOnly bool) (*credential.Manager, error) {
	var keys *seal.Keyring
	if cfg.Seal.Enabled() {
		master, err := seal.LoadKey(cfg.Seal, getenv)
		if err != nil {
			return nil, err
		}
		open := seal.Open
		if readOnly {
			// A diagnosis run makes no keys: with a wrong master key
			// that would lock the server out. No keys, nothing sealed.
			open = seal.OpenExisting
		}
		if keys, err = open(ctx, st, master); errors.Is(err, seal.ErrNoKeys) {
			keys = nil
		} else if err != nil {
			if mayfly.ErrorCode(err) == mayfly.EINVALID {
				return nil, mayfly.Errorf(mayfly.EINVALID, "%s: %s: %s", cfg.Path, cfg.Seal.Source(), mayfly.ErrorMessage(err))
			}
			return nil, err
		}
	}
	o := credential.Options{Store: st, Keys: keys, Kinds: credentialKinds(), Getenv: getenv, Logger: log,
		Holder: holder, Committed: committed, ReadOnly: readOnly}
	if fp, ok := strings.CutPrefix(getenv("MAYFLY_FAILPOINT"), "crash-after-rotation:"); ok {
		// Fault injection for crash-safety tests: die the hard way right
		// after rotation step fp.
		if !slices.Contains(credential.Steps, fp) {
			return nil, fmt.Errorf("MAYFLY_FAILPOINT: no rotation step %q (steps: %s)", fp, strings.Join(credential.Steps, ", "))
		}
		o.AfterStep = func(step string) {
			if step == fp {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	return credential.New(o), nil
}

// credentialService adapts the credential manager to the API.
type credentialService struct{ m *credential.Manager }

func (s credentialService) SetCredential(ctx context.Context, actor, source, target, cred string, check bool) error {
	return s.m.Set(ctx, actor, source, target, cred, check)
}

// Kinds lists the target kinds whose admin credential can be kept sealed.
func (s credentialService) Kinds() []string { return s.m.Kinds() }

func (s credentialService) RotateCredential(ctx context.Context, actor, source, target string) (time.Time, error) {
	return s.m.Rotate(ctx, actor, source, target)
}
