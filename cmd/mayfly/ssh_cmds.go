package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/mayflyhq/mayfly/internal/httpapi"
)

func cmdSSHCA(e *env, args []string) error {
	f := newFlags(e, "ssh ca", true)
	c, err := f.start(e, args, 0)
	if err != nil {
		return err
	}
	var out httpapi.CAView
	if err := c.Do(e.ctx, "GET", "/v1/ssh/ca", nil, nil, &out); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(out)
	}
	// authorized_keys lines, ready for TrustedUserCAKeys.
	fmt.Fprintln(e.stdout, strings.Join(out.PublicKeys, "\n"))
	return nil
}

// cmdSSHCARotate rotates the CA's signing key in two steps, so that no
// host refuses new certificates: publish the next key, let every host
// fetch it, then activate it.
func cmdSSHCARotate(e *env, args []string) error {
	f := newFlags(e, "ssh ca rotate", true)
	activate := f.Bool("activate", false, "make the published next key the signing key (after every host fetched it)")
	now := f.Bool("now", false, "publish and activate a new key at once (a compromised key): hosts that have not fetched it refuse new certificates until they do")
	reason := f.String("reason", "", "why (recorded in the audit trail)")
	c, err := f.start(e, args, 0)
	if err != nil {
		return err
	}
	step := "prepare"
	switch {
	case *activate && *now:
		return usageErr("ssh ca rotate: --activate and --now exclude each other")
	case *activate:
		step = "activate"
	case *now:
		step = "now"
	}
	var out httpapi.CAView
	if err := c.Do(e.ctx, "POST", "/v1/ssh/ca/rotate", nil, httpapi.RotateBody{Step: step, Reason: *reason}, &out); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(out)
	}
	switch step {
	case "prepare":
		fmt.Fprintf(e.stdout, "next key published (it signs nothing yet):\n  %s\n", out.NextKey)
		fmt.Fprintln(e.stdout, "Hosts trust it once they fetch the CA keys again (`mayfly ssh ca` lists it). When every host has it, run `mayfly ssh ca rotate --activate`.")
	default:
		fmt.Fprintf(e.stdout, "signing key is now:\n  %s\n", out.SigningKey)
		if len(out.PublicKeys) > 1 {
			fmt.Fprintln(e.stdout, "The previous key stays in `mayfly ssh ca` until the certificates it signed expire.")
		}
	}
	return nil
}

// cmdSSHRevokedKeys fetches a target's key revocation list.
func cmdSSHRevokedKeys(e *env, args []string) error {
	f := newFlags(e, "ssh revoked-keys", false)
	target := f.String("target", "", "SSH target name (required)")
	outPath := f.String("out", "", "write to this file (atomically) instead of stdout")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if *target == "" {
		return usageErr("ssh revoked-keys: --target is required")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(e.ctx, "GET", c.Addr+"/v1/ssh/revoked-keys?target="+url.QueryEscape(*target), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("fetch revoked keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("fetch revoked keys: server answered %s", resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if *outPath == "" {
		_, err = e.stdout.Write(data)
		return err
	}
	tmp := *outPath + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, *outPath)
}
