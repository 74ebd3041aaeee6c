package sshgw

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// castChunk is how many bytes of asciicast lines a recording gathers before
// it appends them to the session log as one event; castFlush is how long
// it holds a partial chunk at most.
const (
	castChunk = 32 << 10
	castFlush = 500 * time.Millisecond
)

// CastHeader is the first line of an asciicast v2 recording.
type CastHeader struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp"`
	Command   string            `json:"command,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// CastBody is the body of a "cast" session event: a run of asciicast v2
// lines of one channel. Concatenating the Cast of a channel's chunks in
// order gives the whole recording, header first.
type CastBody struct {
	Channel int    `json:"channel"`
	Part    int    `json:"part"`
	Cast    string `json:"cast"`
}

// cast records one terminal channel as asciicast v2: output ("o"), input
// ("i") and resizes ("r"), with their times since the start. Bytes that end
// in the middle of a UTF-8 sequence wait for the rest, so a character split
// across reads is recorded whole. It hands full chunks to emit, which may
// block: recording is never lossy, it slows the session down instead.
type cast struct {
	channel int
	start   time.Time
	emit    func(CastBody) error

	mu      sync.Mutex
	buf     bytes.Buffer
	part    int
	pending map[string][]byte // incomplete UTF-8 tail per stream
	err     error
	// lastFlush is when the buffer was last handed on.
	lastFlush time.Time
}

func newCast(channel int, start time.Time, h CastHeader, emit func(CastBody) error) *cast {
	c := &cast{channel: channel, start: start, emit: emit, pending: map[string][]byte{}, lastFlush: start}
	h.Version = 2
	h.Timestamp = start.Unix()
	b, _ := json.Marshal(h)
	c.buf.Write(b)
	c.buf.WriteByte('\n')
	return c
}

// event records data on stream kind ("o", "i" or "r") at time at.
func (c *cast) event(at time.Time, kind string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	if kind != "r" {
		data = append(c.pending[kind], data...)
		cut := validPrefix(data)
		c.pending[kind] = append([]byte(nil), data[cut:]...)
		data = data[:cut]
	}
	if len(data) == 0 {
		return nil
	}
	c.line(at, kind, data)
	if c.buf.Len() >= castChunk {
		return c.flushLocked(at)
	}
	return nil
}

func (c *cast) line(at time.Time, kind string, data []byte) {
	t := at.Sub(c.start).Seconds()
	if t < 0 {
		t = 0
	}
	c.buf.WriteByte('[')
	c.buf.WriteString(strconv.FormatFloat(t, 'f', 6, 64))
	c.buf.WriteString(`, "`)
	c.buf.WriteString(kind)
	c.buf.WriteString(`", `)
	writeJSONString(&c.buf, data)
	c.buf.WriteString("]\n")
}

// marker records an asciicast marker ("m") with label at time at, after
// what the streams hold back.
func (c *cast) marker(at time.Time, label string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.line(at, "m", []byte(label))
	if c.buf.Len() >= castChunk {
		return c.flushLocked(at)
	}
	return nil
}

// flushIfStale hands on a partial chunk older than castFlush.
func (c *cast) flushIfStale(now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.buf.Len() == 0 || now.Sub(c.lastFlush) < castFlush {
		return c.err
	}
	return c.flushLocked(now)
}

// close records what is left, invalid UTF-8 tails included (replaced),
// and hands on the last chunk.
func (c *cast) close(at time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	for _, kind := range []string{"o", "i"} {
		if p := c.pending[kind]; len(p) > 0 {
			c.line(at, kind, p)
			c.pending[kind] = nil
		}
	}
	if c.buf.Len() == 0 {
		return nil
	}
	return c.flushLocked(at)
}

func (c *cast) flushLocked(now time.Time) error {
	body := CastBody{Channel: c.channel, Part: c.part, Cast: c.buf.String()}
	c.buf.Reset()
	c.part++
	c.lastFlush = now
	if err := c.emit(body); err != nil {
		c.err = err
	}
	return c.err
}

// validPrefix returns the length of b without a trailing incomplete UTF-8
// sequence (at most 3 bytes held back).
func validPrefix(b []byte) int {
	for i := 1; i <= 3 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < 0x80 {
			return len(b)
		}
		if c >= 0xC0 { // a leading byte: complete?
			if utf8.FullRune(b[len(b)-i:]) {
				return len(b)
			}
			return len(b) - i
		}
	}
	return len(b)
}

// writeJSONString writes b as a JSON string; invalid UTF-8 becomes U+FFFD,
// as every asciicast writer does.
func writeJSONString(w *bytes.Buffer, b []byte) {
	const hex = "0123456789abcdef"
	w.WriteByte('"')
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size == 1:
			w.WriteString(`\ufffd`)
		case r == '"':
			w.WriteString(`\"`)
		case r == '\\':
			w.WriteString(`\\`)
		case r == '\n':
			w.WriteString(`\n`)
		case r == '\r':
			w.WriteString(`\r`)
		case r == '\t':
			w.WriteString(`\t`)
		case r == 0x2028 || r == 0x2029:
			w.WriteString(`\u202`)
			w.WriteByte(hex[r&0xf])
		case r < 0x20 || r == 0x7f:
			w.WriteString(`\u00`)
			w.WriteByte(hex[r>>4])
			w.WriteByte(hex[r&0xf])
		default:
			w.Write(b[:size])
		}
		b = b[size:]
	}
	w.WriteByte('"')
}
