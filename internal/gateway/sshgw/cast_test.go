package sshgw

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestCastKeepsSplitCharactersWhole(t *testing.T) {
	start := time.Unix(1700000000, 0)
	var parts []CastBody
	c := newCast(3, start, CastHeader{Width: 80, Height: 24, Env: map[string]string{"TERM": "xterm"}}, func(b CastBody) error {
		parts = append(parts, b)
		return nil
	})
	snow := []byte("héllo ☃ \x1b[1mbold\x1b[0m \"q\" \\ \t\u2028")
	// Split inside the snowman (3 bytes) and inside é.
	i := bytes.Index(snow, []byte("☃")) + 1
	c.event(start.Add(10*time.Millisecond), "o", snow[:2])
	c.event(start.Add(20*time.Millisecond), "o", snow[2:i])
	c.event(start.Add(30*time.Millisecond), "o", snow[i:])
	c.event(start.Add(40*time.Millisecond), "r", []byte("100x40"))
	c.event(start.Add(50*time.Millisecond), "i", []byte{0xff, 'x'})
	c.close(start.Add(time.Second))
	if len(parts) != 1 || parts[0].Channel != 3 || parts[0].Part != 0 {
		t.Fatalf("parts = %+v", parts)
	}
	h, evs := parseCast(t, parts[0].Cast)
	if h.Version != 2 || h.Width != 80 || h.Timestamp != start.Unix() || h.Env["TERM"] != "xterm" {
		t.Errorf("header = %+v", h)
	}
	var out strings.Builder
	for _, e := range evs {
		if e.kind == "o" {
			if !utf8.ValidString(e.data) {
				t.Errorf("event %q is not valid UTF-8", e.data)
			}
			out.WriteString(e.data)
		}
	}
	if out.String() != string(snow) {
		t.Errorf("output = %q; want %q", out.String(), snow)
	}
	last := evs[len(evs)-1]
	if last.kind != "i" || last.data != "\ufffdx" || last.t != 0.05 {
		t.Errorf("last event = %+v; want invalid byte replaced at 0.05", last)
	}
	if evs[len(evs)-2].kind != "r" || evs[len(evs)-2].data != "100x40" {
		t.Errorf("resize event = %+v", evs[len(evs)-2])
	}
}

func TestCastChunksChainInOrder(t *testing.T) {
	start := time.Now()
	var all strings.Builder
	n := 0
	c := newCast(0, start, CastHeader{Width: 80, Height: 24}, func(b CastBody) error {
		if b.Part != n {
			t.Fatalf("part %d; want %d", b.Part, n)
		}
		n++
		all.WriteString(b.Cast)
		return nil
	})
	line := bytes.Repeat([]byte("x"), 1000)
	for i := range 200 {
		c.event(start.Add(time.Duration(i)*time.Millisecond), "o", line)
	}
	c.close(start.Add(time.Second))
	if n < 6 {
		t.Errorf("%d chunks for 200 KB; want chunks of about %d bytes", n, castChunk)
	}
	_, evs := parseCast(t, all.String())
	if len(evs) != 200 {
		t.Errorf("%d events; want 200", len(evs))
	}
}

func TestWriteJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"plain", "\x00\x01\x1f\x7f", "\"\\/", "\u2028\u2029", "日本語", "\xff\xfe", "a\nb\rc\td"} {
		var b bytes.Buffer
		writeJSONString(&b, []byte(s))
		var got string
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("writeJSONString(%q) = %s: %v", s, b.String(), err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if s == "\xff\xfe" {
			want = "\ufffd\ufffd"
		}
		if got != want {
			t.Errorf("writeJSONString(%q) decodes to %q; want %q", s, got, want)
		}
	}
}

// sftpPacket builds one SFTP packet of type typ from its fields.
func sftpPacket(typ byte, fields ...any) []byte {
	var body []byte
	body = append(body, typ)
	for _, f := range fields {
		switch v := f.(type) {
		case uint32:
			body = binary.BigEndian.AppendUint32(body, v)
		case uint64:
			body = binary.BigEndian.AppendUint64(body, v)
		case string:
			body = binary.BigEndian.AppendUint32(body, uint32(len(v)))
			body = append(body, v...)
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func TestSFTPReaderFollowsFiles(t *testing.T) {
	var got []Transfer
	r := newSFTPReader(1, func(tr Transfer) { got = append(got, tr) })
	type step struct {
		fromClient bool
		pkt        []byte
	}
	steps := []step{
		{true, sftpPacket(1, uint32(3))},  // INIT
		{false, sftpPacket(2, uint32(3))}, // VERSION
		{true, sftpPacket(fxpOpen, uint32(1), "/etc/motd", uint32(1), uint32(0))},
		{false, sftpPacket(fxpHandle, uint32(1), "h1")},
		{true, sftpPacket(fxpRead, uint32(2), "h1", uint64(0), uint32(32768))},
		{false, sftpPacket(fxpData, uint32(2), "hello world")},
		{true, sftpPacket(fxpClose, uint32(3), "h1")},
		{false, sftpPacket(fxpStatus, uint32(3), uint32(0), "", "")},
		{true, sftpPacket(fxpOpen, uint32(4), "/tmp/up", uint32(0x1a), uint32(0))},
		{false, sftpPacket(fxpHandle, uint32(4), "h2")},
		{true, append(sftpPacket(fxpWrite, uint32(5), "h2", uint64(0), "abcdef"), sftpPacket(fxpWrite, uint32(6), "h2", uint64(6), "gh")...)},
		{true, sftpPacket(fxpRename, uint32(7), "/tmp/a", "/tmp/b")},
		{false, sftpPacket(fxpStatus, uint32(7), uint32(4), "Failure", "")},
	}
	for _, st := range steps {
		// Bytes arrive in arbitrary pieces.
		for i := 0; i < len(st.pkt); i += 5 {
			piece := st.pkt[i:min(i+5, len(st.pkt))]
			if st.fromClient {
				r.fromClient(piece)
			} else {
				r.fromHost(piece)
			}
		}
	}
	r.finish()
	if len(got) != 3 {
		t.Fatalf("transfers = %+v; want 3", got)
	}
	if g := got[0]; g.Op != "read" || g.Path != "/etc/motd" || g.BytesRead != 11 || g.Status == nil || *g.Status != 0 {
		t.Errorf("first = %+v; want read of /etc/motd, 11 bytes", g)
	}
	if g := got[1]; g.Op != "rename" || g.Path != "/tmp/a" || g.NewPath != "/tmp/b" || *g.Status != 4 {
		t.Errorf("second = %+v; want failed rename", g)
	}
	if g := got[2]; g.Op != "write" || g.Path != "/tmp/up" || g.BytesWritten != 8 || !g.Incomplete {
		t.Errorf("third = %+v; want incomplete write of 8 bytes", g)
	}
}

func TestSFTPReaderGivesUpOnGarbage(t *testing.T) {
	var got []Transfer
	r := newSFTPReader(0, func(tr Transfer) { got = append(got, tr) })
	r.fromClient([]byte{0xff, 0xff, 0xff, 0xff, 1})
	r.fromClient(sftpPacket(fxpOpen, uint32(1), "/x", uint32(1), uint32(0)))
	if len(got) != 1 || got[0].Op != "unparsed" {
		t.Fatalf("got %+v; want one unparsed report", got)
	}
}

func FuzzSFTPReader(f *testing.F) {
	f.Add(sftpPacket(fxpOpen, uint32(1), "/etc/passwd", uint32(1), uint32(0)), sftpPacket(fxpHandle, uint32(1), "h"))
	f.Add(sftpPacket(fxpWrite, uint32(5), "h2", uint64(0), "abcdef"), sftpPacket(fxpStatus, uint32(5), uint32(0)))
	f.Add([]byte{0, 0, 0, 1, fxpClose}, []byte{0, 0, 0, 5, fxpData, 0, 0})
	f.Fuzz(func(t *testing.T, in, out []byte) {
		r := newSFTPReader(0, func(Transfer) {})
		r.fromClient(in)
		r.fromHost(out)
		r.fromClient(in)
		r.finish()
		if len(r.handles) > maxSFTPOpen || len(r.opens) > maxSFTPOpen {
			t.Fatalf("reader follows %d handles", len(r.handles))
		}
	})
}

func FuzzCast(f *testing.F) {
	f.Add([]byte("héllo\x1b[0m"), []byte{0xe2, 0x98})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var all strings.Builder
		start := time.Now()
		c := newCast(0, start, CastHeader{Width: 80, Height: 24}, func(cb CastBody) error { all.WriteString(cb.Cast); return nil })
		c.event(start, "o", a)
		c.event(start, "o", b)
		c.close(start)
		for i, line := range strings.Split(strings.TrimSuffix(all.String(), "\n"), "\n") {
			var v any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Fatalf("line %d %q is not JSON: %v", i, line, err)
			}
		}
	})
}

func TestIsSCP(t *testing.T) {
	for cmd, want := range map[string]bool{
		"scp -t /tmp/x": true, "scp -r -f dir": true, "/usr/bin/scp -v -t .": true,
		"scp": false, "ls -t": false, "scpx -t a": false, "echo scp -t": false,
	} {
		if got := isSCP(cmd); got != want {
			t.Errorf("isSCP(%q) = %v; want %v", cmd, got, want)
		}
	}
}
