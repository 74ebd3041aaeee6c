package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestEveryKindThroughTheBroker issues and ends a lease on MariaDB, Redis,
// a scripted target and an SSH CA through the API, checking the creds
// contract of each and that the account is gone afterwards.
func TestEveryKindThroughTheBroker(t *testing.T) {
	ctx := context.Background()
	mdb, rdb := requireMariaDB(t), requireRedis(t)
	dir := t.TempDir()
	ht := filepath.Join(dir, "htpasswd-target")
	if out, err := exec.Command("go", "build", "-o", ht, "../../examples/script-htpasswd").CombinedOutput(); err != nil {
		t.Fatalf("build example: %v\n%s", err, out)
	}
	t.Setenv("MAYFLY_SSH_CA_PASSPHRASE", "correct horse battery staple")
	htfile := filepath.Join(dir, "app.htpasswd")
	extra := `  - {name: kinds, groups: [eng], targets: [local-maria, local-redis, intranet, local-ssh], grants: ["*"], max_duration: 1h}
`
	targets := fmt.Sprintf(`  - {name: local-maria, kind: mysql, dsn: %q, prefix: mfk_,
     grants: {readonly: {statements: ["GRANT SELECT ON test.* TO {{name}}"]}}}
  - {name: local-redis, kind: redis, address: %q, prefix: mfk_,
     grants: {read: {acl: "~app:* +@read"}}}
  - name: intranet
    kind: script
    prefix: mfk_
    public_host: intranet.example.com
    public_port: 443
    commands:
      provision: [%[3]q, -file, %[4]q]
      revoke: [%[3]q, -file, %[4]q]
      accounts: [%[3]q, -file, %[4]q]
      check: [%[3]q, -file, %[4]q]
    grants: {reader: {params: {permissions: read}}}
  - {name: local-ssh, kind: ssh, address: "127.0.0.1:2222", prefix: mfk_, grants: {deploy: {principals: [deploy]}}}
`, testenv.MySQLDSN(), testenv.RedisAddr(), ht, htfile)
	w := startWorld(t, worldOpts{extraYAML: extra, targets: targets})

	issue := func(access string) credsOut2 {
		t.Helper()
		var r reqOut
		var c credsOut2
		w.ok("alice", &r, "request", access, "--for", "10m", "--reason", "INC-8", "-o", "json")
		w.ok("alice", &c, "creds", r.ID, "-o", "json")
		if c.LeaseID == "" || c.Username == "" || c.ExpiresAt.IsZero() {
			t.Fatalf("%s creds = %+v; want lease_id, username, expires_at", access, c)
		}
		c.requestID = r.ID
		return c
	}
	exists := func(query string, args ...any) bool {
		var n int
		if err := mdb.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	// MariaDB: the password logs in; a wrong one does not; gone after done.
	my := issue("local-maria/readonly")
	if my.Password == "" || my.Host == "" || my.Port == 0 {
		t.Errorf("mysql creds = %+v; want password, host, port", my)
	}
	login, _ := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s:%d)/test", my.Username, my.Password, my.Host, my.Port))
	if err := login.PingContext(ctx); err != nil {
		t.Errorf("mysql login with the issued password: %v", err)
	}
	login.Close()
	bad, _ := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s:%d)/test", my.Username, "wrong", my.Host, my.Port))
	if err := bad.PingContext(ctx); err == nil {
		t.Errorf("mysql login with a wrong password succeeded")
	}
	bad.Close()
	w.ok("alice", nil, "done", my.requestID)
	if exists("SELECT count(*) FROM mysql.user WHERE user = ?", my.Username) {
		t.Errorf("mysql user %s still exists", my.Username)
	}

	// Redis.
	rd := issue("local-redis/read")
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("%s:%d", rd.Host, rd.Port), Username: rd.Username, Password: rd.Password})
	if err := rc.Get(ctx, "app:x").Err(); err != nil && err != redis.Nil {
		t.Errorf("redis read with the issued credential: %v", err)
	}
	if err := rc.Set(ctx, "app:x", "1", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("redis write outside the grant: %v; want NOPERM", err)
	}
	rc.Close()
	w.ok("alice", nil, "done", rd.requestID)
	if u, _ := rdb.Do(ctx, "ACL", "GETUSER", rd.Username).Result(); u != nil {
		t.Errorf("redis user %s still exists", rd.Username)
	}

	// Scripted target.
	sc := issue("intranet/reader")
	if sc.Host != "intranet.example.com" || sc.Port != 443 || sc.Password == "" {
		t.Errorf("script creds = %+v", sc)
	}
	data, _ := os.ReadFile(htfile)
	if !strings.Contains(string(data), sc.Username+":") || strings.Contains(string(data), sc.Password) {
		t.Errorf("htpasswd file lacks the user, or holds the plain password")
	}
	w.ok("alice", nil, "done", sc.requestID)
	data, _ = os.ReadFile(htfile)
	if strings.Contains(string(data), sc.Username+":") {
		t.Errorf("script account %s still in the file", sc.Username)
	}

	// SSH: a certificate for the grant's principals, valid until the lease's expiry.
	ss := issue("local-ssh/deploy")
	if ss.Certificate == "" || ss.PrivateKey == "" {
		t.Fatalf("ssh creds lack certificate or private_key: %+v", ss)
	}
	pub, _, _, _, err := gossh.ParseAuthorizedKey([]byte(ss.Certificate))
	if err != nil {
		t.Fatalf("certificate does not parse: %v", err)
	}
	cert := pub.(*gossh.Certificate)
	if cert.KeyId != ss.LeaseID || len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != "deploy" {
		t.Errorf("cert key id %q principals %v; want %s, [deploy]", cert.KeyId, cert.ValidPrincipals, ss.LeaseID)
	}
	if until := time.Unix(int64(cert.ValidBefore), 0); until.Sub(ss.ExpiresAt).Abs() > time.Second {
		t.Errorf("cert valid until %s; want the lease's expiry %s", until, ss.ExpiresAt)
	}
	out := w.ok("carol", nil, "ssh", "ca")
	if !strings.HasPrefix(out, "ssh-ed25519 ") {
		t.Errorf("ssh ca = %q", out)
	}
	w.ok("alice", nil, "done", ss.requestID)
	krl := w.ok("carol", nil, "ssh", "revoked-keys", "--target", "local-ssh")
	if !strings.HasPrefix(krl, "SSHKRL") {
		t.Errorf("revoked keys is not a KRL: %q", krl[:min(len(krl), 16)])
	}
}

type credsOut2 struct {
	credsOut
	Certificate string `json:"certificate"`
	PrivateKey  string `json:"private_key"`
	requestID   string
}
