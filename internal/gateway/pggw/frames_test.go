package pggw

import (
	"bytes"
	"encoding/binary"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

type seen struct {
	typ  byte
	body string
}

// stream encodes msgs as a client sends them after start-up.
func stream(t testing.TB, msgs ...pgproto3.FrontendMessage) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// feedChunks feeds p to f in pieces of at most size bytes and returns the
// wanted messages it reported.
func feedChunks(f *frames, p []byte, size int) ([]seen, error) {
	var out []seen
	for len(p) > 0 {
		k := min(size, len(p))
		err := f.feed(p[:k], func(typ byte, body []byte) error {
			out = append(out, seen{typ, string(body)})
			return nil
		})
		if err != nil {
			return out, err
		}
		p = p[k:]
	}
	return out, nil
}

// TestFrames: however the stream is cut into reads, the wanted messages
// come out whole, in order, and decode to what was sent; the others are
// skipped.
func TestFrames(t *testing.T) {
	big := strings.Repeat("x", 70_000)
	b := stream(t,
		&pgproto3.Parse{Name: "s1", Query: "SELECT $1::int"},
		&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("42")}},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.CopyData{Data: []byte(big)},
		&pgproto3.Query{String: big},
		&pgproto3.Flush{},
		&pgproto3.Terminate{},
	)
	var want []seen
	for _, size := range []int{len(b), 1, 2, 3, 5, 7, 4096, 65536} {
		f := newFrames(frontendTypes, clientWanted, maxBody)
		got, err := feedChunks(f, b, size)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if want == nil {
			want = got
			var types []byte
			for _, s := range got {
				types = append(types, s.typ)
			}
			if string(types) != "PBESQX" {
				t.Fatalf("wanted messages %q, want PBESQX", types)
			}
			var q pgproto3.Query
			if err := q.Decode([]byte(got[4].body)); err != nil || q.String != big {
				t.Fatalf("the large query did not decode whole: %v", err)
			}
			var bd pgproto3.Bind
			if err := bd.Decode([]byte(got[1].body)); err != nil || string(bd.Parameters[0]) != "42" {
				t.Fatalf("bind: %v %q", err, bd.Parameters)
			}
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("reads of %d bytes: messages differ from one read", size)
		}
	}
}

// TestFramesRefuses: an unknown type or a length below 4 or above the
// bound ends the stream with an error.
func TestFramesRefuses(t *testing.T) {
	msg := func(typ byte, n uint32) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	for name, b := range map[string][]byte{
		"unknown type": msg('z', 4),
		"short length": msg('Q', 3),
		"too long":     msg('Q', 1<<20+5),
	} {
		f := newFrames(frontendTypes, clientWanted, 1<<20)
		if _, err := feedChunks(f, b, len(b)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// The server's side takes any type.
	f := newFrames("", serverWanted, 0)
	if _, err := feedChunks(f, msg('z', 4), 5); err != nil {
		t.Errorf("server side: %v", err)
	}
}

// FuzzFrames: any stream, cut anywhere, gives the same messages as in one
// read, or the same error.
func FuzzFrames(f *testing.F) {
	f.Add(stream(f, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Sync{}), 3)
	f.Add([]byte{'Q', 0, 0, 0, 4, 'X', 0, 0, 0, 4}, 1)
	f.Fuzz(func(t *testing.T, b []byte, size int) {
		if size <= 0 {
			size = 1
		}
		one, err1 := feedChunks(newFrames(frontendTypes, clientWanted, 1<<16), b, len(b)+1)
		cut, err2 := feedChunks(newFrames(frontendTypes, clientWanted, 1<<16), b, size)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("one read: %v; reads of %d: %v", err1, size, err2)
		}
		if !reflect.DeepEqual(one, cut) {
			t.Fatalf("reads of %d bytes: %v, one read: %v", size, cut, one)
		}
		for _, s := range one {
			if !strings.ContainsRune(clientWanted, rune(s.typ)) {
				t.Fatalf("unwanted message %q reported", s.typ)
			}
		}
	})
}

// TestBoundedReader: pgproto3 reading start-up and authentication
// messages through boundedReader leaves every later byte unread.
func TestBoundedReader(t *testing.T) {
	var b []byte
	b, _ = (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}}).Encode(b)
	b, _ = (&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abc")}).Encode(b)
	rest := stream(t, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Terminate{})
	src := bytes.NewReader(append(b, rest...))
	br := &boundedReader{r: src}
	be := pgproto3.NewBackend(br, io.Discard)
	if m, err := be.ReceiveStartupMessage(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*pgproto3.StartupMessage); !ok {
		t.Fatalf("got %T", m)
	}
	br.typed = true
	be.SetAuthType(pgproto3.AuthTypeSASL)
	if m, err := be.Receive(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*pgproto3.SASLInitialResponse); !ok {
		t.Fatalf("got %T", m)
	}
	left, _ := io.ReadAll(src)
	if !bytes.Equal(left, rest) {
		t.Fatalf("%d bytes left unread, want the %d after authentication", len(left), len(rest))
	}
}
