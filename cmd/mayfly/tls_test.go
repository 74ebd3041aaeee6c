package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/certgen"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// testCA makes a CA and writes its certificate to dir/name.pem.
func testCA(t *testing.T, dir, name string) (*certgen.CA, string) {
	t.Helper()
	ca, err := certgen.NewCA("test CA "+name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".pem")
	if err := os.WriteFile(path, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return ca, path
}

// issue writes a certificate of ca for l to certPath and keyPath.
func issue(t *testing.T, ca *certgen.CA, l certgen.Leaf, certPath, keyPath string) {
	t.Helper()
	cert, key, err := ca.Issue(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := certgen.WriteFiles(certPath, cert, keyPath, key); err != nil {
		t.Fatal(err)
	}
}

var loopbackHosts = []string{"127.0.0.1", "localhost"}

// tryEnv runs a CLI command as user against w over https, with env
// setting (or, with "", unsetting) more variables.
func (w *world) tryEnv(user string, env map[string]string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		switch k {
		case "MAYFLY_ADDR":
			return "https://" + w.addr
		case "MAYFLY_TOKEN":
			return w.tokens[user]
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, args, getenv, strings.NewReader(""), &out, &errb)
	return out.String(), err
}

// startTLSWorld runs a broker whose config has extraYAML (its tls
// section), waiting until alice reaches it with env.
func startTLSWorld(t *testing.T, addr, extraYAML string, env map[string]string) *world {
	t.Helper()
	requirePG(t)
	w := &world{t: t, dir: t.TempDir(), addr: addr, tokens: newTokens(), stderr: &syncBuffer{}}
	w.cfg = writeConfig(t, w.dir, w.addr, w.tokens, worldOpts{extraYAML: extraYAML})
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.done = make(chan error, 1)
	go func() {
		w.done <- run(ctx, []string{"server", "--config", w.cfg}, os.Getenv, strings.NewReader(""), &bytes.Buffer{}, w.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop")
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := w.tryEnv("alice", env, "whoami")
		if err == nil {
			return w
		}
		select {
		case err := <-w.done:
			t.Fatalf("server exited: %v\n%s", err, w.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not answer over https: %v\n%s", err, w.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTLSPrivateCA: the CLI reaches an HTTPS server whose certificate a
// private CA signed when MAYFLY_CA_CERT names that CA, and refuses it,
// in one clear line and exit status 5, without it or with another CA.
func TestTLSPrivateCA(t *testing.T) {
	dir := t.TempDir()
	ca, caFile := testCA(t, dir, "server-ca")
	_, otherCA := testCA(t, dir, "other-ca")
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// For localhost only, so that 127.0.0.1 is a name it is not for.
	issue(t, ca, certgen.Leaf{CommonName: "mayfly", Hosts: []string{"localhost"}}, cert, key)
	addr := freeAddr(t)
	trust := map[string]string{"MAYFLY_CA_CERT": caFile, "MAYFLY_ADDR": "https://localhost:" + port(addr)}
	w := startTLSWorld(t, addr, fmt.Sprintf("tls: {cert_file: %q, key_file: %q}\n", cert, key), trust)

	out, err := w.tryEnv("alice", trust, "whoami")
	if err != nil || !strings.Contains(out, "alice") {
		t.Fatalf("whoami over https with MAYFLY_CA_CERT: %q, %v", out, err)
	}
	out, err = w.tryEnv("alice", trust, "request", "local-pg/readonly", "--for", "5m", "--reason", "INC-1 tls", "-o", "json")
	if err != nil || !strings.Contains(out, `"approved"`) {
		t.Fatalf("request over https: %q, %v", out, err)
	}

	for name, env := range map[string]map[string]string{
		"no CA":    {"MAYFLY_ADDR": trust["MAYFLY_ADDR"]},
		"wrong CA": {"MAYFLY_ADDR": trust["MAYFLY_ADDR"], "MAYFLY_CA_CERT": otherCA},
	} {
		_, err := w.tryEnv("alice", env, "whoami")
		if err == nil {
			t.Fatalf("%s: whoami succeeded; want the certificate refused", name)
		}
		want := "the server's certificate is not trusted (signed by an unknown authority): set MAYFLY_CA_CERT to the PEM of its CA"
		if err.Error() != want || exitCode(err) != 5 {
			t.Errorf("%s: %q (exit %d); want %q (exit 5)", name, err, exitCode(err), want)
		}
	}

	// A CA file that is missing, or holds no certificate, is named.
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("not a certificate\n"), 0o644)
	for _, f := range []string{filepath.Join(dir, "missing.pem"), empty} {
		_, err := w.tryEnv("alice", map[string]string{"MAYFLY_CA_CERT": f, "MAYFLY_ADDR": trust["MAYFLY_ADDR"]}, "whoami")
		if err == nil || !strings.Contains(err.Error(), "MAYFLY_CA_CERT") || !strings.Contains(err.Error(), f) || exitCode(err) != 2 {
			t.Errorf("MAYFLY_CA_CERT=%s: %v (exit %d); want an error naming it (exit 2)", f, err, exitCode(err))
		}
	}
	// A certificate for other names is refused and says which.
	_, err = w.tryEnv("alice", map[string]string{"MAYFLY_CA_CERT": caFile}, "whoami") // https://127.0.0.1:port
	if err == nil || !strings.Contains(err.Error(), "not valid for 127.0.0.1 (it is for localhost)") || exitCode(err) != 5 {
		t.Errorf("whoami at 127.0.0.1 with a certificate for localhost: %v (exit %d); want the name mismatch said", err, exitCode(err))
	}
	// Clear HTTP to the HTTPS server gets a hint.
	if _, err := w.tryEnv("alice", map[string]string{"MAYFLY_ADDR": "http://" + w.addr}, "whoami"); err == nil || !strings.Contains(err.Error(), "speaks HTTPS") {
		t.Errorf("http:// to the https server: %v; want a hint to use https", err)
	}
}

func port(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

// TestTLSMutual: with tls.client_ca_file the server refuses a client
// without a certificate, or with one another CA signed (exit 3, one line
// naming MAYFLY_CLIENT_CERT), and serves one with a certificate of its CA.
func TestTLSMutual(t *testing.T) {
	dir := t.TempDir()
	ca, caFile := testCA(t, dir, "server-ca")
	clientCA, clientCAFile := testCA(t, dir, "client-ca")
	otherCA, _ := testCA(t, dir, "other-ca")
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	issue(t, ca, certgen.Leaf{CommonName: "mayfly", Hosts: loopbackHosts}, cert, key)
	issue(t, clientCA, certgen.Leaf{CommonName: "alice", Client: true}, filepath.Join(dir, "alice.pem"), filepath.Join(dir, "alice-key.pem"))
	issue(t, otherCA, certgen.Leaf{CommonName: "mallory", Client: true}, filepath.Join(dir, "mallory.pem"), filepath.Join(dir, "mallory-key.pem"))
	withCert := map[string]string{"MAYFLY_CA_CERT": caFile, "MAYFLY_CLIENT_CERT": filepath.Join(dir, "alice.pem"), "MAYFLY_CLIENT_KEY": filepath.Join(dir, "alice-key.pem")}
	w := startTLSWorld(t, freeAddr(t), fmt.Sprintf("tls: {cert_file: %q, key_file: %q, client_ca_file: %q}\n", cert, key, clientCAFile), withCert)

	if out, err := w.tryEnv("alice", withCert, "whoami"); err != nil || !strings.Contains(out, "alice") {
		t.Fatalf("whoami with a client certificate: %q, %v", out, err)
	}
	for name, env := range map[string]map[string]string{
		"no client certificate":    {"MAYFLY_CA_CERT": caFile},
		"another CA's certificate": {"MAYFLY_CA_CERT": caFile, "MAYFLY_CLIENT_CERT": filepath.Join(dir, "mallory.pem"), "MAYFLY_CLIENT_KEY": filepath.Join(dir, "mallory-key.pem")},
	} {
		_, err := w.tryEnv("alice", env, "whoami")
		if err == nil {
			t.Fatalf("%s: whoami succeeded; want it refused", name)
		}
		t.Logf("%s: %v", name, err)
		if !strings.Contains(err.Error(), "requires a client certificate") || !strings.Contains(err.Error(), "MAYFLY_CLIENT_CERT") || exitCode(err) != 3 {
			t.Errorf("%s: %q (exit %d); want the client certificate named (exit 3)", name, err, exitCode(err))
		}
	}
	// Half a client certificate is a usage error.
	if _, err := w.tryEnv("alice", map[string]string{"MAYFLY_CA_CERT": caFile, "MAYFLY_CLIENT_CERT": filepath.Join(dir, "alice.pem")}, "whoami"); err == nil || !strings.Contains(err.Error(), "MAYFLY_CLIENT_KEY") {
		t.Errorf("MAYFLY_CLIENT_CERT without MAYFLY_CLIENT_KEY: %v", err)
	}
}

// TestTLSRotation: replacing the certificate files and reloading (the
// reload endpoint, then SIGHUP) makes new connections see the new
// certificate, without a restart; a pair that does not load is refused
// with the reason and the last good certificate keeps serving.
func TestTLSRotation(t *testing.T) {
	dir := t.TempDir()
	ca1, ca1File := testCA(t, dir, "ca1")
	ca2, ca2File := testCA(t, dir, "ca2")
	ca3, ca3File := testCA(t, dir, "ca3")
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	issue(t, ca1, certgen.Leaf{CommonName: "mayfly", Hosts: loopbackHosts}, cert, key)
	trust1, trust2, trust3 := map[string]string{"MAYFLY_CA_CERT": ca1File}, map[string]string{"MAYFLY_CA_CERT": ca2File}, map[string]string{"MAYFLY_CA_CERT": ca3File}
	w := startTLSWorld(t, freeAddr(t), fmt.Sprintf("tls: {cert_file: %q, key_file: %q}\n", cert, key), trust1)
	if _, err := w.tryEnv("alice", trust2, "whoami"); err == nil {
		t.Fatal("CA 2 is trusted before the rotation: the test proves nothing")
	}

	// Through the reload endpoint (the same reload as SIGHUP).
	issue(t, ca2, certgen.Leaf{CommonName: "mayfly", Hosts: loopbackHosts}, cert, key)
	if _, err := w.tryEnv("carol", trust1, "policy", "reload"); err != nil {
		t.Fatalf("policy reload: %v", err)
	}
	if _, err := w.tryEnv("alice", trust2, "whoami"); err != nil {
		t.Fatalf("after rotation to CA 2 and reload: %v\n%s", err, tail(w.stderr.String(), 2000))
	}
	if _, err := w.tryEnv("alice", trust1, "whoami"); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("the old CA after rotation: %v; want the certificate not trusted", err)
	}

	// Through SIGHUP. Notify here too, so the signal never reaches the
	// default action (ending the process) whatever the server's state.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	issue(t, ca3, certgen.Leaf{CommonName: "mayfly", Hosts: loopbackHosts}, cert, key)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := w.tryEnv("alice", trust3, "whoami")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after rotation to CA 3 and SIGHUP: %v\n%s", err, tail(w.stderr.String(), 2000))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A broken pair: refused with the reason, the last good one stays.
	if err := os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := w.tryEnv("carol", trust3, "policy", "reload")
	if err == nil || !strings.Contains(err.Error(), "tls:") || !strings.Contains(err.Error(), key) {
		t.Fatalf("reload with a broken key: %v; want it refused naming the key file", err)
	}
	if _, err := w.tryEnv("alice", trust3, "whoami"); err != nil {
		t.Errorf("after a refused rotation the last good certificate should serve: %v", err)
	}
}

// TestTLSClearHTTPOffLoopback: the server refuses to listen in clear on
// an address that is not loopback, naming tls and insecure_http; with
// insecure_http: true it starts and warns.
func TestTLSClearHTTPOffLoopback(t *testing.T) {
	requirePG(t)
	dir := t.TempDir()
	tokens := newTokens()
	listen := "0.0.0.0:" + port(freeAddr(t))
	cfg := writeConfig(t, dir, listen, tokens, worldOpts{})
	var errb syncBuffer
	start := time.Now()
	err := run(context.Background(), []string{"server", "--config", cfg}, os.Getenv, strings.NewReader(""), &bytes.Buffer{}, &errb)
	if err == nil || !strings.Contains(err.Error(), "tls") || !strings.Contains(err.Error(), "insecure_http") || !strings.Contains(err.Error(), "mayfly.yaml:1") || exitCode(err) != 2 {
		t.Fatalf("server on %s without tls: %v (exit %d); want a config error naming tls and insecure_http", listen, err, exitCode(err))
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("the refusal took %s", time.Since(start))
	}

	// With insecure_http it starts, and says so.
	w := &world{t: t, dir: dir, addr: listen, tokens: tokens, stderr: &syncBuffer{}}
	w.cfg = writeConfig(t, dir, listen, tokens, worldOpts{extraYAML: "insecure_http: true\n"})
	ctx, cancel := context.WithCancel(context.Background())
	w.done = make(chan error, 1)
	go func() {
		w.done <- run(ctx, []string{"server", "--config", w.cfg}, os.Getenv, strings.NewReader(""), &bytes.Buffer{}, w.stderr)
	}()
	defer func() { cancel(); <-w.done }()
	w.addr = "127.0.0.1:" + port(listen)
	w.waitHealthy()
	if !strings.Contains(w.stderr.String(), "insecure_http is set") {
		t.Errorf("no warning at start with insecure_http:\n%s", w.stderr.String())
	}
}

// TestCLIRefusesTokenInClear: the CLI refuses, before any connection, to
// send a token over http:// to a host that is not loopback.
func TestCLIRefusesTokenInClear(t *testing.T) {
	for _, addr := range []string{"http://192.0.2.1:1", "http://mayfly.example.com", "http://0.0.0.0:8765"} {
		getenv := func(k string) string {
			return map[string]string{"MAYFLY_ADDR": addr, "MAYFLY_TOKEN": "secret-token"}[k]
		}
		var out, errb bytes.Buffer
		start := time.Now()
		err := run(context.Background(), []string{"whoami"}, getenv, strings.NewReader(""), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), "refusing to send your token in clear text") || !strings.Contains(err.Error(), "nothing was sent") || exitCode(err) != 2 {
			t.Errorf("MAYFLY_ADDR=%s: %v (exit %d); want the clear-text refusal (exit 2)", addr, err, exitCode(err))
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("MAYFLY_ADDR=%s: the refusal took %s: it must come before any dial", addr, d)
		}
	}
}

// TestDevTLS: `mayfly dev --tls` makes a CA and a certificate in its
// directory and its exports (MAYFLY_ADDR=https://…, MAYFLY_CA_CERT) reach it.
func TestDevTLS(t *testing.T) {
	requirePG(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	envFile := filepath.Join(dir, "env")
	stdout, _, stop := startDev(t, "--tls", "--listen", addr, "--dir", dir, "--env-file", envFile)
	defer stop()
	env := map[string]string{}
	f, err := os.Open(envFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		env[k] = v
	}
	if env["MAYFLY_ADDR"] != "https://"+addr || env["MAYFLY_CA_CERT"] != filepath.Join(dir, "ca.pem") {
		t.Fatalf("exports: %v", env)
	}
	if !strings.Contains(stdout.String(), "MAYFLY_CA_CERT") {
		t.Errorf("mayfly dev --tls does not print how to trust its CA:\n%s", stdout.String())
	}
	if fi, err := os.Stat(filepath.Join(dir, "tls-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tls-key.pem: %v, %v; want mode 0600", fi.Mode(), err)
	}
	env["MAYFLY_TOKEN"] = env["MAYFLY_TOKEN_ALICE"]
	var out bytes.Buffer
	err = run(context.Background(), []string{"whoami"}, func(k string) string { return env[k] }, strings.NewReader(""), &out, &bytes.Buffer{})
	if err != nil || !strings.Contains(out.String(), "alice") {
		t.Fatalf("whoami with the dev exports: %q, %v", out.String(), err)
	}
}

// startDev runs `mayfly dev ARGS` in-process against the test PostgreSQL
// until its banner is out; stop (safe to call twice) stops it and waits.
func startDev(t *testing.T, args ...string) (stdout *notifyWriter, stderr *syncBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stdout, stderr = &notifyWriter{ready: make(chan struct{})}, &syncBuffer{}
	go func() {
		done <- run(ctx, append([]string{"dev"}, args...), func(k string) string {
			if k == "MAYFLY_DEV_PG_DSN" {
				return testenv.PostgresDSN()
			}
			return ""
		}, strings.NewReader(""), stdout, stderr)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	select {
	case <-stdout.ready:
	case err := <-done:
		t.Fatalf("mayfly dev %s exited: %v\n%s", strings.Join(args, " "), err, stderr.String())
	case <-time.After(20 * time.Second):
		stop()
		t.Fatalf("mayfly dev %s did not start\n%s", strings.Join(args, " "), stderr.String())
	}
	return stdout, stderr, stop
}

// notifyWriter closes ready when what is written includes "Try:" (the
// end of mayfly dev's banner).
type notifyWriter struct {
	syncBuffer
	ready chan struct{}
	once  bool
}

func (n *notifyWriter) Write(p []byte) (int, error) {
	k, err := n.syncBuffer.Write(p)
	if !n.once && strings.Contains(n.syncBuffer.String(), "Try:") {
		n.once = true
		close(n.ready)
	}
	return k, err
}

// TestDevStopEndsItsLeases: stopping `mayfly dev` ends its live leases and
// drops their roles on the real PostgreSQL, saying so.
func TestDevStopEndsItsLeases(t *testing.T) {
	requirePG(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	envFile := filepath.Join(dir, "env")
	_, errb, stop := startDev(t, "--listen", addr, "--dir", dir, "--env-file", envFile)
	defer stop()
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(strings.TrimPrefix(l, "export "), "=")
		env[k] = v
	}
	env["MAYFLY_TOKEN"] = env["MAYFLY_TOKEN_ALICE"]
	var out bytes.Buffer
	err = run(context.Background(), []string{"request", "local-pg/readonly", "--for", "1h", "--reason", "INC-1 dev stop", "--creds", "-o", "json"},
		func(k string) string { return env[k] }, strings.NewReader(""), &out, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("request --creds on the dev broker: %v\n%s", err, out.String())
	}
	var r struct {
		Credentials credsOut `json:"credentials"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Credentials.Username == "" {
		t.Fatalf("request output %q: %v", out.String(), err)
	}
	if !roleExists(t, r.Credentials.Username) {
		t.Fatalf("role %s not created; the test proves nothing", r.Credentials.Username)
	}
	stop()
	if roleExists(t, r.Credentials.Username) {
		t.Errorf("role %s still exists after mayfly dev stopped", r.Credentials.Username)
	}
	if !strings.Contains(errb.String(), "ended 1 live lease(s)") {
		t.Errorf("mayfly dev did not say it ended the lease:\n%s", errb.String())
	}
}
