package sshgw

import (
	"encoding/binary"
	"sync"
)

// SFTP packet types the reader follows (draft-ietf-secsh-filexfer-02, the
// version OpenSSH speaks).
const (
	fxpOpen     = 3
	fxpClose    = 4
	fxpRead     = 5
	fxpWrite    = 6
	fxpRemove   = 13
	fxpMkdir    = 14
	fxpRmdir    = 15
	fxpRename   = 18
	fxpStatus   = 101
	fxpHandle   = 102
	fxpData     = 103
	fxfWrite    = 0x02
	maxSFTPPkt  = 1 << 20 // larger packets than this stop the reader
	maxSFTPOpen = 1024    // open handles followed at once
)

// Transfer is the body of a "transfer" session event: one file read or
// written through SFTP (or scp), or a file operation.
type Transfer struct {
	Channel  int    `json:"channel"`
	Protocol string `json:"protocol"` // "sftp" or "scp"
	// Op is "read", "write", "remove", "mkdir", "rmdir", "rename" (sftp)
	// or "upload", "download" (scp).
	Op      string `json:"op"`
	Path    string `json:"path,omitempty"`
	NewPath string `json:"new_path,omitempty"`
	// Command is scp's command line on the host.
	Command string `json:"command,omitempty"`
	// BytesRead and BytesWritten count file data: read from the host's
	// file, written to it.
	BytesRead    int64 `json:"bytes_read"`
	BytesWritten int64 `json:"bytes_written"`
	// Status is the SFTP status code of a file operation (0 is success).
	Status *uint32 `json:"status,omitempty"`
	// Incomplete is set when the session ended with the file still open.
	Incomplete bool `json:"incomplete,omitempty"`
}

// sftpReader follows an SFTP conversation passively, from the packets the
// client sends and the host answers, and reports each file when it is
// closed: its path and how many bytes were read and written. It never
// changes or delays the bytes; a stream it cannot parse (a packet over
// maxSFTPPkt, a malformed one) is no longer followed, and reported once.
type sftpReader struct {
	channel int
	report  func(Transfer)

	mu       sync.Mutex
	in, out  stream
	opens    map[uint32]openReq  // request id → OPEN asked
	ops      map[uint32]Transfer // request id → remove/mkdir/rename asked
	reads    map[uint32]string   // READ request id → handle
	closes   map[uint32]string   // CLOSE request id → handle
	handles  map[string]*Transfer
	lost     bool
	reported bool
}

type openReq struct {
	path  string
	flags uint32
}

type stream struct{ buf []byte }

func newSFTPReader(channel int, report func(Transfer)) *sftpReader {
	return &sftpReader{
		channel: channel, report: report, opens: map[uint32]openReq{}, ops: map[uint32]Transfer{},
		reads: map[uint32]string{}, closes: map[uint32]string{}, handles: map[string]*Transfer{},
	}
}

// fromClient and fromHost take the bytes of each direction in order.
func (r *sftpReader) fromClient(p []byte) { r.feed(&r.in, p, r.clientPacket) }
func (r *sftpReader) fromHost(p []byte)   { r.feed(&r.out, p, r.hostPacket) }

func (r *sftpReader) feed(s *stream, p []byte, handle func(typ byte, body []byte) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost {
		return
	}
	s.buf = append(s.buf, p...)
	for len(s.buf) >= 4 {
		n := binary.BigEndian.Uint32(s.buf)
		if n < 1 || n > maxSFTPPkt {
			r.loseLocked()
			return
		}
		if uint32(len(s.buf)-4) < n {
			return
		}
		pkt := s.buf[4 : 4+n]
		if !handle(pkt[0], pkt[1:]) {
			r.loseLocked()
			return
		}
		s.buf = s.buf[4+n:]
	}
	if len(s.buf) == 0 {
		s.buf = nil
	}
}

func (r *sftpReader) loseLocked() {
	r.lost = true
	r.in.buf, r.out.buf = nil, nil
	if !r.reported {
		r.reported = true
		r.report(Transfer{Channel: r.channel, Protocol: "sftp", Op: "unparsed"})
	}
}

// clientPacket follows a request; it reports false when the packet is
// malformed.
func (r *sftpReader) clientPacket(typ byte, b []byte) bool {
	d := decoder{b: b}
	if typ < fxpOpen || typ >= fxpStatus {
		return true // INIT, VERSION and requests the reader does not follow
	}
	id := d.u32()
	switch typ {
	case fxpOpen:
		path := d.str()
		flags := d.u32()
		if d.bad {
			return false
		}
		if len(r.opens) < maxSFTPOpen {
			r.opens[id] = openReq{path: path, flags: flags}
		}
	case fxpClose:
		h := d.str()
		if !d.bad {
			r.closes[id] = h
		}
	case fxpRead:
		h := d.str()
		if !d.bad {
			if _, ok := r.handles[h]; ok {
				r.reads[id] = h
			}
		}
	case fxpWrite:
		h := d.str()
		d.u64()
		n := d.skip()
		if d.bad {
			return false
		}
		if t := r.handles[h]; t != nil {
			t.BytesWritten += int64(n)
		}
	case fxpRemove, fxpMkdir, fxpRmdir:
		p := d.str()
		if d.bad {
			return false
		}
		op := map[byte]string{fxpRemove: "remove", fxpMkdir: "mkdir", fxpRmdir: "rmdir"}[typ]
		if len(r.ops) < maxSFTPOpen {
			r.ops[id] = Transfer{Op: op, Path: p}
		}
	case fxpRename:
		from, to := d.str(), d.str()
		if d.bad {
			return false
		}
		if len(r.ops) < maxSFTPOpen {
			r.ops[id] = Transfer{Op: "rename", Path: from, NewPath: to}
		}
	}
	return !d.bad
}

// hostPacket follows a response.
func (r *sftpReader) hostPacket(typ byte, b []byte) bool {
	if typ < fxpStatus {
		return true
	}
	d := decoder{b: b}
	id := d.u32()
	if d.bad {
		return false
	}
	switch typ {
	case fxpHandle:
		h := d.str()
		if d.bad {
			return false
		}
		if o, ok := r.opens[id]; ok {
			delete(r.opens, id)
			op := "read"
			if o.flags&fxfWrite != 0 {
				op = "write"
			}
			if len(r.handles) < maxSFTPOpen {
				r.handles[h] = &Transfer{Channel: r.channel, Protocol: "sftp", Op: op, Path: o.path}
			}
		}
	case fxpData:
		n := d.skip()
		if d.bad {
			return false
		}
		if h, ok := r.reads[id]; ok {
			delete(r.reads, id)
			if t := r.handles[h]; t != nil {
				t.BytesRead += int64(n)
			}
		}
	case fxpStatus:
		code := d.u32()
		if d.bad {
			return false
		}
		delete(r.opens, id)
		delete(r.reads, id)
		if h, ok := r.closes[id]; ok {
			delete(r.closes, id)
			if t := r.handles[h]; t != nil {
				delete(r.handles, h)
				t.Status = &code
				r.report(*t)
			}
		}
		if t, ok := r.ops[id]; ok {
			delete(r.ops, id)
			t.Channel, t.Protocol, t.Status = r.channel, "sftp", &code
			r.report(t)
		}
	}
	return true
}

// finish reports the files still open when the channel ends.
func (r *sftpReader) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for h, t := range r.handles {
		t.Incomplete = true
		r.report(*t)
		delete(r.handles, h)
	}
}

// decoder reads SSH wire types, remembering whether it ran short.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) u32() uint32 {
	if len(d.b) < 4 {
		d.bad = true
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u64() uint64 {
	if len(d.b) < 8 {
		d.bad = true
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) str() string {
	n := d.u32()
	if d.bad || uint32(len(d.b)) < n {
		d.bad = true
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// skip passes over a string and returns its length.
func (d *decoder) skip() int {
	n := d.u32()
	if d.bad || uint32(len(d.b)) < n {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return int(n)
}
