package sink

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// message is an RFC 5424 message parsed by the test receivers.
type message struct {
	pri                      int
	time                     time.Time
	host, app, procID, msgID string
	sdID                     string
	params                   map[string]string
	event                    mayfly.AuditEvent
}

var timestampRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$`)

// parse5424 parses one RFC 5424 message with a single SD element and a
// JSON MSG, strictly.
func parse5424(b []byte) (message, error) {
	var m message
	s := string(b)
	if !strings.HasPrefix(s, "<") {
		return m, errors.New("no PRI")
	}
	end := strings.IndexByte(s, '>')
	if end < 2 || end > 4 {
		return m, errors.New("bad PRI")
	}
	pri, err := strconv.Atoi(s[1:end])
	if err != nil || pri > 191 {
		return m, fmt.Errorf("bad PRI %q", s[1:end])
	}
	m.pri = pri
	s = s[end+1:]
	fields := strings.SplitN(s, " ", 7)
	if len(fields) != 7 {
		return m, errors.New("too few header fields")
	}
	if fields[0] != "1" {
		return m, fmt.Errorf("version %q; want 1", fields[0])
	}
	if m.time, err = time.Parse(time.RFC3339Nano, fields[1]); err != nil {
		return m, fmt.Errorf("timestamp: %w", err)
	}
	if !timestampRE.MatchString(fields[1]) {
		return m, fmt.Errorf("timestamp %q is not an RFC 5424 TIMESTAMP", fields[1])
	}
	for i, max := range []int{255, 48, 128, 32} {
		if f := fields[2+i]; f == "" || len(f) > max || !printASCII(f) {
			return m, fmt.Errorf("header field %d %q is not 1 to %d printable characters", i+2, f, max)
		}
	}
	m.host, m.app, m.procID, m.msgID = fields[2], fields[3], fields[4], fields[5]
	s = fields[6]

	// STRUCTURED-DATA: [id name="value" ...]
	if !strings.HasPrefix(s, "[") {
		return m, errors.New("no structured data")
	}
	s = s[1:]
	sp := strings.IndexAny(s, " ]")
	if sp < 0 {
		return m, errors.New("unterminated SD-ID")
	}
	m.sdID, s = s[:sp], s[sp:]
	m.params = map[string]string{}
	for strings.HasPrefix(s, " ") {
		s = s[1:]
		eq := strings.Index(s, `="`)
		if eq < 1 {
			return m, fmt.Errorf("bad SD-PARAM at %q", s)
		}
		name := s[:eq]
		s = s[eq+2:]
		var v strings.Builder
		for {
			if s == "" {
				return m, errors.New("unterminated PARAM-VALUE")
			}
			c := s[0]
			s = s[1:]
			if c == '"' {
				break
			}
			if c == ']' {
				return m, errors.New("unescaped ] in PARAM-VALUE")
			}
			if c == '\\' && s != "" && strings.IndexByte(`"\]`, s[0]) >= 0 {
				c, s = s[0], s[1:]
			}
			v.WriteByte(c)
		}
		m.params[name] = v.String()
	}
	if !strings.HasPrefix(s, "] ") {
		return m, fmt.Errorf("SD element not closed at %q", s)
	}
	if err := json.Unmarshal([]byte(s[2:]), &m.event); err != nil {
		return m, fmt.Errorf("MSG: %w", err)
	}
	return m, nil
}

// receiver collects parsed messages.
type receiver struct {
	t    *testing.T
	mu   sync.Mutex
	msgs []message
}

func (r *receiver) add(b []byte) {
	m, err := parse5424(b)
	if err != nil {
		r.t.Errorf("receiver: %v in %q", err, b)
		return
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

func (r *receiver) seqs() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int64, len(r.msgs))
	for i, m := range r.msgs {
		out[i] = m.event.Seq
	}
	return out
}

func (r *receiver) count() int { return len(r.seqs()) }

// checkMessages compares the received messages with the stored events.
func (r *receiver) checkMessages(want []*mayfly.AuditEvent) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) != len(want) {
		r.t.Fatalf("received %d messages; want %d", len(r.msgs), len(want))
	}
	for i, m := range r.msgs {
		e := want[i]
		if m.event.Seq != e.Seq || m.event.Hash != e.Hash || m.event.ComputeHash() != e.Hash {
			r.t.Fatalf("message %d carries event %d (hash %s); want %d (hash %s)", i, m.event.Seq, m.event.Hash, e.Seq, e.Hash)
		}
		if got, want := m.pri, 4*8+5; got != want {
			r.t.Errorf("PRI = %d; want %d (auth.notice)", got, want)
		}
		if !m.time.Equal(e.Time) {
			r.t.Errorf("timestamp = %v; want %v", m.time, e.Time)
		}
		if m.app != "mayfly-test" || m.msgID != e.Action || m.sdID != "mayfly@32473" {
			r.t.Errorf("APP-NAME, MSGID, SD-ID = %q, %q, %q; want mayfly-test, %q, mayfly@32473", m.app, m.msgID, m.sdID, e.Action)
		}
		wantParams := map[string]string{"seq": strconv.FormatInt(e.Seq, 10), "actor": e.Actor, "subject": e.Subject}
		for k, v := range map[string]string{"target": e.Target, "lease": e.LeaseID, "request": e.RequestID} {
			if v != "" {
				wantParams[k] = v
			}
		}
		if fmt.Sprint(m.params) != fmt.Sprint(wantParams) {
			r.t.Errorf("SD params = %v; want %v", m.params, wantParams)
		}
	}
}

func TestSyslogUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rcv := &receiver{t: t}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			rcv.add(bytes.Clone(buf[:n]))
		}
	}()
	db := openStore(t)
	want := appendEvents(t, db, 60)
	r := newRunner(t, db, nil, Config{Name: "siem", Type: "syslog", Network: "udp", Address: pc.LocalAddr().String(),
		AppName: "mayfly-test", Facility: "auth", BatchSize: 25})
	start(t, r)
	waitFor(t, "cursor 60", func() bool { return storedCursor(t, db, "siem") == "60" })
	waitFor(t, "60 datagrams", func() bool { return rcv.count() == 60 })
	rcv.checkMessages(want)
}

// tcpReceiver accepts connections and reads octet-counted frames; stop
// closes the listener and every connection.
type tcpReceiver struct {
	*receiver
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func listenTCP(t *testing.T, rcv *receiver, addr string) *tcpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tr := &tcpReceiver{receiver: rcv, ln: ln}
	tr.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.mu.Lock()
			tr.conns = append(tr.conns, c)
			tr.mu.Unlock()
			tr.wg.Go(func() { tr.read(c) })
		}
	})
	t.Cleanup(tr.stop)
	return tr
}

func (tr *tcpReceiver) read(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		n, err := br.ReadString(' ')
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				tr.t.Errorf("read frame length: %v", err)
			}
			return
		}
		size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
		if err != nil || size <= 0 {
			tr.t.Errorf("bad frame length %q", n)
			return
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(br, msg); err != nil {
			tr.t.Errorf("read frame: %v", err)
			return
		}
		tr.add(msg)
	}
}

func (tr *tcpReceiver) stop() {
	tr.ln.Close()
	tr.mu.Lock()
	for _, c := range tr.conns {
		c.Close()
	}
	tr.mu.Unlock()
	tr.wg.Wait()
}

// TestSyslogTCP delivers over TCP, takes the receiver down while events
// are appended, and brings it back on the same address.
func TestSyslogTCP(t *testing.T) {
	rcv := &receiver{t: t}
	tr := listenTCP(t, rcv, "127.0.0.1:0")
	addr := tr.ln.Addr().String()
	db := openStore(t)
	appendEvents(t, db, 40)
	r := newRunner(t, db, nil, Config{Name: "siem", Type: "syslog", Network: "tcp", Address: addr,
		AppName: "mayfly-test", Facility: "4", BatchSize: 15})
	start(t, r)
	waitFor(t, "40 messages", func() bool { return rcv.count() == 40 && storedCursor(t, db, "siem") == "40" })

	tr.stop()
	for range 3 {
		appendEvents(t, db, 10)
		r.Notify()
		time.Sleep(30 * time.Millisecond)
	}
	waitFor(t, "backlog 30", func() bool { return r.Backlog()["siem"] == 30 })
	if got := storedCursor(t, db, "siem"); got != "40" {
		t.Fatalf("cursor while the receiver is down = %s; want 40", got)
	}

	listenTCP(t, rcv, addr)
	waitFor(t, "cursor 70", func() bool { return storedCursor(t, db, "siem") == "70" })
	waitFor(t, "70 messages", func() bool { return rcv.count() >= 70 })
	if repeats := checkAtLeastOnceInOrder(t, rcv.seqs(), 70); repeats != 0 {
		t.Errorf("%d events delivered twice; want none", repeats)
	}
	rcv.checkMessages(allEvents(t, db))
}

func TestSyslogFormat(t *testing.T) {
	s := &syslogSink{pri: 10*8 + 5, hostname: "broker-1", appName: "mayfly", procID: "42"}
	e := &mayfly.AuditEvent{Seq: 7, Time: time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("X", 3600)),
		Actor: `a"b\c]d`, Action: "lease.revoke", Subject: "lease:l1", LeaseID: "l1", Hash: "h"}
	got, err := s.format(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `<85>1 2026-03-01T11:00:00.123456Z broker-1 mayfly 42 lease.revoke [mayfly@32473 seq="7" actor="a\"b\\c\]d" subject="lease:l1" lease="l1"] ` +
		`{"seq":7,"time":"2026-03-01T12:00:00.123456789+01:00","actor":"a\"b\\c]d","action":"lease.revoke","subject":"lease:l1","lease_id":"l1","prev_hash":"","hash":"h"}`
	if string(got) != want {
		t.Errorf("format =\n%s\nwant\n%s", got, want)
	}
}

func TestHeader(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{{"", 32, "-"}, {"lease.revoke", 32, "lease.revoke"}, {"a b\tc", 32, "a_b_c"}, {"héllo", 32, "h__llo"}, {"abcdef", 4, "abcd"}}
	for _, tt := range tests {
		if got := header(tt.in, tt.n); got != tt.want {
			t.Errorf("header(%q, %d) = %q; want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
