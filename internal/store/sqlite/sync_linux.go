package sqlite

import (
	"os"
	"syscall"
)

// syncData flushes f's data, and of its metadata what reading the data
// back needs (its size), to stable storage: fdatasync, as SQLite itself
// syncs its log, which skips the file's times and so a journal commit of
// the file system.
func syncData(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
