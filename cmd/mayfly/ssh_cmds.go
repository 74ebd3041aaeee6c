package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

func cmdSSH(e *env, args []string) error {
	if len(args) == 0 {
		return usageErr("ssh: want `ssh ca`, `ssh ca rotate` or `ssh revoked-keys --target T`")
	}
	switch args[0] {
	case "ca":
		rotate := len(args) > 1 && args[1] == "rotate"
		rest := args[1:]
		if rotate {
			rest = args[2:]
		}
		f := newFlags(e, "ssh", true)
		if err := f.parse(e, rest); err != nil {
			return err
		}
		if err := f.exactArgs(0); err != nil {
			return err
		}
		c, err := e.client()
		if err != nil {
			return err
		}
		var out struct {
			PublicKeys []string `json:"public_keys"`
		}
		method, path := "GET", "/v1/ssh/ca"
		if rotate {
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
	case "revoked-keys":
		f := newFlags(e, "ssh", false)
		target := f.String("target", "", "SSH target name")
		outPath := f.String("out", "", "write to this file (atomically) instead of stdout")
		if err := f.parse(e, args[1:]); err != nil {
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
	return usageErr("ssh: unknown subcommand %q", args[0])
}
