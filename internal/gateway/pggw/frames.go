package pggw

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The relay passes the bytes of each direction on as they were read, in
// one write per read, and follows the message boundaries beside them: only
// the messages the session log needs are decoded (with pgproto3's own
// decoders), the rest (rows, descriptions, COPY data, notices) are never
// parsed or copied. PostgreSQL frames every message after start-up as a
// type byte and a 4-byte big-endian length that counts itself.

// frontendTypes are the message types a client may send after start-up
// (what pgproto3's Backend accepts); any other ends the connection.
const frontendTypes = "BCDEFHPQSXcdfp"

// clientWanted and serverWanted are the types the tracker reads.
const (
	clientWanted = "BCEFPQSX"
	serverWanted = "CEIZs"
)

// frames follows one direction's message boundaries.
type frames struct {
	valid   *[256]bool // nil: any type
	want    [256]bool
	maxBody int // 0: no bound (the server's side, as pgx reads it)

	hdr    [5]byte
	nhdr   int
	typ    byte
	remain int  // body bytes of the current message not yet seen
	keep   bool // the current message is wanted: its body is gathered
	body   []byte
}

func newFrames(valid, want string, maxBody int) *frames {
	f := &frames{maxBody: maxBody}
	if valid != "" {
		f.valid = new([256]bool)
		for i := range len(valid) {
			f.valid[valid[i]] = true
		}
	}
	for i := range len(want) {
		f.want[want[i]] = true
	}
	return f
}

// feed follows p, the next bytes of the stream, calling msg with each
// wanted message once it is whole. body is valid only during the call.
func (f *frames) feed(p []byte, msg func(typ byte, body []byte) error) error {
	for len(p) > 0 {
		if f.nhdr < len(f.hdr) {
			k := copy(f.hdr[f.nhdr:], p)
			f.nhdr += k
			p = p[k:]
			if f.nhdr < len(f.hdr) {
				return nil
			}
			f.typ = f.hdr[0]
			if f.valid != nil && !f.valid[f.typ] {
				return fmt.Errorf("unknown message type %q", f.typ)
			}
			n := int64(binary.BigEndian.Uint32(f.hdr[1:])) - 4
			if n < 0 || (f.maxBody > 0 && n > int64(f.maxBody)) {
				return fmt.Errorf("message %q has an invalid length %d", f.typ, n+4)
			}
			f.remain, f.keep = int(n), f.want[f.typ]
			f.body = f.body[:0]
			if f.remain > 0 {
				continue
			}
		} else {
			k := min(len(p), f.remain)
			if f.keep {
				if len(f.body) == 0 && k == f.remain {
					// Whole in this read: no copy.
					f.remain = 0
					f.nhdr = 0
					if err := msg(f.typ, p[:k]); err != nil {
						return err
					}
					p = p[k:]
					continue
				}
				f.body = append(f.body, p[:k]...)
			}
			f.remain -= k
			p = p[k:]
			if f.remain > 0 {
				return nil
			}
		}
		// The message is whole.
		f.nhdr = 0
		if f.keep {
			if err := msg(f.typ, f.body); err != nil {
				return err
			}
			if cap(f.body) > 1<<20 {
				f.body = nil
			}
		}
	}
	return nil
}

// boundedReader reads a client's start-up messages without reading past
// the end of the message being read, so that no byte sent after them is
// left in pgproto3's buffer when the relay takes the connection over.
type boundedReader struct {
	r      io.Reader
	typed  bool // after the start-up message: a type byte leads each message
	hdr    [5]byte
	nhdr   int
	remain int
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	hl := 4
	if b.typed {
		hl = 5
	}
	if b.remain == 0 {
		// A header, or the rest of one.
		n, err := b.r.Read(p[:min(len(p), hl-b.nhdr)])
		copy(b.hdr[b.nhdr:], p[:n])
		b.nhdr += n
		if b.nhdr == hl {
			// An invalid length is pgproto3's to refuse.
			b.remain = max(int(binary.BigEndian.Uint32(b.hdr[hl-4:hl]))-4, 0)
			b.nhdr = 0
		}
		return n, err
	}
	n, err := b.r.Read(p[:min(len(p), b.remain)])
	b.remain -= n
	return n, err
}
