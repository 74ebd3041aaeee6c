package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mayflyhq/mayfly"
)

// fileSink appends events as JSON lines to a file, rotating it by size.
type fileSink struct {
	path     string
	maxBytes int64
	maxFiles int

	f    *os.File // nil until opened, and after a failure
	size int64
}

func newFileSink(c Config) *fileSink {
	return &fileSink{path: c.Path, maxBytes: c.MaxBytes, maxFiles: c.MaxFiles}
}

// encodeLine returns the JSON line of e.
func encodeLine(e *mayfly.AuditEvent) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil { // Encode appends the newline
		return nil, fmt.Errorf("encode event %d: %w", e.Seq, err)
	}
	return b.Bytes(), nil
}

// deliver appends the events and fsyncs. A file that would grow past
// maxBytes is rotated first, so each file ends on a whole event. When a
// write fails the file is truncated back to its last synced size, so a
// retry never leaves a partial line behind.
func (s *fileSink) deliver(_ context.Context, events []*mayfly.AuditEvent) error {
	if err := s.open(); err != nil {
		return err
	}
	var buf []byte
	for _, e := range events {
		line, err := encodeLine(e)
		if err != nil {
			return err
		}
		if s.size+int64(len(buf)+len(line)) > s.maxBytes && s.size+int64(len(buf)) > 0 {
			if err := s.write(buf); err != nil {
				return err
			}
			buf = buf[:0]
			if err := s.rotate(); err != nil {
				return err
			}
		}
		buf = append(buf, line...)
	}
	return s.write(buf)
}

// open opens the file for appending unless it is already open and still
// the file at path (someone may have moved or removed it).
func (s *fileSink) open() error {
	if s.f != nil {
		a, errA := s.f.Stat()
		b, errB := os.Stat(s.path)
		if errA == nil && errB == nil && os.SameFile(a, b) {
			return nil
		}
		s.f.Close()
		s.f = nil
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open audit file: %w", err)
	}
	s.f, s.size = f, st.Size()
	return nil
}

// write appends b and fsyncs.
func (s *fileSink) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, err := s.f.Write(b)
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		// Best effort: drop a partial batch so the retry starts on a line
		// boundary, then reopen next time.
		_ = s.f.Truncate(s.size)
		_ = s.f.Close()
		s.f = nil
		return fmt.Errorf("write audit file: %w", err)
	}
	s.size += int64(len(b))
	return nil
}

// rotate renames path.i to path.i+1 (dropping path.maxFiles), path to
// path.1, and opens a new path.
func (s *fileSink) rotate() error {
	if err := s.f.Close(); err != nil {
		s.f = nil
		return fmt.Errorf("rotate audit file: %w", err)
	}
	s.f = nil
	// Files beyond maxFiles (left by a larger setting) go first.
	for i := s.maxFiles; ; i++ {
		if err := os.Remove(s.numbered(i)); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("rotate audit file: %w", err)
			}
			if i > s.maxFiles {
				break
			}
		}
	}
	for i := s.maxFiles - 1; i >= 1; i-- {
		if err := os.Rename(s.numbered(i), s.numbered(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate audit file: %w", err)
		}
	}
	if err := os.Rename(s.path, s.numbered(1)); err != nil {
		return fmt.Errorf("rotate audit file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		d.Sync() // make the renames durable; not all systems support it
		d.Close()
	}
	return s.open()
}

func (s *fileSink) numbered(i int) string { return fmt.Sprintf("%s.%d", s.path, i) }

func (s *fileSink) close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
