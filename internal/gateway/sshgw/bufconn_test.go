package sshgw

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestBufConnWriteBehind: what is written arrives whole and in order, the
// bytes queued at Close included; a peer that is gone makes a later Write
// fail; Close returns when the peer never reads.
func TestBufConnWriteBehind(t *testing.T) {
	t.Run("order and close", func(t *testing.T) {
		a, b := net.Pipe()
		bc := readAhead(a)
		want := make([]byte, 3<<20)
		rand.Read(want)
		got := make(chan []byte)
		go func() {
			all, _ := io.ReadAll(b)
			got <- all
		}()
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 1+len(rest)%40000)
			if _, err := bc.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := bc.Close(); err != nil {
			t.Fatal(err)
		}
		if g := <-got; !bytes.Equal(g, want) {
			t.Fatalf("the peer read %d bytes, not the %d written in order", len(g), len(want))
		}
		if _, err := bc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after Close = %v; want net.ErrClosed", err)
		}
	})
	t.Run("peer gone", func(t *testing.T) {
		a, b := net.Pipe()
		bc := readAhead(a)
		b.Close()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := bc.Write(make([]byte, 1024)); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("writes to a closed peer still succeed after 5 s")
			}
			time.Sleep(time.Millisecond)
		}
		bc.Close()
	})
	t.Run("peer never reads", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		bc := readAhead(a)
		bc.Write(make([]byte, 64<<10)) // queued; the pipe never drains
		start := time.Now()
		bc.Close()
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("Close took %s with a peer that never reads", d)
		}
	})
}
