package notify

import (
	"bytes"
	"io"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// received is one message the SMTP sink accepted.
type received struct {
	from string
	to   []string
	data []byte
}

// smtpSink speaks just enough SMTP to accept mail: EHLO/HELO, MAIL, RCPT,
// DATA, RSET, NOOP, QUIT.
type smtpSink struct {
	ln     net.Listener
	reject string // RCPT address answered 550

	mu   sync.Mutex
	got  []received
	wg   sync.WaitGroup
	open map[net.Conn]bool
}

func startSink(t *testing.T, addr string) *smtpSink {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	s := &smtpSink{ln: ln, open: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *smtpSink) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *smtpSink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.open[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.open, c)
			s.mu.Unlock()
		}()
	}
}

func (s *smtpSink) handle(c net.Conn) {
	defer c.Close()
	tp := textproto.NewConn(c)
	tp.PrintfLine("220 sink ESMTP ready")
	var cur received
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			tp.PrintfLine("250-sink greets %s", arg)
			tp.PrintfLine("250 8BITMIME")
		case "HELO":
			tp.PrintfLine("250 sink")
		case "MAIL":
			cur = received{from: angle(arg)}
			tp.PrintfLine("250 ok")
		case "RCPT":
			to := angle(arg)
			if to == s.reject {
				tp.PrintfLine("550 no such user")
				continue
			}
			cur.to = append(cur.to, to)
			tp.PrintfLine("250 ok")
		case "DATA":
			if len(cur.to) == 0 {
				tp.PrintfLine("503 no recipients")
				continue
			}
			tp.PrintfLine("354 go ahead")
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			cur.data = data
			s.mu.Lock()
			s.got = append(s.got, cur)
			s.mu.Unlock()
			cur = received{}
			tp.PrintfLine("250 queued")
		case "RSET":
			cur = received{}
			tp.PrintfLine("250 ok")
		case "NOOP":
			tp.PrintfLine("250 ok")
		case "QUIT":
			tp.PrintfLine("221 bye")
			return
		default:
			tp.PrintfLine("502 not implemented")
		}
	}
}

// angle returns the address inside <...> of "FROM:<a@b> BODY=8BITMIME".
func angle(arg string) string {
	_, rest, _ := strings.Cut(arg, "<")
	addr, _, _ := strings.Cut(rest, ">")
	return addr
}

func (s *smtpSink) mails() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// parsed is a received message, decoded.
type parsed struct {
	to     []string
	header mail.Header
	body   string
}

func parse(t *testing.T, r received) parsed {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(r.data))
	if err != nil {
		t.Fatalf("parse message: %v\n%s", err, r.data)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil {
		t.Fatalf("decode body: %v", err)
	}
	return parsed{to: r.to, header: m.Header, body: string(body)}
}

func emailConfig(addr string) Config {
	return Config{
		SecurityGroups: []string{"sec"},
		Channels:       []Channel{{Name: "mail", Type: TypeEmail, SMTPAddr: addr, From: "Mayfly <mayfly@example.com>", Timeout: 2 * time.Second}},
	}
}

func TestEmail(t *testing.T) {
	db := openStore(t)
	sink := startSink(t, "127.0.0.1:0")
	start(t, db, emailConfig(sink.ln.Addr().String()), newDir(db), nil)
	waitCursor(t, db, "mail")

	createRequest(t, db, pendingRequest("req_1"), nil)
	// bob and carol are asked; carol has no address, so one mail.
	waitFor(t, "one mail", func() bool { return len(sink.mails()) >= 1 })
	appendEvent(t, db, &mayfly.AuditEvent{Actor: "bob", Action: "request.deny", RequestID: "req_1", Reason: "use the replica"})
	waitFor(t, "two mails", func() bool { return len(sink.mails()) >= 2 })

	mails := sink.mails()
	ask := parse(t, mails[0])
	if got, want := ask.to, []string{"bob@example.com"}; !slices.Equal(got, want) {
		t.Errorf("RCPT = %v; want %v", got, want)
	}
	if mails[0].from != "mayfly@example.com" {
		t.Errorf("MAIL FROM = %q", mails[0].from)
	}
	if got, want := ask.header.Get("Subject"), "Approval needed: alice asks for readonly on pg-prod for 1h"; got != want {
		t.Errorf("Subject = %q; want %q", got, want)
	}
	if got := ask.header.Get("To"); got != `"bob" <bob@example.com>` {
		t.Errorf("To = %q", got)
	}
	if _, err := ask.header.Date(); err != nil {
		t.Errorf("Date %q: %v", ask.header.Get("Date"), err)
	}
	if id := ask.header.Get("Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.com>") {
		t.Errorf("Message-ID = %q", id)
	}
	for _, s := range []string{"investigate INC-42", "mayfly approve req_1", `mayfly deny req_1 --reason "WHY"`} {
		if !strings.Contains(ask.body, s) {
			t.Errorf("body lacks %q:\n%s", s, ask.body)
		}
	}

	deny := parse(t, mails[1])
	if got, want := deny.to, []string{"alice@example.com"}; !slices.Equal(got, want) {
		t.Errorf("denial RCPT = %v; want %v", got, want)
	}
	if got, want := deny.header.Get("Subject"), "Denied: readonly on pg-prod"; got != want {
		t.Errorf("Subject = %q; want %q", got, want)
	}
}

func TestEmailBreakGlassReachesSecurity(t *testing.T) {
	db := openStore(t)
	sink := startSink(t, "127.0.0.1:0")
	start(t, db, emailConfig(sink.ln.Addr().String()), newDir(db), nil)
	waitCursor(t, db, "mail")

	r := pendingRequest("req_bg")
	r.State = mayfly.RequestApproved
	createRequest(t, db, r, map[string]string{"decision": "break_glass", "break_glass": "true"})
	// bob (dba and sec) once, sam (sec); carol has no address.
	waitFor(t, "two mails", func() bool { return len(sink.mails()) >= 2 })
	time.Sleep(50 * time.Millisecond)

	var to []string
	for _, m := range sink.mails() {
		p := parse(t, m)
		to = append(to, p.to...)
		if got := p.header.Get("Subject"); !strings.HasPrefix(got, "[URGENT] BREAK-GLASS: alice took readonly on pg-prod") {
			t.Errorf("Subject = %q", got)
		}
		if p.header.Get("Importance") != "high" {
			t.Errorf("Importance = %q; want high", p.header.Get("Importance"))
		}
	}
	if want := []string{"bob@example.com", "sam@example.com"}; !slices.Equal(to, want) {
		t.Errorf("recipients = %v; want %v", to, want)
	}
}

// Header injection: values that reach headers cannot add a header, and
// nothing reaches a recipient it was not meant for.
func TestEmailHeaderInjection(t *testing.T) {
	db := openStore(t)
	sink := startSink(t, "127.0.0.1:0")
	start(t, db, emailConfig(sink.ln.Addr().String()), newDir(db), nil)
	waitCursor(t, db, "mail")

	r := pendingRequest("req_x")
	r.Target = "pg\r\nBcc: victim@evil.example"
	r.Grant = "ro\nX-Injected: 1"
	r.Reason = "line one\r\n.\r\nMAIL FROM:<x@evil.example>"
	createRequest(t, db, r, nil)
	waitFor(t, "one mail", func() bool { return len(sink.mails()) >= 1 })
	time.Sleep(50 * time.Millisecond)

	mails := sink.mails()
	if len(mails) != 1 {
		t.Fatalf("got %d mails; want 1", len(mails))
	}
	p := parse(t, mails[0])
	if got, want := p.to, []string{"bob@example.com"}; !slices.Equal(got, want) {
		t.Errorf("RCPT = %v; want %v", got, want)
	}
	for _, h := range []string{"Bcc", "X-Injected"} {
		if v := p.header.Get(h); v != "" {
			t.Errorf("injected header %s: %q", h, v)
		}
	}
	if got := p.header.Get("Subject"); !strings.Contains(got, "ro X-Injected: 1 on pg  Bcc: victim@evil.example") {
		t.Errorf("Subject = %q; want the values on one line", got)
	}
}

func TestHeaderValue(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain", "plain"},
		{"a\r\nBcc: x", "a  Bcc: x"},
		{"a\nb\rc", "a b c"},
		{"tab\there", "tab here"},
		{"\u2028sep", "sep"},
	} {
		if got := headerValue(tt.in); got != tt.want {
			t.Errorf("headerValue(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// A mail server that is down, then up: every message arrives, in order.
func TestEmailServerDownThenBack(t *testing.T) {
	db := openStore(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connections are refused

	start(t, db, emailConfig(addr), newDir(db), nil)
	waitCursor(t, db, "mail")
	for _, id := range []string{"req_1", "req_2", "req_3"} {
		createRequest(t, db, pendingRequest(id), nil)
		appendEvent(t, db, &mayfly.AuditEvent{Actor: "bob", Action: "request.deny", RequestID: id, Reason: "no"})
	}
	time.Sleep(150 * time.Millisecond) // several refused attempts

	sink := startSink(t, addr)
	waitFor(t, "six mails", func() bool { return len(sink.mails()) >= 6 })
	time.Sleep(100 * time.Millisecond)

	var got []string
	for _, m := range sink.mails() {
		p := parse(t, m)
		got = append(got, p.header.Get("X-Mayfly-Delivery")+">"+strings.Join(p.to, ","))
	}
	want := []string{
		"1.approval_needed>bob@example.com", "2.denied>alice@example.com",
		"3.approval_needed>bob@example.com", "4.denied>alice@example.com",
		"5.approval_needed>bob@example.com", "6.denied>alice@example.com",
	}
	if !slices.Equal(got, want) {
		t.Errorf("deliveries = %v; want %v", got, want)
	}
}

// A recipient the server refuses for good does not hold back the others.
func TestEmailRejectedRecipient(t *testing.T) {
	db := openStore(t)
	sink := startSink(t, "127.0.0.1:0")
	sink.reject = "bob@example.com"
	start(t, db, emailConfig(sink.ln.Addr().String()), newDir(db), nil)
	waitCursor(t, db, "mail")

	r := pendingRequest("req_bg")
	createRequest(t, db, r, map[string]string{"decision": "break_glass", "break_glass": "true"})
	appendEvent(t, db, &mayfly.AuditEvent{Actor: "bob", Action: "request.deny", RequestID: "req_bg", Reason: "no"})
	waitFor(t, "two mails", func() bool { return len(sink.mails()) >= 2 })

	var to []string
	for _, m := range sink.mails() {
		to = append(to, m.to...)
	}
	if want := []string{"sam@example.com", "alice@example.com"}; !slices.Equal(to, want) {
		t.Errorf("delivered to %v; want %v", to, want)
	}
}

func TestEmailStartTLSRequired(t *testing.T) {
	sink := startSink(t, "127.0.0.1:0")
	s := &emailSender{addr: sink.ln.Addr().String(), host: "127.0.0.1", startTLS: true, timeout: 2 * time.Second,
		helo: "localhost", log: testLog}
	s.from, _ = mail.ParseAddress("mayfly@example.com")
	m := &message{ID: "1.x", Type: TypeDenied, Recipients: []recipient{{User: "alice", Email: "alice@example.com"}}}
	err := s.send(t.Context(), m)
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("send = %v; want a STARTTLS error", err)
	}
	if n := len(sink.mails()); n != 0 {
		t.Errorf("%d mails sent without TLS", n)
	}
}
