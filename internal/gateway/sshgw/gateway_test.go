package sshgw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/ssh"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
	"github.com/mayflyhq/mayfly/internal/sshdtest"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// sessions reads the session log of the rig's store.
type sessions struct{ st mayfly.Store }

// only returns the one session recorded for lease, its events and why it
// ended, waiting for it to end; the chain must verify.
func (m sessions) only(t *testing.T, lease string) (*mayfly.Session, []*mayfly.SessionEvent, string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ss []*mayfly.Session
		if err := m.st.View(ctx, func(tx mayfly.Tx) error {
			var err error
			ss, err = tx.ListSessions(mayfly.SessionFilter{LeaseID: lease})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(ss) == 1 && !ss[0].EndedAt.IsZero() {
			s := ss[0]
			if s.Kind != mayfly.SessionSSH {
				t.Errorf("session kind %q", s.Kind)
			}
			res, err := sessionlog.Verify(ctx, m.st, s.ID)
			if err != nil || !res.OK || !res.Anchored {
				t.Errorf("session %s does not verify: %+v, %v", s.ID, res, err)
			}
			return s, m.events(t, s.ID), s.EndReason
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease %s: want one ended session, have %d", lease, len(ss))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m sessions) events(t *testing.T, id string) []*mayfly.SessionEvent {
	t.Helper()
	var evs []*mayfly.SessionEvent
	if err := m.st.View(context.Background(), func(tx mayfly.Tx) error {
		var err error
		evs, err = tx.ListSessionEvents(id, 0, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return evs
}

// all returns every event of every session, once every session ended.
func (m sessions) all(t *testing.T) []*mayfly.SessionEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var open []*mayfly.Session
		if err := m.st.View(context.Background(), func(tx mayfly.Tx) error {
			var err error
			open, err = tx.ListSessions(mayfly.SessionFilter{Open: true})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(open) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions never ended", len(open))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var ss []*mayfly.Session
	if err := m.st.View(context.Background(), func(tx mayfly.Tx) error {
		var err error
		ss, err = tx.ListSessions(mayfly.SessionFilter{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var out []*mayfly.SessionEvent
	for _, s := range ss {
		out = append(out, m.events(t, s.ID)...)
	}
	return out
}

func bodies[T any](t *testing.T, evs []*mayfly.SessionEvent, kind string) []T {
	t.Helper()
	var out []T
	for _, e := range evs {
		if e.Kind != kind {
			continue
		}
		var v T
		if err := json.Unmarshal(e.Body, &v); err != nil {
			t.Fatalf("%s body %s: %v", kind, e.Body, err)
		}
		out = append(out, v)
	}
	return out
}

// fakeLeases holds leases in memory, as the broker's store would.
type fakeLeases struct {
	sc      *ssh.Connector
	grants  map[string]mayfly.Grant
	mu      sync.Mutex
	leases  map[string]*mayfly.Lease
	changed chan struct{}
	touched map[string]time.Time
}

func (f *fakeLeases) Lease(_ context.Context, id string) (*mayfly.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.leases[id]
	if !ok {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "no lease %q", id)
	}
	c := *l
	return &c, nil
}

func (f *fakeLeases) Route(l *mayfly.Lease) (*ssh.Connector, ssh.Route, error) {
	r, err := f.sc.Route(l.Username, f.grants[l.Grant])
	return f.sc, r, err
}

func (f *fakeLeases) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeLeases) Touch(id string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.touched[id] = at
}

func (f *fakeLeases) end(t *testing.T, id string) {
	t.Helper()
	f.mu.Lock()
	l := f.leases[id]
	l.State, l.EndReason = mayfly.LeaseRevoking, mayfly.EndRevoked
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	if err := f.sc.Revoke(context.Background(), mayfly.RevokeRequest{LeaseID: id, Username: l.Username, ExpiresAt: l.ExpiresAt}); err != nil {
		t.Fatal(err)
	}
}

type rig struct {
	t      *testing.T
	dir    string
	host   *sshdtest.Host
	leases *fakeLeases
	log    sessions
	gw     *Server
	addr   string
	port   int
	known  string
	ca     *ssh.CA
}

type leaseKey struct {
	id, key, cert, login, account string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	sshdtest.Need(t)
	dir := t.TempDir()
	ca, err := ssh.OpenCA(filepath.Join(dir, "ca"), []byte("test passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	krl := filepath.Join(dir, "revoked.krl")
	// sshd refuses every key while its RevokedKeys file is missing; the
	// connector writes it when it opens.
	sshdtest.Write(t, krl, nil, 0o644)
	host := sshdtest.Start(t, ca.PublicKeys(), krl)
	grants := map[string]mayfly.Grant{
		"shell":   {Name: "shell", Principals: []string{sshdtest.Login}, Via: ssh.ViaGateway},
		"forward": {Name: "forward", Principals: []string{sshdtest.Login}, Via: ssh.ViaGateway, Extensions: []string{"permit-pty", "permit-port-forwarding", "permit-agent-forwarding"}},
	}
	sc, err := ssh.New(mayfly.Target{Name: "web", Kind: mayfly.KindSSH, Address: host.Addr, HostKey: host.HostKey, KRLFile: krl, Grants: grants}, ca, filepath.Join(dir, "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_, hostPEM := sshdtest.NewKey(t)
	hk, err := gossh.ParsePrivateKey(hostPEM)
	if err != nil {
		t.Fatal(err)
	}
	sc.SetGateway("127.0.0.1", port, sshdtest.Authorized(hk.PublicKey()))
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "mayfly.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rig{t: t, dir: dir, host: host, log: sessions{st}, addr: ln.Addr().String(), port: port, ca: ca}
	r.leases = &fakeLeases{sc: sc, grants: grants, leases: map[string]*mayfly.Lease{}, changed: make(chan struct{}), touched: map[string]time.Time{}}
	r.gw, err = New(Options{HostKey: hk, CA: ca, Leases: r.leases, Log: sessionlog.New(st, nil, nil), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { r.gw.Serve(ln); close(served) }()
	t.Cleanup(func() { r.gw.Close(); <-served })
	r.known = filepath.Join(dir, "known_hosts")
	sshdtest.Write(t, r.known, []byte("[127.0.0.1]:"+strconv.Itoa(port)+" "+sshdtest.Authorized(hk.PublicKey())+"\n"), 0o600)
	return r
}

var leaseSeq int

// lease activates a lease of grant and returns the user's key files.
func (r *rig) lease(grant string) leaseKey {
	r.t.Helper()
	leaseSeq++
	id := "lease_gw" + strconv.Itoa(leaseSeq)
	account := "mf_alice_" + strconv.Itoa(leaseSeq)
	exp := time.Now().Add(time.Hour)
	res, err := r.leases.sc.Provision(context.Background(), mayfly.ProvisionRequest{LeaseID: id, Username: account, Grant: r.leases.grants[grant], ExpiresAt: exp})
	if err != nil {
		r.t.Fatal(err)
	}
	cr := res.Credential
	if cr.Host != "127.0.0.1" || cr.Port != r.port || cr.Username != sshdtest.Login || cr.HostKey == "" {
		r.t.Fatalf("credential points at %s@%s:%d; want %s@127.0.0.1:%d (the gateway)", cr.Username, cr.Host, cr.Port, sshdtest.Login, r.port)
	}
	r.leases.mu.Lock()
	r.leases.leases[id] = &mayfly.Lease{ID: id, RequestID: "req_" + id, Requester: "alice", Target: "web", Grant: grant, Username: account, State: mayfly.LeaseActive, ExpiresAt: exp}
	r.leases.mu.Unlock()
	k := leaseKey{id: id, key: filepath.Join(r.dir, id), cert: filepath.Join(r.dir, id+"-cert.pub"), login: cr.Username, account: account}
	sshdtest.Write(r.t, k.key, []byte(cr.PrivateKey), 0o600)
	sshdtest.Write(r.t, k.cert, []byte(cr.Certificate+"\n"), 0o644)
	return k
}

// sshArgs are the options of OpenSSH's ssh and scp for the gateway.
func (r *rig) opts(k leaseKey) []string {
	return []string{"-F", "/dev/null", "-o", "UserKnownHostsFile=" + r.known, "-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i", k.key, "-o", "CertificateFile=" + k.cert, "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"}
}

func (r *rig) ssh(k leaseKey, args ...string) *exec.Cmd {
	a := append([]string{"-p", strconv.Itoa(r.port)}, r.opts(k)...)
	a = append(a, args...)
	return exec.Command("ssh", a...)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestExecThroughGateway(t *testing.T) {
	r := newRig(t)
	k := r.lease("shell")
	out, err := r.ssh(k, k.login+"@127.0.0.1", "echo hello from $(whoami); echo oops >&2; exit 3").CombinedOutput()
	if got := exitCode(err); got != 3 {
		t.Fatalf("ssh exit = %d (%v); want 3\n%s", got, err, out)
	}
	if !strings.Contains(string(out), "hello from "+sshdtest.Login) || !strings.Contains(string(out), "oops") {
		t.Fatalf("output %q; want the command's stdout and stderr", out)
	}
	s, evs, reason := r.log.only(t, k.id)
	if s.User != "alice" || s.Account != sshdtest.Login || s.Target != "web" || !strings.HasPrefix(s.ClientAddr, "127.0.0.1:") {
		t.Errorf("session = %+v", s)
	}
	if reason != "client disconnected" {
		t.Errorf("end reason = %q", reason)
	}
	chs := bodies[ChannelInfo](t, evs, EventChannel)
	if len(chs) != 1 || chs[0].Type != "exec" || !strings.Contains(chs[0].Command, "echo hello") {
		t.Fatalf("channel events = %+v", chs)
	}
	exits := bodies[Exit](t, evs, EventExit)
	if len(exits) != 1 || exits[0].Status == nil || *exits[0].Status != 3 {
		t.Fatalf("exit events = %+v; want status 3", exits)
	}
	if replay := outputOf(t, evs, 0); !strings.Contains(replay, "hello from "+sshdtest.Login) {
		t.Errorf("recorded output %q lacks the command's output", replay)
	}
	if _, ok := r.leases.touched[k.id]; !ok {
		t.Errorf("the gateway reported no activity for the lease")
	}
}

// TestBulkOutputWithoutTerminal: a command without a terminal has the
// first DefaultRecordWithoutPTY bytes of its output recorded, a marker
// saying the rest is not, and every byte counted; the client gets it all.
func TestBulkOutputWithoutTerminal(t *testing.T) {
	r := newRig(t)
	k := r.lease("shell")
	const size = 3_000_000
	out, err := r.ssh(k, k.login+"@127.0.0.1", "head -c "+strconv.Itoa(size)+" /dev/zero | tr '\\0' x").Output()
	if err != nil || len(out) != size || strings.Trim(string(out), "x") != "" {
		t.Fatalf("ssh: %v; got %d bytes, want %d x", err, len(out), size)
	}
	_, evs, _ := r.log.only(t, k.id)
	_, ce := parseCast(t, castOf(t, evs, 0))
	var o strings.Builder
	var markers []string
	for _, e := range ce {
		switch e.kind {
		case "o":
			o.WriteString(e.data)
		case "m":
			markers = append(markers, e.data)
		}
	}
	if o.Len() != DefaultRecordWithoutPTY || strings.Trim(o.String(), "x") != "" {
		t.Errorf("recorded %d bytes of output; want the first %d", o.Len(), DefaultRecordWithoutPTY)
	}
	if len(markers) != 1 || !strings.Contains(markers[0], "not recorded") || ce[len(ce)-1].kind != "m" {
		t.Errorf("markers %q; want one, after the last output recorded", markers)
	}
	exits := bodies[Exit](t, evs, EventExit)
	if len(exits) != 1 || exits[0].BytesOut != size {
		t.Errorf("exit events %+v; want bytes_out %d", exits, size)
	}
}

// castOf concatenates a channel's asciicast chunks.
func castOf(t *testing.T, evs []*mayfly.SessionEvent, channel int) string {
	t.Helper()
	var b strings.Builder
	part := 0
	for _, c := range bodies[CastBody](t, evs, EventCast) {
		if c.Channel != channel {
			continue
		}
		if c.Part != part {
			t.Fatalf("cast part %d after %d", c.Part, part-1)
		}
		part++
		b.WriteString(c.Cast)
	}
	return b.String()
}

type castEvent struct {
	t    float64
	kind string
	data string
}

// parseCast checks the asciicast v2 structure and returns its header and
// events.
func parseCast(t *testing.T, cast string) (CastHeader, []castEvent) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(cast, "\n"), "\n")
	var h CastHeader
	if err := json.Unmarshal([]byte(lines[0]), &h); err != nil || h.Version != 2 {
		t.Fatalf("cast header %q: %v", lines[0], err)
	}
	var evs []castEvent
	last := 0.0
	for _, l := range lines[1:] {
		var raw []any
		if err := json.Unmarshal([]byte(l), &raw); err != nil || len(raw) != 3 {
			t.Fatalf("cast line %q: %v", l, err)
		}
		e := castEvent{t: raw[0].(float64), kind: raw[1].(string), data: raw[2].(string)}
		if e.t < last {
			t.Fatalf("cast time goes back: %v after %v", e.t, last)
		}
		last = e.t
		evs = append(evs, e)
	}
	return h, evs
}

func outputOf(t *testing.T, evs []*mayfly.SessionEvent, channel int) string {
	t.Helper()
	_, ce := parseCast(t, castOf(t, evs, channel))
	var b strings.Builder
	for _, e := range ce {
		if e.kind == "o" {
			b.WriteString(e.data)
		}
	}
	return b.String()
}

// term runs ssh in a pseudo-terminal.
type term struct {
	t   *testing.T
	f   *os.File
	cmd *exec.Cmd
	mu  sync.Mutex
	out bytes.Buffer
	eof chan struct{}
}

func startTerm(t *testing.T, cmd *exec.Cmd, rows, cols uint16) *term {
	t.Helper()
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		t.Fatal(err)
	}
	tm := &term{t: t, f: f, cmd: cmd, eof: make(chan struct{})}
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

func (tm *term) send(s string) {
	if _, err := tm.f.WriteString(s); err != nil {
		tm.t.Fatalf("type %q: %v", s, err)
	}
}

func (tm *term) expect(want string, timeout time.Duration) {
	tm.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		tm.mu.Lock()
		ok := strings.Contains(tm.out.String(), want)
		tm.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.t.Fatalf("terminal never showed %q; it shows:\n%s", want, tm.out.String())
}

func (tm *term) text() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.String()
}

func TestInteractiveShellIsRecorded(t *testing.T) {
	r := newRig(t)
	k := r.lease("shell")
	tm := startTerm(t, r.ssh(k, "-tt", k.login+"@127.0.0.1"), 24, 80)
	tm.send("echo marker-$((6*7))\n")
	tm.expect("marker-42", 10*time.Second)
	if err := pty.Setsize(tm.f, &pty.Winsize{Rows: 40, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	// ssh forwards the resize on SIGWINCH, which the kernel sends.
	time.Sleep(200 * time.Millisecond)
	tm.send("stty size; echo size-done\n")
	tm.expect("40 100", 10*time.Second)
	tm.send("exit 7\n")
	select {
	case <-tm.eof:
	case <-time.After(10 * time.Second):
		t.Fatal("ssh did not exit")
	}
	if code := exitCode(tm.cmd.Wait()); code != 7 {
		t.Errorf("ssh exit = %d; want 7", code)
	}
	sess, evs, _ := r.log.only(t, k.id)
	whole, err := Cast(context.Background(), r.log.st, sess.ID, 0)
	if err != nil || string(whole) != castOf(t, evs, 0) {
		t.Fatalf("Cast = %d bytes, %v; want the channel's chunks", len(whole), err)
	}
	if _, err := Cast(context.Background(), r.log.st, sess.ID, 5); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
		t.Errorf("Cast of a channel without a recording = %v; want not found", err)
	}
	h, ce := parseCast(t, string(whole))
	if h.Width != 80 || h.Height != 24 || h.Env["TERM"] == "" {
		t.Errorf("cast header = %+v; want 80x24 with TERM", h)
	}
	var output, input strings.Builder
	resized := false
	for _, e := range ce {
		switch e.kind {
		case "o":
			output.WriteString(e.data)
		case "i":
			input.WriteString(e.data)
		case "r":
			resized = resized || e.data == "100x40"
		}
	}
	if !resized {
		t.Errorf("no resize to 100x40 recorded: %+v", ce)
	}
	if !strings.Contains(input.String(), "echo marker-$((6*7))") {
		t.Errorf("recorded input %q lacks what was typed", input.String())
	}
	// The recording replays what the terminal showed.
	for _, want := range []string{"marker-42", "40 100", "size-done"} {
		if !strings.Contains(output.String(), want) {
			t.Errorf("recorded output lacks %q", want)
		}
	}
	// Byte for byte what the client's terminal received.
	if !strings.Contains(tm.text(), output.String()) {
		t.Errorf("recorded output differs from the terminal's:\nrecorded %q\nterminal %q", output.String(), tm.text())
	}
	exits := bodies[Exit](t, evs, EventExit)
	if len(exits) != 1 || exits[0].Status == nil || *exits[0].Status != 7 {
		t.Errorf("exit events = %+v; want status 7", exits)
	}
}

func TestFileTransfers(t *testing.T) {
	r := newRig(t)
	k := r.lease("shell")
	payload := bytes.Repeat([]byte("mayfly transfer 0123456789\n"), 40000) // about 1 MB
	src := filepath.Join(r.dir, "upload.bin")
	sshdtest.Write(t, src, payload, 0o644)
	scp := func(extra ...string) {
		t.Helper()
		a := append([]string{"-P", strconv.Itoa(r.port)}, r.opts(k)...)
		a = append(a, extra...)
		if out, err := exec.Command("scp", a...).CombinedOutput(); err != nil {
			t.Fatalf("scp %v: %v\n%s", extra, err, out)
		}
	}
	remote := "/tmp/mfgw-" + k.id + ".bin"
	t.Cleanup(func() { os.Remove(remote); os.Remove(remote + ".legacy") })

	// scp over SFTP (OpenSSH's default), there and back.
	scp(src, k.login+"@127.0.0.1:"+remote)
	back := filepath.Join(r.dir, "download.bin")
	scp(k.login+"@127.0.0.1:"+remote, back)
	if got, _ := os.ReadFile(back); !bytes.Equal(got, payload) {
		t.Fatalf("downloaded %d bytes; want the %d uploaded", len(got), len(payload))
	}
	// The legacy scp protocol, run as a command.
	scp("-O", src, k.login+"@127.0.0.1:"+remote+".legacy")

	all := r.log.all(t)
	var wrote, read, legacy bool
	for _, tr := range bodies[Transfer](t, all, EventTransfer) {
		switch {
		case tr.Protocol == "sftp" && tr.Op == "write" && tr.Path == remote && tr.BytesWritten == int64(len(payload)):
			wrote = true
		case tr.Protocol == "sftp" && tr.Op == "read" && tr.Path == remote && tr.BytesRead == int64(len(payload)):
			read = true
		case tr.Protocol == "scp" && tr.Op == "upload" && strings.Contains(tr.Command, remote+".legacy") && tr.BytesWritten > int64(len(payload)):
			legacy = true
		}
	}
	if !wrote || !read || !legacy {
		t.Fatalf("transfers recorded: sftp write %v, sftp read %v, scp upload %v:\n%+v", wrote, read, legacy, bodies[Transfer](t, all, EventTransfer))
	}
}

func TestForwardingNeedsTheGrant(t *testing.T) {
	r := newRig(t)
	plain, fwd := r.lease("shell"), r.lease("forward")

	// ssh -W opens a direct-tcpip channel: here to the host's own sshd.
	out, err := r.ssh(plain, "-W", r.host.Addr, plain.login+"@127.0.0.1").CombinedOutput()
	if err == nil || strings.HasPrefix(string(out), "SSH-") {
		t.Fatalf("port forwarding without permit-port-forwarding worked: %q", out)
	}
	cmd := r.ssh(fwd, "-W", r.host.Addr, fwd.login+"@127.0.0.1")
	stdout, _ := cmd.StdoutPipe()
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make([]byte, 4)
	if _, err := io.ReadFull(stdout, banner); err != nil || string(banner) != "SSH-" {
		t.Errorf("forwarding permitted by the grant: read %q, %v; want the sshd banner", banner, err)
	}
	stdin.Close()
	cmd.Process.Kill()
	cmd.Wait()

	// Remote forwarding is refused alike.
	out, err = r.ssh(plain, "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:9", plain.login+"@127.0.0.1", "true").CombinedOutput()
	if err == nil {
		t.Errorf("remote forwarding without the grant succeeded: %s", out)
	}
	// Agent forwarding: the shell sees no agent unless the grant allows it.
	agentDir := t.TempDir()
	sock := filepath.Join(agentDir, "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { agent.Process.Kill(); agent.Wait() }()
	waitFile(t, sock)
	withAgent := func(k leaseKey) string {
		// ssh takes the first value of an option: the agent's before opts'.
		a := append([]string{"-A", "-o", "IdentityAgent=" + sock, "-p", strconv.Itoa(r.port)}, r.opts(k)...)
		c := exec.Command("ssh", append(a, k.login+"@127.0.0.1", "echo agent=${SSH_AUTH_SOCK:-none}")...)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("ssh -A: %v\n%s", err, out)
		}
		return string(out)
	}
	if got := withAgent(plain); !strings.Contains(got, "agent=none") {
		t.Errorf("agent forwarded without permit-agent-forwarding: %q", got)
	}
	if got := withAgent(fwd); strings.Contains(got, "agent=none") {
		t.Errorf("agent not forwarded with permit-agent-forwarding: %q", got)
	}
	refused := r.log.all(t)
	whats := map[string]bool{}
	for _, x := range bodies[Refusal](t, refused, EventRefused) {
		whats[x.What] = true
	}
	if !whats["port forwarding"] || !whats["agent forwarding"] {
		t.Errorf("refusals recorded: %v; want port and agent forwarding", whats)
	}
}

func waitFile(t *testing.T, p string) {
	t.Helper()
	for range 200 {
		if _, err := os.Stat(p); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", p)
}

func TestRevocationEndsTheSession(t *testing.T) {
	r := newRig(t)
	k := r.lease("shell")
	tm := startTerm(t, r.ssh(k, "-tt", k.login+"@127.0.0.1"), 24, 80)
	tm.send("echo ready-$((1+1))\n")
	tm.expect("ready-2", 10*time.Second)
	start := time.Now()
	r.leases.end(t, k.id)
	select {
	case <-tm.eof:
	case <-time.After(3 * time.Second):
		t.Fatal("the session outlived the revocation by 3s")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("session ended %s after revocation; want within 1s", d)
	}
	tm.expect("connection closed: lease revoking", time.Second)
	_, _, reason := r.log.only(t, k.id)
	if !strings.Contains(reason, "revoking") {
		t.Errorf("end reason = %q", reason)
	}

	// The ended lease's certificate is refused at the gateway.
	out, err := r.ssh(k, k.login+"@127.0.0.1", "echo in").CombinedOutput()
	if err == nil || strings.Contains(string(out), "in\n") || !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("login with an ended lease's certificate: %v\n%s", err, out)
	}
}

func TestGatewayRefusesWhatIsNotALiveLease(t *testing.T) {
	r := newRig(t)
	k := r.lease("shell")
	// The user's certificate is good only at the gateway: the host
	// refuses it.
	a := append([]string{"-p", r.host.Port()}, r.opts(k)...)
	a = append(a, "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", k.login+"@127.0.0.1", "echo direct")
	if out, err := exec.Command("ssh", a...).CombinedOutput(); err == nil || strings.Contains(string(out), "direct\n") {
		t.Fatalf("the lease's certificate logged in to the host directly: %s", out)
	}
	// Another login name than the lease's.
	if out, err := r.ssh(k, "root@127.0.0.1", "true").CombinedOutput(); err == nil {
		t.Fatalf("login as root through the gateway succeeded: %s", out)
	}
	// A plain key, no certificate (under another name, or ssh would find
	// the certificate beside it).
	bare := filepath.Join(r.dir, "bare_key")
	keyPEM, _ := os.ReadFile(k.key)
	sshdtest.Write(t, bare, keyPEM, 0o600)
	if out, err := exec.Command("ssh", "-p", strconv.Itoa(r.port), "-F", "/dev/null", "-o", "UserKnownHostsFile="+r.known,
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-i", bare, k.login+"@127.0.0.1", "true").CombinedOutput(); err == nil {
		t.Fatalf("a key without its certificate logged in: %s", out)
	}
	// A lease the broker has ended, though its certificate is still valid
	// and on no revocation list yet.
	r.leases.mu.Lock()
	r.leases.leases[k.id].State = mayfly.LeaseRevoked
	r.leases.mu.Unlock()
	if out, err := r.ssh(k, k.login+"@127.0.0.1", "true").CombinedOutput(); err == nil {
		t.Fatalf("a certificate of a revoked lease logged in: %s", out)
	}
	if n := len(r.log.all(t)); n != 0 {
		t.Errorf("%d sessions recorded for refused logins", n)
	}
}
