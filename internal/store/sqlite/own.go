package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Own makes the calling process the one server of the SQLite store at
// path until the returned closer is closed or the process ends, however
// it ends: it holds an exclusive flock on path+".lock", beside the store.
//
// The store serves one server process: that process keeps the head of
// the audit chain in memory and, as it starts, undoes the leases a stop
// left in provisioning, which a second server on the same file would take
// from under the first. While another process holds the lock, Own tries
// again for up to wait (a restart whose new process starts while the old
// one still drains), calling waiting once with the holder, unless ctx ends
// first; then it gives up with an ECONFLICT error naming the holder's
// process id. Servers and `mayfly store migrate` take the lock; other
// commands that open the store (doctor, seal rotate-key) do not.
func Own(ctx context.Context, path string, wait time.Duration, waiting func(holder string)) (io.Closer, error) {
	if path == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "sqlite: path of the database file is required")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create store directory: %w", err)
	}
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock store %s: %w", path, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || !time.Now().Before(deadline) {
			break
		}
		if waiting != nil {
			waiting(lockHolder(f))
			waiting = nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock store %s: %w", path, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		holder := lockHolder(f)
		f.Close()
		return nil, mayfly.Errorf(mayfly.ECONFLICT, "store %s is in use by a mayfly server (%s, holding %s); stop it first. A SQLite store serves one server: for several replicas, use a PostgreSQL store (store.postgres, docs/ha.md)", path, holder, name)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock store %s: %w", path, err)
	}
	// The holder's process id, for the message of a server refused.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// lockHolder names the process whose id the lock file f holds.
func lockHolder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n]))); err == nil && pid > 0 {
		return fmt.Sprintf("process %d", pid)
	}
	return "another process"
}
