package script

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/connectortest"
)

// htpasswdBin is the example htpasswd target, built once by TestMain.
var htpasswdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mayfly-script-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	htpasswdBin = filepath.Join(dir, "htpasswd-target")
	goBin, err := exec.LookPath("go") // go test puts its own go on PATH
	if err != nil {
		fmt.Fprintf(os.Stderr, "build example: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	build := exec.Command(goBin, "build", "-o", htpasswdBin, "../../../examples/script-htpasswd")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build example: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func htpasswdTarget(file string) mayfly.Target {
	cmd := []string{htpasswdBin, "-file", file}
	return mayfly.Target{
		Name:       "web",
		Kind:       mayfly.KindScript,
		Commands:   mayfly.ScriptCommands{Provision: cmd, Revoke: cmd, Accounts: cmd, Check: cmd},
		PublicHost: "web.example.com",
		PublicPort: 443,
	}
}

// htSession authenticates every action against the htpasswd file, as a web
// server doing basic authentication does on every request.
type htSession struct {
	file, user, pass string
}

// htAuth checks user's password with Apache's own `htpasswd -v` (as the
// web server would) and returns the permissions Mayfly recorded in the
// account's comment line.
func htAuth(file, user, pass string) ([]string, error) {
	bin, err := exec.LookPath("htpasswd")
	if err != nil {
		return nil, fmt.Errorf("htpasswd (apache2-utils, scripts/services.sh installs it): %w", err)
	}
	if out, err := exec.Command(bin, "-v", "-b", file, user, pass).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("401: %s", strings.TrimSpace(string(out)))
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(l, "# mayfly "+user+" ")
		if !ok {
			continue
		}
		for f := range strings.FieldsSeq(rest) {
			if p, ok := strings.CutPrefix(f, "perms="); ok {
				return strings.Split(p, ","), nil
			}
		}
	}
	return nil, nil
}

func (s *htSession) can(perm string) error {
	perms, err := htAuth(s.file, s.user, s.pass)
	if err != nil {
		return err
	}
	if !slices.Contains(perms, perm) {
		return fmt.Errorf("403: %s not permitted", perm)
	}
	return nil
}

func (s *htSession) Allowed(context.Context) error   { return s.can("read") }
func (s *htSession) Forbidden(context.Context) error { return s.can("write") }
func (s *htSession) Ping(context.Context) error {
	_, err := htAuth(s.file, s.user, s.pass)
	return err
}
func (s *htSession) Close() error { return nil }

func TestConformanceHtpasswd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "htpasswd")
	marked := func(secret string) *Connector {
		tg := htpasswdTarget(file)
		tg.InstanceKeyEnv = "MAYFLY_INSTANCE_KEY"
		c, err := New(tg, func(string) string { return secret })
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		return c
	}
	c := marked("this installation's key")
	prefix := "mf_sct_"
	pwned := prefix + "pwned"
	connectortest.Run(t, connectortest.Harness{
		Connector: c,
		Marks:     true,
		Other:     marked("another installation's key"),
		CreateByHand: func(t *testing.T, name string) {
			f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := fmt.Fprintf(f, "%s:$2a$04$byhandbyhandbyhandbyhaO:perms=read\n", name); err != nil {
				t.Fatal(err)
			}
		},
		Prefix:     prefix,
		MaxNameLen: MaxNameLen,
		Grant:      mayfly.Grant{Name: "reader", Params: map[string]string{"permissions": "read"}},
		Login: func(ctx context.Context, cred mayfly.Credential) (connectortest.Session, error) {
			if cred.Host != "web.example.com" || cred.Port != 443 {
				return nil, fmt.Errorf("credential points at %s:%d", cred.Host, cred.Port)
			}
			s := &htSession{file: file, user: cred.Username, pass: cred.Password}
			if err := s.Ping(ctx); err != nil {
				return nil, err
			}
			return s, nil
		},
		Tamper: func(cred mayfly.Credential) mayfly.Credential {
			cred.Password = "wrong" + cred.Password
			return cred
		},
		HostileGrants: []mayfly.Grant{
			{Params: map[string]string{"permissions": "read\n" + pwned + ":$2a$04$x:perms=admin"}},
			{Params: map[string]string{"permissions": "read:admin"}},
			{Params: map[string]string{"permissions": "$(touch /tmp/pwned)"}},
			{Params: map[string]string{"bad key": "x"}},
			{Params: map[string]string{"permissions": "read"}, ACL: "+@all"},
		},
		TerminatesSessions: true,
	})
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "pwned") {
		t.Errorf("htpasswd file holds a hostile line:\n%s", b)
	}
}

// shTarget returns a target whose every command is sh -c script.
func shTarget(script string) mayfly.Target {
	cmd := []string{"sh", "-c", script}
	return mayfly.Target{Name: "sh", Commands: mayfly.ScriptCommands{Provision: cmd, Revoke: cmd, Accounts: cmd, Check: cmd}}
}

func newSh(t *testing.T, script string, mod func(*mayfly.Target)) *Connector {
	t.Helper()
	tg := shTarget(script)
	if mod != nil {
		mod(&tg)
	}
	c, err := New(tg, nil)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return c
}

func provisionReq() mayfly.ProvisionRequest {
	return mayfly.ProvisionRequest{
		LeaseID:   "lse_1",
		Username:  "mf_alice_k3j9x2",
		Grant:     mayfly.Grant{Name: "operator", Params: map[string]string{"level": "2"}},
		ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestRequestDocument(t *testing.T) {
	out := filepath.Join(t.TempDir(), "req.json")
	c := newSh(t, `cat > "$0"`, func(tg *mayfly.Target) { tg.Commands.Provision = []string{"sh", "-c", `cat > "$0"`, out} })
	res, err := c.Provision(context.Background(), provisionReq())
	if err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("stdin was not JSON: %v\n%s", err, b)
	}
	want := map[string]any{
		"operation":  "provision",
		"target":     "sh",
		"lease_id":   "lse_1",
		"username":   "mf_alice_k3j9x2",
		"password":   res.Credential.Password,
		"grant":      "operator",
		"params":     map[string]any{"level": "2"},
		"expires_at": "2030-01-02T03:04:05Z",
	}
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) {
			t.Errorf("request[%q] = %v; want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("request has fields %v; want exactly %v", got, want)
	}
	if n := len(res.Credential.Password); n != 43 {
		t.Errorf("password length = %d; want 43 (32 bytes, base64url)", n)
	}
}

func TestProvisionOverrides(t *testing.T) {
	c := newSh(t, `cat >/dev/null; printf '{"username":"admin7","password":"devicepw","host":"plc1","port":502,"extra":true}'`, nil)
	res, err := c.Provision(context.Background(), provisionReq())
	if err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	got := res.Credential
	want := mayfly.Credential{Username: "admin7", Password: "devicepw", Host: "plc1", Port: 502}
	if got != want {
		t.Errorf("Provision() credential = %+v; want %+v", got, want)
	}
}

func TestNonZeroExitScrubsSecret(t *testing.T) {
	c := newSh(t, `cat >&2; echo; echo "device said no" >&2; exit 3`, nil)
	_, err := c.Provision(context.Background(), provisionReq())
	if err == nil {
		t.Fatal("Provision() succeeded; want error")
	}
	msg := err.Error()
	for _, want := range []string{`"password":"[REDACTED]"`, "device said no", "exit status 3"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	// The password is the only 43-character base64url run the request has.
	var req Request
	start := strings.Index(msg, "{")
	end := strings.LastIndex(msg, "}")
	if start >= 0 && end > start && json.Unmarshal([]byte(msg[start:end+1]), &req) == nil && req.Password != "[REDACTED]" {
		t.Errorf("error reveals the password: %q", msg)
	}
}

func TestStderrBounded(t *testing.T) {
	c := newSh(t, `cat >/dev/null; head -c 100000 /dev/zero | tr '\0' x >&2; exit 1`, nil)
	err := c.Revoke(context.Background(), mayfly.RevokeRequest{Username: "mf_x"})
	if err == nil {
		t.Fatal("Revoke() succeeded; want error")
	}
	if n := len(err.Error()); n > maxStderr+200 {
		t.Errorf("error is %d bytes; want at most about %d", n, maxStderr)
	}
	if !strings.Contains(err.Error(), "truncated") {
		t.Errorf("error %q does not say stderr was truncated", err.Error()[:100])
	}
}

func TestEnvironmentCarriesNoSecrets(t *testing.T) {
	t.Setenv("MAYFLY_TEST_ADMIN_SECRET", "s3cr3t-in-env")
	c := newSh(t, `cat >/dev/null; env >&2; exit 1`, nil)
	err := c.Revoke(context.Background(), mayfly.RevokeRequest{Username: "mf_x"})
	if err == nil {
		t.Fatal("Revoke() succeeded; want error")
	}
	if strings.Contains(err.Error(), "s3cr3t-in-env") {
		t.Errorf("the command saw the broker's environment: %q", err)
	}
	if !strings.Contains(err.Error(), "PATH=") {
		t.Errorf("the command has no PATH: %q", err)
	}
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	c := newSh(t, `sleep 30 & echo $! > "$0"; wait`, func(tg *mayfly.Target) {
		tg.Commands.Check = []string{"sh", "-c", `sleep 30 & echo $! > "$0"; wait`, pidFile}
		tg.Timeout = 300 * time.Millisecond
	})
	start := time.Now()
	err := c.Check(context.Background())
	elapsed := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Fatalf("Check() = %v; want a timeout error", err)
	}
	if mayfly.ErrorCode(err) != mayfly.EUNAVAILABLE {
		t.Errorf("Check() code = %q; want %q", mayfly.ErrorCode(err), mayfly.EUNAVAILABLE)
	}
	if elapsed > 1500*time.Millisecond {
		t.Errorf("Check() returned after %v; want soon after the 300ms timeout", elapsed)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("background child %d of the timed-out command is still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie awaiting its reaper is dead).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func TestMalformedOutput(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		script string
		call   func(c *Connector) error
		want   string
	}{
		{"accounts not json", `cat >/dev/null; echo not-json`, func(c *Connector) error { _, err := c.Accounts(ctx, mayfly.AccountsRequest{}); return err }, "malformed"},
		{"accounts object", `cat >/dev/null; echo '{"name":"x"}'`, func(c *Connector) error { _, err := c.Accounts(ctx, mayfly.AccountsRequest{}); return err }, "malformed"},
		{"accounts empty", `cat >/dev/null`, func(c *Connector) error { _, err := c.Accounts(ctx, mayfly.AccountsRequest{}); return err }, "printed nothing"},
		{"accounts null", `cat >/dev/null; echo null`, func(c *Connector) error { _, err := c.Accounts(ctx, mayfly.AccountsRequest{}); return err }, "null"},
		{"provision not json", `cat >/dev/null; echo '{"password": '`, func(c *Connector) error { _, err := c.Provision(ctx, provisionReq()); return err }, "malformed"},
		{"provision bad port", `cat >/dev/null; echo '{"port": 70000}'`, func(c *Connector) error { _, err := c.Provision(ctx, provisionReq()); return err }, "invalid port"},
		{"missing executable", ``, func(c *Connector) error {
			c.cmds.Revoke = []string{"/nonexistent/mayfly-script"}
			return c.Revoke(ctx, mayfly.RevokeRequest{Username: "mf_x"})
		}, "could not run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(newSh(t, tt.script, nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v; want one containing %q", err, tt.want)
			}
		})
	}
}

func TestAccountsOutput(t *testing.T) {
	c := newSh(t, `cat >/dev/null; echo '[{"name":"mf_a","last_activity":"2030-01-02T03:04:05Z","sessions":2,"can_login":true,"privileges":["read"]},{"name":"admin","superuser":true,"can_login":true}]'`, nil)
	got, err := c.Accounts(context.Background(), mayfly.AccountsRequest{Prefix: "mf_"})
	if err != nil {
		t.Fatalf("Accounts() = %v", err)
	}
	want := []mayfly.Account{{Name: "mf_a", LastActivity: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Sessions: 2, CanLogin: true, Privileges: []string{"read"}}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Accounts(mf_) = %+v; want %+v", got, want)
	}
	all, err := c.Accounts(context.Background(), mayfly.AccountsRequest{})
	if err != nil || len(all) != 2 || !all[1].Superuser {
		t.Errorf("Accounts(\"\") = %+v, %v; want both accounts, admin a superuser", all, err)
	}
}

func TestNewValidation(t *testing.T) {
	ok := []string{"true"}
	base := func() mayfly.Target {
		return mayfly.Target{Commands: mayfly.ScriptCommands{Provision: ok, Revoke: ok, Accounts: ok}}
	}
	tests := []struct {
		name string
		mod  func(*mayfly.Target)
		want string
	}{
		{"ok without check", func(*mayfly.Target) {}, ""},
		{"no provision", func(t *mayfly.Target) { t.Commands.Provision = nil }, "commands.provision is required"},
		{"no revoke", func(t *mayfly.Target) { t.Commands.Revoke = nil }, "commands.revoke is required"},
		{"no accounts", func(t *mayfly.Target) { t.Commands.Accounts = nil }, "commands.accounts is required"},
		{"empty executable", func(t *mayfly.Target) { t.Commands.Check = []string{""} }, "executable is empty"},
		{"negative timeout", func(t *mayfly.Target) { t.Timeout = -time.Second }, "timeout"},
		{"dsn", func(t *mayfly.Target) { t.DSN = "x" }, "dsn is not used"},
		{"admin password", func(t *mayfly.Target) { t.AdminPassword = "x" }, "admin_password is not used"},
		{"grant acl", func(t *mayfly.Target) { t.Grants = map[string]mayfly.Grant{"g": {ACL: "+@all"}} }, "acl is not used"},
		{"grant param key", func(t *mayfly.Target) {
			t.Grants = map[string]mayfly.Grant{"g": {Params: map[string]string{"a\nb": "x"}}}
		}, "param name"},
		{"wrong kind", func(t *mayfly.Target) { t.Kind = mayfly.KindMySQL }, "is not"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := base()
			tt.mod(&tg)
			_, err := New(tg, nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New() = %v; want success", err)
				}
				return
			}
			if err == nil || mayfly.ErrorCode(err) != mayfly.EINVALID || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() = %v; want %s error containing %q", err, mayfly.EINVALID, tt.want)
			}
		})
	}
	c, err := New(base(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.timeout != DefaultTimeout {
		t.Errorf("default timeout = %v; want %v", c.timeout, DefaultTimeout)
	}
	if err := c.Check(context.Background()); err != nil {
		t.Errorf("Check() without a check command = %v; want nil", err)
	}
}

func TestHtpasswdCheck(t *testing.T) {
	c, err := New(htpasswdTarget(filepath.Join(t.TempDir(), "htpasswd")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(context.Background()); err != nil {
		t.Errorf("Check() = %v", err)
	}
	c2, err := New(htpasswdTarget("/nonexistent/dir/htpasswd"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Check(context.Background()); mayfly.ErrorCode(err) != mayfly.EUNAVAILABLE {
		t.Errorf("Check() on a missing directory = %v; want %s", err, mayfly.EUNAVAILABLE)
	}
}

// TestCheckFindsEveryCommand: a target whose command is missing, or is not
// executable, is unhealthy at once, naming the command; relative to PATH
// works.
func TestCheckFindsEveryCommand(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, revoke, want string
	}{
		{"missing", filepath.Join(dir, "nowhere"), "commands.revoke: " + filepath.Join(dir, "nowhere") + " is missing or not executable"},
		{"not executable", plain, "commands.revoke: " + plain + " is missing or not executable"},
		{"not on PATH", "mayfly-no-such-command", "commands.revoke: mayfly-no-such-command is missing"},
		{"on PATH", "true", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(mayfly.Target{Name: "sw", Commands: mayfly.ScriptCommands{Provision: []string{"true"}, Revoke: []string{tt.revoke}, Accounts: []string{"true"}}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Check(context.Background())
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check() = %v; want nil", err)
				}
				return
			}
			if mayfly.ErrorCode(err) != mayfly.EUNAVAILABLE || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check() = %v; want %s naming %q", err, mayfly.EUNAVAILABLE, tt.want)
			}
		})
	}
}
