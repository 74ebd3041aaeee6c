package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

const (
	// sdID names the structured-data element (32473 is the private
	// enterprise number reserved for documentation, RFC 5612).
	sdID = "mayfly@32473"
	// severityNotice is the severity of every audit message.
	severityNotice = 5
	// maxUDPMessage is the largest datagram sent; larger events are
	// refused rather than truncated.
	maxUDPMessage = 65000
)

// syslogSink sends each event as an RFC 5424 message, one datagram per
// event over UDP, or octet-counted frames (RFC 6587) over TCP.
type syslogSink struct {
	network  string
	address  string
	timeout  time.Duration
	pri      int
	hostname string
	appName  string
	procID   string

	conn net.Conn // nil until dialled, and after a failure
}

// liveCheck is how long a TCP connection is read before each batch, to
// see whether the receiver closed it.
const liveCheck = 200 * time.Microsecond

func newSyslogSink(c Config) (*syslogSink, error) {
	fac, err := facility(c.Facility)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "audit sink %q: %s", c.Name, err)
	}
	host, _ := os.Hostname()
	return &syslogSink{
		network:  c.Network,
		address:  c.Address,
		timeout:  c.Timeout,
		pri:      fac*8 + severityNotice,
		hostname: header(host, 255),
		appName:  header(c.AppName, 48),
		procID:   strconv.Itoa(os.Getpid()),
	}, nil
}

// header returns s as an RFC 5424 header field: printable ASCII without
// spaces, at most n bytes, "-" when empty.
func header(s string, n int) string {
	b := []byte(s)
	for i, c := range b {
		if c < 33 || c > 126 {
			b[i] = '_'
		}
	}
	if len(b) > n {
		b = b[:n]
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// sdEscape escapes '"', '\' and ']' in a structured-data parameter value.
var sdEscape = strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`)

// format returns the RFC 5424 message for e:
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [mayfly@32473 seq="…" …] JSON
func (s *syslogSink) format(e *mayfly.AuditEvent) ([]byte, error) {
	body, err := encodeLine(e)
	if err != nil {
		return nil, err
	}
	body = bytes.TrimSuffix(body, []byte("\n"))
	var b bytes.Buffer
	fmt.Fprintf(&b, "<%d>1 %s %s %s %s %s [%s", s.pri,
		e.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		s.hostname, s.appName, s.procID, header(e.Action, 32), sdID)
	param := func(name, v string) {
		fmt.Fprintf(&b, ` %s="%s"`, name, sdEscape.Replace(v))
	}
	param("seq", strconv.FormatInt(e.Seq, 10))
	param("actor", e.Actor)
	param("subject", e.Subject)
	if e.Target != "" {
		param("target", e.Target)
	}
	if e.LeaseID != "" {
		param("lease", e.LeaseID)
	}
	if e.RequestID != "" {
		param("request", e.RequestID)
	}
	b.WriteString("] ")
	b.Write(body)
	return b.Bytes(), nil
}

// deliver sends the events. Over TCP the batch goes out in one write of
// octet-counted frames; it counts as delivered once written, since syslog
// has no acknowledgement, so a connection the receiver has closed is
// detected and replaced before writing rather than written into.
func (s *syslogSink) deliver(ctx context.Context, events []*mayfly.AuditEvent) error {
	if s.conn != nil && s.network == "tcp" && peerClosed(s.conn) {
		// A batch written now would be accepted by the kernel and lost.
		s.drop()
	}
	if s.conn == nil {
		d := net.Dialer{Timeout: s.timeout}
		c, err := d.DialContext(ctx, s.network, s.address)
		if err != nil {
			return fmt.Errorf("connect to syslog receiver: %w", err)
		}
		s.conn = c
	}
	deadline := time.Now().Add(s.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := s.conn.SetWriteDeadline(deadline); err != nil {
		s.drop()
		return fmt.Errorf("send to syslog receiver: %w", err)
	}
	var frames []byte
	for _, e := range events {
		msg, err := s.format(e)
		if err != nil {
			return err
		}
		if s.network == "udp" {
			if len(msg) > maxUDPMessage {
				return fmt.Errorf("event %d is %d bytes, too large for a syslog datagram", e.Seq, len(msg))
			}
			if _, err := s.conn.Write(msg); err != nil {
				s.drop()
				return fmt.Errorf("send to syslog receiver: %w", err)
			}
			continue
		}
		frames = strconv.AppendInt(frames, int64(len(msg)), 10)
		frames = append(frames, ' ')
		frames = append(frames, msg...)
	}
	if len(frames) > 0 {
		if _, err := s.conn.Write(frames); err != nil {
			s.drop()
			return fmt.Errorf("send to syslog receiver: %w", err)
		}
	}
	return nil
}

// drop closes the connection after a failure.
func (s *syslogSink) drop() { _ = s.close() }

// close closes the connection.
func (s *syslogSink) close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// peerClosed reports whether the receiver has closed or reset c. Receivers
// never send on the connection, so a read that does not time out at once
// means end of stream or an error. It is checked right before each batch:
// a receiver that went away earlier, even just before, is noticed and the
// batch waits for a new connection instead of vanishing into a dead one.
// (A receiver that dies after a batch is written can still lose it: plain
// TCP syslog has no acknowledgements.)
func peerClosed(c net.Conn) bool {
	if err := c.SetReadDeadline(time.Now().Add(liveCheck)); err != nil {
		return true
	}
	var b [1]byte
	_, err := c.Read(b[:])
	if c.SetReadDeadline(time.Time{}) != nil {
		return true
	}
	if err == nil {
		return false // the receiver sent something; nothing to do with it
	}
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}
