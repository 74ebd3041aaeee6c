//go:build linux || darwin || freebsd || netbsd || openbsd

package pgpool

import (
	"errors"
	"syscall"
)

// peekQuiet peeks at one byte of rc without waiting and without taking it:
// nothing to read (EAGAIN) is quiet; a byte, the end of the stream or an
// error is not. It goes through Control, not Read, so that it never waits
// for a read in progress on the connection either.
func peekQuiet(rc syscall.RawConn) (q, ok bool) {
	var buf [1]byte
	err := rc.Control(func(fd uintptr) {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		q = n < 0 && (errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK))
	})
	if err != nil {
		// The connection is closed on this side.
		return false, true
	}
	return q, true
}
