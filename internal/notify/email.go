package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// emailSender sends one plain-text email per recipient with an address,
// over SMTP.
type emailSender struct {
	addr, host string
	from       *mail.Address
	user, pass string
	startTLS   bool
	// tlsConfig verifies the server after STARTTLS; nil: the system roots
	// and the host of addr.
	tlsConfig *tls.Config
	timeout   time.Duration
	helo      string
	log       *slog.Logger
	// now dates the messages.
	now func() time.Time
}

var hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)

// heloName is the name Mayfly gives itself in EHLO.
func heloName() string {
	h, err := os.Hostname()
	if err != nil || !hostName.MatchString(h) {
		return "localhost"
	}
	return h
}

func (s *emailSender) send(ctx context.Context, m *message) error {
	if m.done == nil {
		m.done = map[string]bool{}
	}
	var todo []recipient
	seen := map[string]bool{}
	for _, r := range m.Recipients {
		if r.Email == "" {
			continue
		}
		a, err := mail.ParseAddress(r.Email)
		if err != nil || strings.ContainsAny(a.Address, "\r\n") {
			s.log.Warn("notifications: user has an invalid email address; skipped", "user", r.User, "id", m.ID)
			continue
		}
		addr := strings.ToLower(a.Address)
		if m.done[addr] || seen[addr] {
			continue
		}
		seen[addr] = true
		todo = append(todo, recipient{User: r.User, Email: a.Address})
	}
	if len(todo) == 0 {
		return nil
	}

	d := net.Dialer{Timeout: s.timeout}
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("connect to mail server: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(s.timeout))
	c, err := smtp.NewClient(conn, s.host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("mail server greeting: %w", err)
	}
	defer c.Close()
	if err := c.Hello(s.helo); err != nil {
		return fmt.Errorf("mail server hello: %w", err)
	}
	if s.startTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("mail server does not offer STARTTLS, which the channel requires")
		}
		cfg := s.tlsConfig
		if cfg == nil {
			cfg = &tls.Config{ServerName: s.host, MinVersion: tls.VersionTLS12}
		}
		if err := c.StartTLS(cfg); err != nil {
			return fmt.Errorf("starttls: %w", err)
		}
	}
	if s.user != "" {
		// PlainAuth refuses to send credentials without TLS, except to a
		// loopback server.
		if err := c.Auth(smtp.PlainAuth("", s.user, s.pass, s.host)); err != nil {
			return fmt.Errorf("authenticate to mail server: %w", err)
		}
	}
	for _, r := range todo {
		conn.SetDeadline(time.Now().Add(s.timeout))
		err := s.transaction(c, r.Email, s.compose(m, r))
		var perm *rejected
		if errors.As(err, &perm) {
			// The server will never take this address; retrying would hold
			// back every later message.
			s.log.Error("notifications: mail server rejected a recipient; not retried",
				"user", r.User, "id", m.ID, "err", perm.err)
			m.done[strings.ToLower(r.Email)] = true
			if err := c.Reset(); err != nil {
				return fmt.Errorf("reset after rejected recipient: %w", err)
			}
			continue
		}
		if err != nil {
			return err
		}
		m.done[strings.ToLower(r.Email)] = true
	}
	c.Quit() // every message was accepted; a failed goodbye changes nothing
	return nil
}

// rejected is a permanent (5xx) refusal of a recipient.
type rejected struct{ err error }

func (r *rejected) Error() string { return r.err.Error() }

func (s *emailSender) transaction(c *smtp.Client, to string, msg []byte) error {
	if err := c.Mail(s.from.Address); err != nil {
		return fmt.Errorf("mail from: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		var te *textproto.Error
		if errors.As(err, &te) && te.Code >= 500 {
			return &rejected{err}
		}
		return fmt.Errorf("rcpt to: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return fmt.Errorf("data: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	return nil
}

// headerValue makes s safe as a header value: no line breaks or other
// control characters, so nothing can add a header.
func headerValue(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s))
}

var idChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// compose builds the message for one recipient.
func (s *emailSender) compose(m *message, r recipient) []byte {
	var b bytes.Buffer
	header := func(k, v string) {
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(headerValue(v))
		b.WriteString("\r\n")
	}
	subject := m.Subject
	if m.Urgent {
		subject = "[URGENT] " + subject
	}
	subject = cut(headerValue(subject), 200)
	domain := "mayfly.invalid"
	if _, d, ok := strings.Cut(s.from.Address, "@"); ok && hostName.MatchString(d) {
		domain = d
	}
	sum := sha256.Sum256([]byte(strings.ToLower(r.Email)))
	var nonce [6]byte
	rand.Read(nonce[:])
	msgID := fmt.Sprintf("<mayfly.%s.%s.%s@%s>", idChars.ReplaceAllString(m.ID, "-"),
		hex.EncodeToString(sum[:4]), hex.EncodeToString(nonce[:]), domain)

	now := time.Now
	if s.now != nil {
		now = s.now
	}
	header("From", (&mail.Address{Name: headerValue(s.from.Name), Address: s.from.Address}).String())
	header("To", (&mail.Address{Name: headerValue(r.User), Address: r.Email}).String())
	header("Subject", mime.QEncoding.Encode("utf-8", subject))
	header("Date", now().Format(time.RFC1123Z))
	header("Message-ID", msgID)
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	header("Auto-Submitted", "auto-generated")
	header("X-Mayfly-Event", m.Type)
	header("X-Mayfly-Delivery", m.ID)
	if m.Urgent {
		header("Importance", "high")
		header("X-Priority", "1")
	}
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(m.Text()))
	qp.Write([]byte("\n-- \nSent by Mayfly, the access broker. Every decision is in its audit trail.\n"))
	qp.Close()
	return b.Bytes()
}
