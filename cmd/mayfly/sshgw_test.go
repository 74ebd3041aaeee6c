package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/sshdtest"
)

// sshGatewayWorld is a broker with an SSH gateway in front of a private
// sshd that trusts the broker's CA.
type sshGatewayWorld struct {
	*world
	host *sshdtest.Host
}

func startSSHGatewayWorld(t *testing.T) *sshGatewayWorld {
	t.Helper()
	return startSSHGatewayWorldWith(t, "", "")
}

// startSSHGatewayWorldWith is startSSHGatewayWorld with more keys for the
// ssh-web policy (", idle_timeout: 3s") and more top-level YAML.
func startSSHGatewayWorldWith(t *testing.T, policyExtra, moreYAML string) *sshGatewayWorld {
	t.Helper()
	sshdtest.Need(t)
	t.Setenv("MAYFLY_SSH_CA_PASSPHRASE", "correct horse battery staple")
	dir := t.TempDir()
	krl := filepath.Join(dir, "revoked.krl")
	sshdtest.Write(t, krl, nil, 0o644)
	host := sshdtest.Start(t, nil, krl)
	targets := `  - name: web
    kind: ssh
    address: "` + host.Addr + `"
    host_key: "` + host.HostKey + `"
    krl_file: "` + krl + `"
    grants:
      shell: {principals: [` + sshdtest.Login + `], via: gateway}
      tunnel: {principals: [` + sshdtest.Login + `], via: gateway, extensions: [permit-pty, permit-port-forwarding]}
`
	extra := `  - {name: ssh-web, groups: [eng], targets: [web], grants: [shell, tunnel], max_duration: 1h` + policyExtra + `}
gateway:
  ssh: {listen: "127.0.0.1:0", host_key_file: ` + filepath.Join(dir, "gw_host_key") + `}
` + moreYAML
	w := startWorld(t, worldOpts{targets: targets, extraYAML: extra})
	// sshd trusts the CA the broker made at its start.
	host.Trust(t, strings.Split(strings.TrimSpace(w.ok("carol", nil, "ssh", "ca")), "\n"))
	return &sshGatewayWorld{world: w, host: host}
}

type sshCreds struct {
	LeaseID     string `json:"lease_id"`
	Username    string `json:"username"`
	Host        string `json:"host"`
	Port        int    `json:"port"`
	Certificate string `json:"certificate"`
	PrivateKey  string `json:"private_key"`
	HostKey     string `json:"host_key"`
}

// issue requests grant for alice and writes the credential's files.
func (g *sshGatewayWorld) issue(grant string) (sshCreds, []string) {
	t := g.t
	t.Helper()
	var r reqOut
	var c sshCreds
	g.ok("alice", &r, "request", "web/"+grant, "--for", "10m", "--reason", "INC-16", "-o", "json")
	g.ok("alice", &c, "creds", r.ID, "-o", "json")
	if c.PrivateKey == "" || c.Certificate == "" || c.HostKey == "" || c.Username != sshdtest.Login {
		t.Fatalf("creds = %+v; want key, certificate, the gateway's host key, login %s", c, sshdtest.Login)
	}
	dir := t.TempDir()
	key, cert, kh := filepath.Join(dir, "id"), filepath.Join(dir, "id-cert.pub"), filepath.Join(dir, "known_hosts")
	sshdtest.Write(t, key, []byte(c.PrivateKey), 0o600)
	sshdtest.Write(t, cert, []byte(c.Certificate+"\n"), 0o644)
	sshdtest.Write(t, kh, []byte("["+c.Host+"]:"+strconv.Itoa(c.Port)+" "+c.HostKey+"\n"), 0o644)
	opts := []string{"-F", "/dev/null", "-p", strconv.Itoa(c.Port), "-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
		"-i", key, "-o", "CertificateFile=" + cert}
	return c, opts
}

func (g *sshGatewayWorld) sessionsOf(lease string) []struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	EndedAt   string `json:"ended_at"`
	EndReason string `json:"end_reason"`
} {
	var ss []struct {
		ID        string `json:"id"`
		Kind      string `json:"kind"`
		EndedAt   string `json:"ended_at"`
		EndReason string `json:"end_reason"`
	}
	g.ok("alice", &ss, "sessions", "--lease", lease, "-o", "json")
	return ss
}

// endedSession waits for the one session of lease to end and returns it.
func (g *sshGatewayWorld) endedSession(lease string) (id, reason string) {
	g.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ss := g.sessionsOf(lease)
		if len(ss) == 1 && ss[0].EndedAt != "" {
			if ss[0].Kind != "ssh" {
				g.t.Errorf("session kind %q; want ssh", ss[0].Kind)
			}
			return ss[0].ID, ss[0].EndReason
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("lease %s: sessions %+v; want one ended", lease, ss)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSSHGatewayEndToEnd(t *testing.T) {
	g := startSSHGatewayWorld(t)
	c, opts := g.issue("shell")

	// An exec through the gateway, its exit status recorded.
	out, err := exec.Command("ssh", append(opts, c.Username+"@"+c.Host, "echo via-gateway; exit 3")...).CombinedOutput()
	if code := processExit(err); code != 3 || !strings.Contains(string(out), "via-gateway") {
		t.Fatalf("ssh exec: exit %d (%v), output %q; want exit 3 and the output", code, err, out)
	}
	id, reason := g.endedSession(c.LeaseID)
	if reason != "client disconnected" {
		t.Errorf("end reason %q", reason)
	}
	var show httpapi.SessionView
	g.ok("alice", &show, "sessions", "show", id, "-o", "json")
	if show.SSH == nil || len(show.SSH.Channels) != 1 {
		t.Fatalf("sessions show: ssh = %+v; want one channel", show.SSH)
	}
	ch := show.SSH.Channels[0]
	if ch.Type != "exec" || !strings.Contains(ch.Command, "echo via-gateway") || ch.Exit == nil || ch.Exit.Status == nil || *ch.Exit.Status != 3 {
		t.Errorf("channel = %+v (exit %+v); want the exec with status 3", ch, ch.Exit)
	}
	if verify := g.ok("alice", nil, "sessions", "verify", id); !strings.Contains(verify, "intact") {
		t.Errorf("sessions verify: %s", verify)
	}
	// The recording, as a player fetches it: the owner may, another user
	// may not.
	get := func(user string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", "http://"+g.addr+"/v1/sessions/"+id+"/cast", nil)
		req.Header.Set("Authorization", "Bearer "+g.tokens[user])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := get("alice")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-asciicast" || !strings.Contains(string(body), "via-gateway") {
		t.Errorf("GET cast as the owner: %s %s %q", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	var hdr map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(string(body), "\n", 2)[0]), &hdr); err != nil || hdr["version"] != float64(2) {
		t.Errorf("cast header %q: %v", strings.SplitN(string(body), "\n", 2)[0], err)
	}
	if resp, _ := get("bob"); resp.StatusCode != 404 {
		t.Errorf("GET cast as another user: %s; want 404", resp.Status)
	}

	// The user's certificate does not log in to the host directly.
	direct := append([]string{"-F", "/dev/null", "-p", g.host.Port(), "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"}, opts[8:]...)
	if out, err := exec.Command("ssh", append(direct, c.Username+"@127.0.0.1", "echo direct")...).CombinedOutput(); err == nil || strings.Contains(string(out), "direct\n") {
		t.Fatalf("the lease's certificate logged in to the host directly: %v %s", err, out)
	}

	// Port forwarding: refused for shell, allowed for tunnel.
	if out, err := exec.Command("ssh", append(opts, "-W", g.host.Addr, c.Username+"@"+c.Host)...).CombinedOutput(); err == nil || strings.HasPrefix(string(out), "SSH-") {
		t.Errorf("port forwarding without the grant's permission: %q", out)
	}
	tc, topts := g.issue("tunnel")
	fw := exec.Command("ssh", append(topts, "-W", g.host.Addr, tc.Username+"@"+tc.Host)...)
	stdout, _ := fw.StdoutPipe()
	stdin, _ := fw.StdinPipe()
	if err := fw.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make([]byte, 4)
	if _, err := io.ReadFull(stdout, banner); err != nil || string(banner) != "SSH-" {
		t.Errorf("forwarding with permit-port-forwarding: %q, %v", banner, err)
	}
	stdin.Close()
	fw.Process.Kill()
	fw.Wait()

	// Revocation ends a live terminal session at once, and the ended
	// lease's certificate is refused after.
	tm := startPTY(t, exec.Command("ssh", append(opts, "-tt", c.Username+"@"+c.Host)...))
	tm.send("echo alive-$((20+3))\n")
	tm.expect("alive-23", 15*time.Second)
	start := time.Now()
	g.ok("carol", nil, "revoke", c.LeaseID)
	select {
	case <-tm.eof:
	case <-time.After(5 * time.Second):
		t.Fatal("the session outlived the revocation by 5s")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("session ended %s after the revoke command; want within 1s", d)
	}
	if out, err := exec.Command("ssh", append(opts, c.Username+"@"+c.Host, "echo again")...).CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("the ended lease's certificate: %v %s; want refused", err, out)
	}
}

// TestSSHGatewayConnectAndPlay runs `mayfly connect` in a terminal, types,
// resizes, exits, and replays the recording with `mayfly sessions play`.
func TestSSHGatewayConnectAndPlay(t *testing.T) {
	g := startSSHGatewayWorld(t)
	bin := buildBinary(t)
	cmd := exec.Command(bin, "connect", "web/shell", "--for", "10m", "--reason", "INC-16")
	cmd.Env = append(os.Environ(), "MAYFLY_ADDR=http://"+g.addr, "MAYFLY_TOKEN="+g.tokens["alice"])
	tm := startPTY(t, cmd)
	tm.expect("connected as", 20*time.Second)
	tm.send("echo typed-$((40+2))\n")
	tm.expect("typed-42", 15*time.Second)
	if err := pty.Setsize(tm.f, &pty.Winsize{Rows: 33, Cols: 111}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	tm.send("stty size\n")
	tm.expect("33 111", 10*time.Second)
	tm.send("exit\n")
	select {
	case <-tm.eof:
	case <-time.After(15 * time.Second):
		t.Fatal("mayfly connect did not exit")
	}
	var ls []leaseOut
	g.ok("alice", &ls, "leases", "-o", "json")
	if len(ls) != 1 || ls[0].State == "active" {
		t.Fatalf("leases after connect: %+v; want one, ended", ls)
	}
	id, _ := g.endedSession(ls[0].ID)
	start := time.Now()
	played := g.ok("alice", nil, "sessions", "play", id, "--speed", "50")
	if !strings.Contains(played, "typed-42") || !strings.Contains(played, "33 111") {
		t.Errorf("sessions play = %q; want what the terminal showed", played)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("play at 50x took %s", time.Since(start))
	}
	if !strings.Contains(tm.text(), played[max(0, len(played)-20):]) {
		t.Errorf("played output's end %q is not what the terminal showed", played[max(0, len(played)-20):])
	}
	if out, err := g.try("alice", "sessions", "play", id, "--speed", "0"); err == nil {
		t.Errorf("play --speed 0 = %q; want a usage error", out)
	}
}

type ptyTerm struct {
	t   *testing.T
	f   *os.File
	mu  sync.Mutex
	out bytes.Buffer
	eof chan struct{}
}

func startPTY(t *testing.T, cmd *exec.Cmd) *ptyTerm {
	t.Helper()
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		t.Fatal(err)
	}
	tm := &ptyTerm{t: t, f: f, eof: make(chan struct{})}
	go func() {
		defer close(tm.eof)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			tm.mu.Lock()
			tm.out.Write(buf[:n])
			tm.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); f.Close() })
	return tm
}

func (tm *ptyTerm) send(s string) {
	if _, err := tm.f.WriteString(s); err != nil {
		tm.t.Fatalf("type %q: %v", s, err)
	}
}

func (tm *ptyTerm) text() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.String()
}

func (tm *ptyTerm) expect(want string, timeout time.Duration) {
	tm.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(tm.text(), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	tm.t.Fatalf("terminal never showed %q; it shows:\n%s", want, tm.text())
}

// processExit returns a finished command's exit status.
func processExit(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestCertificateLeaseNamesTheLogin: for an SSH certificate, leases and
// done name the principal the user logs in as, not the internal name of
// the certificate.
func TestCertificateLeaseNamesTheLogin(t *testing.T) {
	g := startSSHGatewayWorld(t)
	c, _ := g.issue("shell")
	var ls []struct {
		ID       string `json:"id"`
		Username string `json:"username"`
		Login    string `json:"login"`
	}
	g.ok("alice", &ls, "leases", "-o", "json")
	if len(ls) != 1 || ls[0].Login != sshdtest.Login || ls[0].Username == sshdtest.Login {
		t.Fatalf("leases = %+v; want login %s (the principal), username the certificate's name", ls, sshdtest.Login)
	}
	if table := g.ok("alice", nil, "leases"); !strings.Contains(table, "LOGIN") || !strings.Contains(table, sshdtest.Login) || strings.Contains(table, ls[0].Username) {
		t.Errorf("leases table:\n%s\nwant the login %s, not %s", table, sshdtest.Login, ls[0].Username)
	}
	out := g.ok("alice", nil, "done", c.LeaseID)
	if !strings.Contains(out, "access as "+sshdtest.Login+" ended") || strings.Contains(out, ls[0].Username) {
		t.Errorf("done printed %q; want the login %s named", out, sshdtest.Login)
	}
}

// TestRevokedKeysToken: the revocation-list token reads the lists, as a
// host fetching its list would, and is refused everywhere else.
func TestRevokedKeysToken(t *testing.T) {
	tok, sum := newToken()
	g := startSSHGatewayWorldWith(t, "", "ssh_ca: {revoked_keys_token_sha256: "+sum+"}\n")
	get := func(path, token string) (int, []byte) {
		req, _ := http.NewRequest("GET", "http://"+g.addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	c, _ := g.issue("shell")
	g.ok("carol", nil, "revoke", c.LeaseID)
	code, krl := get("/v1/ssh/revoked-keys?target=web", tok)
	if code != 200 || len(krl) == 0 {
		t.Fatalf("revoked-keys with the host token: %d, %d bytes; want 200 and the list", code, len(krl))
	}
	if code, want := get("/v1/ssh/revoked-keys?target=web", g.tokens["alice"]); code != 200 || !bytes.Equal(want, krl) {
		t.Errorf("the list differs between the host token and a user's (%d)", code)
	}
	for _, p := range []string{"/v1/leases", "/v1/ssh/ca", "/v1/whoami", "/v1/audit"} {
		if code, body := get(p, tok); code != http.StatusUnauthorized {
			t.Errorf("GET %s with the revocation-list token: %d %s; want 401", p, code, body)
		}
	}
	if code, _ := get("/v1/ssh/revoked-keys?target=web", "mfy_wrong"); code != http.StatusUnauthorized {
		t.Errorf("revoked-keys with a wrong token: %d; want 401", code)
	}
}

// TestCARotationInTwoSteps: publishing the next CA key first lets hosts
// fetch it while the current key still signs, so no login is refused at the
// switch; rotating at once (--now) makes a host that has not fetched the
// new key refuse new certificates, as the two steps avoid.
func TestCARotationInTwoSteps(t *testing.T) {
	g := startSSHGatewayWorld(t)
	login := func(what string) error {
		t.Helper()
		c, opts := g.issue("shell")
		out, err := exec.Command("ssh", append(opts, c.Username+"@"+c.Host, "echo in-"+what)...).CombinedOutput()
		g.ok("alice", nil, "done", c.LeaseID)
		if err == nil && !strings.Contains(string(out), "in-"+what) {
			return errors.New("no output: " + string(out))
		}
		if err != nil {
			return errors.New(err.Error() + ": " + string(out))
		}
		return nil
	}
	type caOut struct {
		PublicKeys []string `json:"public_keys"`
		SigningKey string   `json:"signing_key"`
		NextKey    string   `json:"next_key"`
	}
	getCA := func() (c caOut) {
		t.Helper()
		g.ok("carol", &c, "ssh", "ca", "-o", "json")
		return c
	}
	fetch := func() { g.host.Trust(t, getCA().PublicKeys) } // what a host's timer does
	first := strings.TrimSpace(g.ok("carol", nil, "ssh", "ca"))

	out := g.ok("carol", nil, "ssh", "ca", "rotate", "--reason", "yearly rotation")
	if !strings.Contains(out, "--activate") {
		t.Errorf("rotate printed %q; want the next step named", out)
	}
	ca := getCA()
	if len(ca.PublicKeys) != 2 || ca.SigningKey != first || ca.NextKey == "" || ca.PublicKeys[1] != ca.NextKey {
		t.Fatalf("after prepare: %+v; want the signing key unchanged and the next key published second", ca)
	}
	next := ca.NextKey
	if err := login("before the hosts fetch"); err != nil {
		t.Fatalf("login while the next key is only published: %v", err)
	}
	fetch()
	g.ok("carol", nil, "ssh", "ca", "rotate", "--activate")
	ca = getCA()
	if ca.SigningKey != next || ca.NextKey != "" {
		t.Fatalf("after activate: %+v; want %s signing", ca, next)
	}
	if err := login("after activation"); err != nil {
		t.Fatalf("login after activation (the host fetched the key before): %v", err)
	}
	if _, err := g.try("carol", "ssh", "ca", "rotate", "--activate"); exitCode(err) != 4 {
		t.Errorf("activate with no next key: exit %d (%v); want 4", exitCode(err), err)
	}
	if _, err := g.try("alice", "ssh", "ca", "rotate"); exitCode(err) != 3 {
		t.Errorf("rotate as a non-admin: exit %d (%v); want 3", exitCode(err), err)
	}

	// The one-step rotation: the host has not fetched the new key.
	g.ok("carol", nil, "ssh", "ca", "rotate", "--now", "--reason", "key compromised")
	if err := login("right after --now"); err == nil {
		t.Errorf("a host without the new key accepted its certificate; the two steps prove nothing")
	}
	fetch()
	if err := login("after the host fetched"); err != nil {
		t.Errorf("login after the host fetched the new key: %v", err)
	}
	var evs []eventOut
	g.ok("carol", &evs, "audit", "-o", "json", "--action", "ssh_ca.rotate")
	if len(evs) != 3 {
		t.Errorf("audit has %d ssh_ca.rotate events; want 3 (prepare, activate, now)", len(evs))
	}
}
