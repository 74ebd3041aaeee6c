package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

func cmdSSHCA(e *env, args []string) error       { return sshCA(e, "ssh ca", args) }
func cmdSSHCARotate(e *env, args []string) error { return sshCA(e, "ssh ca rotate", args) }

// sshCA prints the SSH CA's public keys (ssh ca), or rotates its key first
// (ssh ca rotate).
func sshCA(e *env, name string, args []string) error {
	f := newFlags(e, name, true)
	c, err := f.start(e, args, 0)
	if err != nil {
		return err
	}
	var out struct {
		PublicKeys []string `json:"public_keys"`
	}
	method, path := "GET", "/v1/ssh/ca"
	if name == "ssh ca rotate" {
		method, path = "POST", "/v1/ssh/ca/rotate"
	}
	if err := c.Do(e.ctx, method, path, nil, nil, &out); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(out)
	}
	// authorized_keys lines, ready for TrustedUserCAKeys.
	fmt.Fprintln(e.stdout, strings.Join(out.PublicKeys, "\n"))
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
