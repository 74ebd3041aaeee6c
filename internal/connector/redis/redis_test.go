package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/connectortest"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

func testPrefix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "mf_rdt_" + hex.EncodeToString(b) + "_"
}

func testGrant() mayfly.Grant {
	return mayfly.Grant{Name: "read", ACL: "~mf_rdt:* +@read +ping"}
}

// admin returns a client for the test server, or stops the test when the
// server is missing.
func admin(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), DisableIdentity: true})
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		testenv.Unavailable(t, "Redis", err)
	}
	return rdb
}

func newTestConnector(t *testing.T) *Connector {
	t.Helper()
	admin(t)
	c, err := New(mayfly.Target{
		Name:    "redis-test",
		Kind:    mayfly.KindRedis,
		Address: testenv.RedisAddr(),
		Grants:  map[string]mayfly.Grant{"read": testGrant()},
	}, nil)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type session struct {
	rdb  *redis.Client
	conn *redis.Conn
}

func isNoPerm(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOPERM")
}

func (s *session) Allowed(ctx context.Context) error {
	if err := s.conn.Get(ctx, "mf_rdt:x").Err(); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	return nil
}

// Forbidden tries a write and a read outside the key pattern; it returns an
// error only when the server refused both for lack of permission.
func (s *session) Forbidden(ctx context.Context) error {
	if err := s.conn.Set(ctx, "mf_rdt:x", "1", 0).Err(); !isNoPerm(err) {
		return nil
	}
	err := s.conn.Get(ctx, "other:key").Err()
	if !isNoPerm(err) {
		return nil
	}
	return err
}

func (s *session) Ping(ctx context.Context) error { return s.conn.Ping(ctx).Err() }

func (s *session) Close() error {
	s.conn.Close()
	return s.rdb.Close()
}

func login(ctx context.Context, cred mayfly.Credential) (connectortest.Session, error) {
	rdb := redis.NewClient(&redis.Options{
		Addr:            net.JoinHostPort(cred.Host, strconv.Itoa(cred.Port)),
		Username:        cred.Username,
		Password:        cred.Password,
		MaxRetries:      -1,
		PoolSize:        1,
		DisableIdentity: true,
	})
	conn := rdb.Conn()
	if err := conn.Ping(ctx).Err(); err != nil {
		conn.Close()
		rdb.Close()
		return nil, err
	}
	return &session{rdb: rdb, conn: conn}, nil
}

func TestConformance(t *testing.T) {
	c := newMarkedConnector(t, "this installation's key")
	prefix := testPrefix()
	pwned := prefix + "pwned"
	connectortest.Run(t, connectortest.Harness{
		Connector:    c,
		Marks:        true,
		Other:        newMarkedConnector(t, "another installation's key"),
		CreateByHand: createUserByHand,
		Prefix:       prefix,
		MaxNameLen:   MaxNameLen,
		Grant:        testGrant(),
		Login:        login,
		Tamper: func(cred mayfly.Credential) mayfly.Credential {
			cred.Password = "wrong" + cred.Password
			return cred
		},
		HostileGrants: []mayfly.Grant{
			{ACL: "~* +@all >pw"},
			{ACL: "on nopass"},
			{ACL: "+@all\r\nACL SETUSER " + pwned + " on nopass"},
			{ACL: "~* +@all\nACL SETUSER " + pwned + " on nopass"},
			{ACL: "~mf_rdt:* +@read #" + strings.Repeat("a", 64)},
			{ACL: "~mf_rdt:* reset"},
			{ACL: "~mf_rdt:* (~* +@all)"},
			{ACL: "~mf_rdt:* <pw"},
			{ACL: "~mf_rdt:* resetpass"},
			{ACL: "~mf_rdt:* NOPASS"},
			{ACL: "~mf_rdt:* +get\x00 nopass"},
			{ACL: "~mf_rdt:* +@read", Statements: []string{"x"}},
		},
		TerminatesSessions: true,
		ReportsActivity:    true,
	})
}

func TestParseACL(t *testing.T) {
	tests := []struct {
		acl  string
		want []string // nil: rejected
	}{
		{"~app:* +@read", []string{"~app:*", "+@read"}},
		{"  ~app:*   +get  ", []string{"~app:*", "+get"}},
		{"%R~app:* %W~log:* %RW~tmp:* &chan:* -@dangerous +client|kill +select|0", []string{"%R~app:*", "%W~log:*", "%RW~tmp:*", "&chan:*", "-@dangerous", "+client|kill", "+select|0"}},
		{"allkeys allchannels resetkeys resetchannels allcommands nocommands", []string{"allkeys", "allchannels", "resetkeys", "resetchannels", "allcommands", "nocommands"}},
		{"AllKeys +GET", []string{"AllKeys", "+GET"}},
		{"", nil},
		{"   ", nil},
		{"on", nil},
		{"off", nil},
		{">pw", nil},
		{"<pw", nil},
		{"#abc", nil},
		{"!abc", nil},
		{"nopass", nil},
		{"reset", nil},
		{"resetpass", nil},
		{"clearselectors", nil},
		{"(~* +@all)", nil},
		{"~(x", nil},
		{"~", nil},
		{"&", nil},
		{"%X~a", nil},
		{"%R", nil},
		{"+", nil},
		{"+@", nil},
		{"+1get", nil},
		{"+get|", nil},
		{"+get|a|b", nil},
		{"+get;flushall", nil},
		{"~a\tb", nil},
		{"~a\rb", nil},
		{"+@all\r\nACL", nil},
		{"~é", nil},
	}
	for _, tt := range tests {
		got, err := ParseACL(tt.acl)
		if tt.want == nil {
			if err == nil {
				t.Errorf("ParseACL(%q) = %q; want error", tt.acl, got)
			} else if mayfly.ErrorCode(err) != mayfly.EINVALID {
				t.Errorf("ParseACL(%q) code = %q; want %q", tt.acl, mayfly.ErrorCode(err), mayfly.EINVALID)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseACL(%q) = %q, %v; want %q", tt.acl, got, err, tt.want)
		}
	}
}

func TestNewValidation(t *testing.T) {
	env := map[string]string{"REDIS_PW": "pw"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name string
		tg   mayfly.Target
		want string // substring of the error; "" for success
	}{
		{"ok", mayfly.Target{Address: "127.0.0.1:6379"}, ""},
		{"default port", mayfly.Target{Address: "cache.internal"}, ""},
		{"admin env", mayfly.Target{Address: "h:1", AdminUser: "mayfly", AdminPasswordEnv: "REDIS_PW"}, ""},
		{"no address", mayfly.Target{}, "address is required"},
		{"bad port", mayfly.Target{Address: "h:99999"}, "invalid port"},
		{"both passwords", mayfly.Target{Address: "h", AdminPassword: "a", AdminPasswordEnv: "REDIS_PW"}, "not both"},
		{"empty env", mayfly.Target{Address: "h", AdminPasswordEnv: "NOPE"}, "is empty"},
		{"user without password", mayfly.Target{Address: "h", AdminUser: "mayfly"}, "admin_user needs"},
		{"dsn", mayfly.Target{Address: "h", DSN: "x"}, "dsn is not used"},
		{"connection limit", mayfly.Target{Address: "h", ConnectionLimit: 3}, "connection_limit is not used"},
		{"wrong kind", mayfly.Target{Kind: mayfly.KindMySQL, Address: "h"}, "is not"},
		{"bad grant", mayfly.Target{Address: "h", Grants: map[string]mayfly.Grant{"g": {ACL: "on nopass"}}}, `grant "g"`},
		{"grant statements", mayfly.Target{Address: "h", Grants: map[string]mayfly.Grant{"g": {ACL: "+get", Statements: []string{"x"}}}}, "statements is not used"},
		{"bad prefix", mayfly.Target{Address: "h", Prefix: "mf-"}, "prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.tg, getenv)
			if c != nil {
				defer c.Close()
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New() = %v; want success", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New() succeeded; want error containing %q", tt.want)
			}
			if mayfly.ErrorCode(err) != mayfly.EINVALID || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() = %v (%s); want %s error containing %q", err, mayfly.ErrorCode(err), mayfly.EINVALID, tt.want)
			}
		})
	}
}

func TestPublicAddress(t *testing.T) {
	tests := []struct {
		addr, host string
		port       int
		wantHost   string
		wantPort   int
	}{
		{"cache.internal", "", 0, "cache.internal", 6379},
		{"10.0.0.2:6380", "", 0, "10.0.0.2", 6380},
		{"10.0.0.2:6380", "redis.example.com", 16380, "redis.example.com", 16380},
		{"[::1]:6379", "", 0, "::1", 6379},
		{"::1", "", 0, "::1", 6379},
	}
	for _, tt := range tests {
		c, err := New(mayfly.Target{Address: tt.addr, PublicHost: tt.host, PublicPort: tt.port}, nil)
		if err != nil {
			t.Fatalf("New(%q) = %v", tt.addr, err)
		}
		c.Close()
		if c.host != tt.wantHost || c.port != tt.wantPort {
			t.Errorf("New(%q) address = %s:%d; want %s:%d", tt.addr, c.host, c.port, tt.wantHost, tt.wantPort)
		}
	}
}

func TestParseACLUser(t *testing.T) {
	tests := []struct {
		line                string
		canLogin, superuser bool
		privileges          string
	}{
		{"user default on nopass ~* &* +@all", true, true, "on nopass ~* &* +@all"},
		{"user mf_a on #" + strings.Repeat("ab", 32) + " ~app:* resetchannels -@all +@read", true, false, "on ~app:* resetchannels -@all +@read"},
		{"user mf_b off #" + strings.Repeat("ab", 32) + " ~* +@all", false, true, "off ~* +@all"},
		{"user mf_c on resetchannels -@all (~* +@all)", false, false, "on resetchannels -@all (~* +@all)"},
	}
	for _, tt := range tests {
		a, _, ok := parseACLUser(tt.line)
		if !ok {
			t.Fatalf("parseACLUser(%q) not ok", tt.line)
		}
		if a.CanLogin != tt.canLogin || a.Superuser != tt.superuser || strings.Join(a.Privileges, "") != tt.privileges {
			t.Errorf("parseACLUser(%q) = %+v; want CanLogin=%v Superuser=%v Privileges=%q", tt.line, a, tt.canLogin, tt.superuser, tt.privileges)
		}
	}
}

func TestParseClientList(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	list := "id=3 addr=127.0.0.1:1 name= age=10 idle=7 flags=N db=0 cmd=get user=mf_a resp=3\n" +
		"id=4 addr=127.0.0.1:2 name= age=10 idle=2 flags=N db=0 cmd=ping user=mf_a resp=3\n" +
		"id=5 addr=127.0.0.1:3 name= age=10 idle=0 flags=N db=0 cmd=client|list user=default resp=3\n"
	got := parseClientList(list, now)
	if s := got["mf_a"]; s.n != 2 || !s.last.Equal(now.Add(-2*time.Second)) {
		t.Errorf("parseClientList()[mf_a] = %+v; want 2 sessions, last %v", s, now.Add(-2*time.Second))
	}
	if s := got["default"]; s.n != 1 || !s.last.Equal(now) {
		t.Errorf("parseClientList()[default] = %+v; want 1 session, last %v", s, now)
	}
}

func TestAccountsInventory(t *testing.T) {
	c := newTestConnector(t)
	ctx := context.Background()
	name := connectortest.Name(testPrefix(), MaxNameLen)
	res, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{Username: name}) })
	if got, want := len(res.Credential.Password), 43; got != want {
		t.Errorf("password length = %d; want %d (32 bytes, base64url)", got, want)
	}
	accts, err := c.Accounts(ctx, mayfly.AccountsRequest{})
	if err != nil {
		t.Fatalf("Accounts(\"\") = %v", err)
	}
	i := slices.IndexFunc(accts, func(a mayfly.Account) bool { return a.Name == name })
	if i < 0 {
		t.Fatalf("Accounts(\"\") lacks %q", name)
	}
	a := accts[i]
	if !a.CanLogin || a.Superuser || len(a.Privileges) != 1 || !strings.Contains(a.Privileges[0], "~mf_rdt:*") {
		t.Errorf("account = %+v; want CanLogin, not Superuser, rules with ~mf_rdt:*", a)
	}
	if strings.Contains(a.Privileges[0], "#") || strings.Contains(a.Privileges[0], res.Credential.Password) {
		t.Errorf("privileges %q reveal the password or its hash", a.Privileges[0])
	}
	if !slices.ContainsFunc(accts, func(a mayfly.Account) bool { return a.Name == "default" }) {
		t.Errorf("Accounts(\"\") lacks the default user")
	}
}

func TestRevokeRefusesUnmanaged(t *testing.T) {
	c := newTestConnector(t)
	for _, n := range []string{"default", "", "mf_X"} {
		err := c.Revoke(context.Background(), mayfly.RevokeRequest{Username: n})
		if mayfly.ErrorCode(err) != mayfly.EINVALID {
			t.Errorf("Revoke(%q) = %v; want %s error", n, err, mayfly.EINVALID)
		}
	}
}

func TestReprovisionReplacesPassword(t *testing.T) {
	c := newTestConnector(t)
	ctx := context.Background()
	name := connectortest.Name(testPrefix(), MaxNameLen)
	req := mayfly.ProvisionRequest{Username: name, Grant: testGrant(), ExpiresAt: time.Now().Add(time.Hour)}
	first, err := c.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Revoke(context.Background(), mayfly.RevokeRequest{Username: name}) })
	second, err := c.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := login(ctx, first.Credential); err == nil {
		s.Close()
		t.Errorf("login with the replaced password succeeded; want refusal")
	}
	s, err := login(ctx, second.Credential)
	if err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	s.Close()
}

func TestCheck(t *testing.T) {
	c := newTestConnector(t)
	if err := c.Check(context.Background()); err != nil {
		t.Errorf("Check() = %v", err)
	}
	bad, err := New(mayfly.Target{Address: testenv.RedisAddr(), AdminUser: "nobody", AdminPassword: "hunter2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	err = bad.Check(context.Background())
	if mayfly.ErrorCode(err) != mayfly.EUNAVAILABLE {
		t.Errorf("Check() with a wrong admin password = %v; want %s", err, mayfly.EUNAVAILABLE)
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Check() = %q reveals the password", err)
	}
}

// TestACLFilePersisted runs a private redis-server that keeps its users in
// an ACL file and checks that Provision and Revoke save it.
func TestACLFilePersisted(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Unavailable(t, "redis-server binary", err)
	}
	dir := t.TempDir()
	aclFile := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(aclFile, []byte("user default on nopass ~* &* +@all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--aclfile", aclFile,
		"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no")
	if err := srv.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c, err := New(mayfly.Target{Address: addr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for deadline := time.Now().Add(5 * time.Second); c.Check(ctx) != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("private redis-server on %s did not start", addr)
		}
	}
	name := connectortest.Name(testPrefix(), MaxNameLen)
	if _, err := c.Provision(ctx, mayfly.ProvisionRequest{Username: name, Grant: testGrant()}); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	b, err := os.ReadFile(aclFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "user "+name+" ") {
		t.Errorf("ACL file after Provision lacks %q:\n%s", name, b)
	}
	if err := c.Revoke(ctx, mayfly.RevokeRequest{Username: name}); err != nil {
		t.Fatalf("Revoke() = %v", err)
	}
	if b, err = os.ReadFile(aclFile); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), name) {
		t.Errorf("ACL file after Revoke still holds %q:\n%s", name, b)
	}
}
