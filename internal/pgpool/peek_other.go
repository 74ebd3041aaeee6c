//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package pgpool

import "syscall"

// peekQuiet cannot look at a socket here: the pool falls back to its
// default check.
func peekQuiet(syscall.RawConn) (q, ok bool) { return false, false }
