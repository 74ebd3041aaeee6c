package httpapi

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/certgen"
)

// TestClientCertificateErrors: each problem with the server's certificate
// comes back as one line saying what is wrong, as EUNAVAILABLE.
func TestClientCertificateErrors(t *testing.T) {
	ca, err := certgen.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	tests := []struct {
		name string
		leaf certgen.Leaf
		want string
	}{
		{"expired", certgen.Leaf{Hosts: []string{"127.0.0.1"}, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}, "the server's certificate has expired or is not yet valid"},
		{"other name", certgen.Leaf{Hosts: []string{"mayfly.example.com"}}, "the server's certificate is not valid for 127.0.0.1 (it is for mayfly.example.com)"},
		{"good", certgen.Leaf{Hosts: []string{"127.0.0.1"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := ca.Issue(tt.leaf)
			if err != nil {
				t.Fatal(err)
			}
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
			srv.StartTLS()
			defer srv.Close()
			c := NewClient(srv.URL, "tok")
			if err := c.UseTLS(TLSOptions{CAFile: caFile}); err != nil {
				t.Fatal(err)
			}
			err = c.Do(context.Background(), "GET", "/healthz", nil, nil, nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Do = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || mayfly.ErrorCode(err) != mayfly.EUNAVAILABLE {
				t.Errorf("Do = %v (%s); want %q (unavailable)", err, mayfly.ErrorCode(err), tt.want)
			}
		})
	}
}

func TestCheckClearText(t *testing.T) {
	for addr, ok := range map[string]bool{
		"http://127.0.0.1:8765": true, "http://localhost:8765": true, "http://[::1]:8765": true, "http://127.1.2.3": true,
		"https://mayfly.example.com": true, "https://10.0.0.1:8765": true,
		"http://10.0.0.1:8765": false, "http://mayfly.example.com": false, "http://0.0.0.0:8765": false, "http://[::]:8765": false,
		"ftp://127.0.0.1": false, "127.0.0.1:8765": false,
	} {
		if err := CheckClearText(addr); (err == nil) != ok {
			t.Errorf("CheckClearText(%q) = %v; want ok=%v", addr, err, ok)
		}
	}
}
