package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/certgen"
)

func TestParseTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := certgen.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(certgen.Leaf{Hosts: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ca.Issue(certgen.Leaf{Hosts: []string{"localhost"}})
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certF, keyF, otherKeyF := write("cert.pem", cert), write("key.pem", key), write("other-key.pem", otherKey)
	caF, junkF := write("ca.pem", ca.PEM), write("junk.pem", []byte("junk\n"))
	base := "store: {sqlite: a.db}\n"
	tlsLine := func(c, k, ca string) string {
		return fmt.Sprintf("tls: {cert_file: %q, key_file: %q, client_ca_file: %q}\n", c, k, ca)
	}

	good := []struct{ name, yaml string }{
		{"default listen", base},
		{"loopback", "listen: 127.0.0.1:8765\n" + base},
		{"loopback v6", "listen: \"[::1]:8765\"\n" + base},
		{"localhost", "listen: localhost:8765\n" + base},
		{"insecure_http", "listen: 0.0.0.0:8765\ninsecure_http: true\n" + base},
		{"tls", "listen: 0.0.0.0:8765\n" + base + tlsLine(certF, keyF, "")},
		{"mutual tls", "listen: \":8765\"\n" + base + tlsLine(certF, keyF, caF)},
	}
	for _, tt := range good {
		if _, err := Parse([]byte(tt.yaml), "f.yaml"); err != nil {
			t.Errorf("%s: Parse = %v", tt.name, err)
		}
	}
	bad := []struct {
		name, yaml string
		want       []string
	}{
		{"clear on all interfaces", "listen: 0.0.0.0:8765\n" + base, []string{"f.yaml:1:", "tls", "insecure_http"}},
		{"clear on empty host", "listen: \":8765\"\n" + base, []string{"f.yaml:1:", "tls", "insecure_http"}},
		{"clear on ::", "listen: \"[::]:8765\"\n" + base, []string{"insecure_http"}},
		{"clear on a LAN address", "listen: 10.1.2.3:8765\n" + base, []string{"insecure_http"}},
		{"cert without key", base + "tls: {cert_file: " + certF + "}\n", []string{"f.yaml:2:", "key_file"}},
		{"missing cert", base + tlsLine(filepath.Join(dir, "nope.pem"), keyF, ""), []string{"f.yaml:2:", "nope.pem"}},
		{"mismatched pair", base + tlsLine(certF, otherKeyF, ""), []string{"f.yaml:2:", "not a usable pair", "other-key.pem"}},
		{"client CA without certificates", base + tlsLine(certF, keyF, junkF), []string{"client_ca_file", "junk.pem", "no PEM certificate"}},
	}
	for _, tt := range bad {
		_, err := Parse([]byte(tt.yaml), "f.yaml")
		if err == nil {
			t.Errorf("%s: Parse accepted %q", tt.name, tt.yaml)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: Parse error = %q; want it to contain %q", tt.name, err, w)
			}
		}
	}
}

// TestPolicyFileTLSOffline: policy check and test read a server's
// configuration without its certificate files.
func TestPolicyFileTLSOffline(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mayfly.yaml")
	os.WriteFile(p, []byte("listen: 0.0.0.0:8765\nstore: {sqlite: a.db}\ntls: {cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem}\n"), 0o600)
	if _, err := LoadPolicyFile(p); err != nil {
		t.Errorf("LoadPolicyFile = %v", err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "cert.pem") {
		t.Errorf("Load = %v; want the missing certificate named", err)
	}
}
