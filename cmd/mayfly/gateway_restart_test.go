package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/certgen"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestPostgresGatewayTLSAndRestart: with tls configured the gateway
// requires TLS and serves its certificate (psql with sslmode=verify-full
// against its CA); after a restart of the broker, which held the account's
// password in memory only, the same gateway secret still logs in (the
// gateway sets a new password on the account) and the account's password
// is no longer the one from before.
func TestPostgresGatewayTLSAndRestart(t *testing.T) {
	dir := t.TempDir()
	ca, err := certgen.NewCA("gateway test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(certgen.Leaf{CommonName: "127.0.0.1", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, caFile := filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw-key.pem"), filepath.Join(dir, "ca.pem")
	if err := certgen.WriteFiles(certFile, cert, keyFile, key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	adminExec(t, `CREATE TABLE IF NOT EXISTS mf_gw_items (id int, v text)`)
	w := startWorld(t, worldOpts{
		targets: `  - name: gw-pg
    kind: postgres
    prefix: mfgw_
    dsn: ` + fmt.Sprintf("%q", testenv.PostgresDSN()) + `
    grants:
      rw: {roles: [pg_read_all_data], via: gateway}
`,
		extraYAML: `  - {name: gw, groups: [eng], targets: [gw-pg], grants: [rw], max_duration: 1h, approvals: 0}
gateway:
  postgres: {listen: "` + freeAddr(t) + `", tls: {cert_file: "` + certFile + `", key_file: "` + keyFile + `"}}
`,
	})
	c := gatewayCreds(t, w)
	tlsEnv := func(mode string) []string {
		return []string{"-d", "host=" + c.Host + " sslmode=" + mode + " sslrootcert=" + caFile}
	}
	if out, err := psqlAt(t, c, c.Password, append(tlsEnv("disable"), "-c", "SELECT 1")...); err == nil || !strings.Contains(err.Error(), "requires TLS") {
		t.Fatalf("psql without TLS = %q, %v; want refused: the gateway requires TLS", out, err)
	}
	out, err := psqlAt(t, c, c.Password, append(tlsEnv("verify-full"), "-c", "SELECT 1")...)
	if err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("psql with sslmode=verify-full = %q, %v; want 1", out, err)
	}
	var leases []leaseOut
	w.ok("alice", &leases, "leases", "--active", "-o", "json")
	before := roleVerifier(t, leases[0].Username)

	// Stop the server as a crash or a deploy would, leases left active
	// (w.stop revokes them first).
	w.cancel()
	<-w.done
	w.cancel = nil
	w.startInProcess()
	out, err = psqlAt(t, c, c.Password, append(tlsEnv("verify-full"), "-c", "SELECT 41 + 1")...)
	if err != nil || strings.TrimSpace(out) != "42" {
		t.Fatalf("psql through the restarted gateway = %q, %v; want 42", out, err)
	}
	if after := roleVerifier(t, leases[0].Username); after == before {
		t.Error("the account's password is the same after a restart; the gateway should have set a new one")
	}
	if isPassword(t, roleVerifier(t, leases[0].Username), c.Password) {
		t.Fatal("the account's new password is the gateway secret")
	}
}
