package script

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/connectortest"
)

// The benchmarks compare Provision and Revoke with a bare exec of the same
// example command (htpasswd-target) fed the same JSON request.

func benchConnector(b *testing.B) (*Connector, string) {
	b.Helper()
	file := filepath.Join(b.TempDir(), "htpasswd")
	c, err := New(htpasswdTarget(file), nil)
	if err != nil {
		b.Fatal(err)
	}
	return c, file
}

func bareExec(b *testing.B, file string, req Request) {
	b.Helper()
	in, err := json.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(htpasswdBin, "-file", file)
	cmd.Stdin = bytes.NewReader(in)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
}

var benchGrant = mayfly.Grant{Name: "reader", Params: map[string]string{"permissions": "read"}}

func BenchmarkProvision(b *testing.B) {
	c, _ := benchConnector(b)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	for b.Loop() {
		name := connectortest.Name("mf_scb_", MaxNameLen)
		if _, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: benchGrant, ExpiresAt: exp}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.Revoke(ctx, mayfly.RevokeRequest{Username: name}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkBareExecProvision(b *testing.B) {
	_, file := benchConnector(b)
	exp := formatTime(time.Now().Add(time.Hour))
	for b.Loop() {
		name := connectortest.Name("mf_scb_", MaxNameLen)
		pw, _ := newPassword()
		bareExec(b, file, Request{Operation: OpProvision, Username: name, Password: pw, Grant: benchGrant.Name, Params: benchGrant.Params, ExpiresAt: exp})
		b.StopTimer()
		bareExec(b, file, Request{Operation: OpRevoke, Username: name})
		b.StartTimer()
	}
}

func BenchmarkRevoke(b *testing.B) {
	c, _ := benchConnector(b)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	for b.Loop() {
		b.StopTimer()
		name := connectortest.Name("mf_scb_", MaxNameLen)
		if _, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: benchGrant, ExpiresAt: exp}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := c.Revoke(ctx, mayfly.RevokeRequest{Username: name}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBareExecRevoke(b *testing.B) {
	_, file := benchConnector(b)
	exp := formatTime(time.Now().Add(time.Hour))
	for b.Loop() {
		b.StopTimer()
		name := connectortest.Name("mf_scb_", MaxNameLen)
		pw, _ := newPassword()
		bareExec(b, file, Request{Operation: OpProvision, Username: name, Password: pw, Grant: benchGrant.Name, Params: benchGrant.Params, ExpiresAt: exp})
		b.StartTimer()
		bareExec(b, file, Request{Operation: OpRevoke, Username: name})
	}
}
