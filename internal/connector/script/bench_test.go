package script

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
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

// BenchmarkInterleaved runs Provision, a bare exec of the provision
// request, Revoke and a bare exec of the revoke request in turn within each
// iteration, so the four see the same load, and reports the median of each
// and the ratios.
func BenchmarkInterleaved(b *testing.B) {
	c, file := benchConnector(b)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	var prov, execProv, rev, execRev []time.Duration
	timed := func(d *[]time.Duration, f func() error) {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		*d = append(*d, time.Since(start))
	}
	for b.Loop() {
		name := connectortest.Name("mf_scb_", MaxNameLen)
		timed(&prov, func() error {
			_, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: benchGrant, ExpiresAt: exp})
			return err
		})
		timed(&rev, func() error { return c.Revoke(ctx, mayfly.RevokeRequest{Username: name}) })
		bare := connectortest.Name("mf_scb_", MaxNameLen)
		pw, _ := newPassword()
		timed(&execProv, func() error {
			bareExec(b, file, Request{Operation: OpProvision, Username: bare, Password: pw, Grant: benchGrant.Name, Params: benchGrant.Params, ExpiresAt: formatTime(exp)})
			return nil
		})
		timed(&execRev, func() error {
			bareExec(b, file, Request{Operation: OpRevoke, Username: bare})
			return nil
		})
	}
	reportMedians(b, "provision", prov, "exec-provision", execProv, "revoke", rev, "exec-revoke", execRev)
}

// reportMedians reports the median of each series in ms and the ratio of
// each connector series to the bare one after it.
func reportMedians(b *testing.B, conn string, c []time.Duration, bare string, bc []time.Duration, conn2 string, c2 []time.Duration, bare2 string, bc2 []time.Duration) {
	m := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Millisecond)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(m(c), conn+"-ms")
	b.ReportMetric(m(bc), bare+"-ms")
	b.ReportMetric(m(c)/m(bc), conn+"/"+bare)
	b.ReportMetric(m(c2), conn2+"-ms")
	b.ReportMetric(m(bc2), bare2+"-ms")
	b.ReportMetric(m(c2)/m(bc2), conn2+"/"+bare2)
}
