package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/seal"
)

func cmdTargetsSetCredential(e *env, args []string) error {
	return targetsSub(e, "set-credential", args)
}
func cmdTargetsRotateCredential(e *env, args []string) error {
	return targetsSub(e, "rotate-credential", args)
}

// targetsSub runs `targets set-credential` and `targets rotate-credential`.
func targetsSub(e *env, sub string, args []string) error {
	f := newFlags(e, "targets "+sub, true)
	var noCheck *bool
	if sub == "set-credential" {
		noCheck = f.Bool("no-check", false, "store the credential without logging in with it first")
	}
	c, err := f.start(e, args, 1)
	if err != nil {
		return err
	}
	target := f.pos[0]
	path := "/v1/targets/" + url.PathEscape(target) + "/credential"
	var res httpapi.CredentialResult
	switch sub {
	case "set-credential":
		b, err := io.ReadAll(io.LimitReader(e.stdin, 64<<10))
		if err != nil {
			return fmt.Errorf("targets set-credential: read standard input: %w", err)
		}
		cred := strings.TrimRight(string(b), "\r\n")
		if strings.TrimSpace(cred) == "" {
			return usageErr("targets set-credential: give the credential on standard input (postgres, mysql: the admin DSN; redis: the admin password)")
		}
		if err := c.Do(e.ctx, "PUT", path, nil, httpapi.CredentialBody{Credential: cred, SkipCheck: *noCheck}, &res); err != nil {
			return err
		}
	case "rotate-credential":
		if err := c.Do(e.ctx, "POST", path+"/rotate", nil, nil, &res); err != nil {
			return err
		}
	}
	if f.json() {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", res.Target, res.Status)
	return nil
}

func cmdSealNewKey(e *env, args []string) error    { return sealSub(e, "new-key", args) }
func cmdSealRotateKey(e *env, args []string) error { return sealSub(e, "rotate-key", args) }

// sealSub runs `seal new-key` and `seal rotate-key`.
func sealSub(e *env, sub string, args []string) error {
	f := newFlags(e, "seal "+sub, sub == "rotate-key")
	var out, cfgPath, newFile, newEnv *string
	switch sub {
	case "new-key":
		out = f.String("out", "", "write the key to this new file (mode 0600) instead of standard output")
	case "rotate-key":
		cfgPath = f.String("config", "", "the server's configuration file: its store and current seal key (required)")
		newFile = f.String("new-key-file", "", "file holding the new master key")
		newEnv = f.String("new-key-env", "", "environment variable holding the new master key")
	}
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	if sub == "new-key" {
		k := seal.NewKey()
		if *out == "" {
			fmt.Fprintln(e.stdout, k)
			return nil
		}
		fh, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return mayfly.Errorf(mayfly.EINVALID, "seal new-key: %v", err)
		}
		if _, err := fmt.Fprintln(fh, k); err != nil {
			fh.Close()
			return err
		}
		return fh.Close()
	}
	if *cfgPath == "" {
		return usageErr("seal rotate-key: --config FILE is required")
	}
	next := seal.Config{KeyFile: *newFile, KeyEnv: *newEnv}
	if !next.Enabled() {
		return usageErr("seal rotate-key: give the new key with --new-key-file FILE or --new-key-env NAME")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if !cfg.Seal.Enabled() {
		return mayfly.Errorf(mayfly.EINVALID, "seal rotate-key: %s sets no seal.key_file or seal.key_env: there is no current key to rotate", *cfgPath)
	}
	oldKey, err := seal.LoadKey(cfg.Seal, e.getenv)
	if err != nil {
		return err
	}
	newKey, err := seal.LoadKey(next, e.getenv)
	if err != nil {
		return mayfly.Errorf(mayfly.EINVALID, "seal rotate-key: new key: %s", strings.TrimPrefix(mayfly.ErrorMessageOrText(err), "seal."))
	}
	st, err := openExistingStore(e.ctx, cfg.Store, e.getenv)
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
		return mayfly.Errorf(mayfly.EINVALID, "seal rotate-key: %s: nothing to rotate (start the server with the new key instead)", mayfly.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	defer st.Close()
	n, err := seal.RotateMaster(e.ctx, st, oldKey, newKey, nil)
	if err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(map[string]any{"rotated": true, "data_keys": n})
	}
	fmt.Fprintf(e.stdout, "master key rotated: %d data keys re-wrapped. Configure the new key (seal.key_file or seal.key_env) and restart every replica.\n", n)
	return nil
}
