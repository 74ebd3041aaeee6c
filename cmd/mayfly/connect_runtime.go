package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// connectDir makes the directory of one `mayfly connect` session's files
// (an SSH key and certificate, a MySQL option file): inside a private
// runtime directory ($XDG_RUNTIME_DIR/mayfly, else /tmp/mayfly-UID, 0700,
// ours alone), named after this process, so that the files of a session
// killed before it could clean up (SIGKILL, a crash) are found and removed
// by the next run.
func connectDir(getenv func(string) string) (string, error) {
	base := filepath.Join(os.TempDir(), "mayfly-"+strconv.Itoa(os.Getuid()))
	if rt := getenv("XDG_RUNTIME_DIR"); rt != "" && filepath.IsAbs(rt) {
		base = filepath.Join(rt, "mayfly")
	}
	if err := os.Mkdir(base, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("connect: runtime directory: %w", err)
	}
	fi, err := os.Lstat(base)
	if err != nil {
		return "", fmt.Errorf("connect: runtime directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() {
		return "", fmt.Errorf("connect: runtime directory %s is not a directory of this user's: refusing to keep credentials there", base)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(base, 0o700); err != nil {
			return "", fmt.Errorf("connect: runtime directory: %w", err)
		}
	}
	clearStale(base)
	return os.MkdirTemp(base, "connect-"+strconv.Itoa(os.Getpid())+"-")
}

// clearStale removes the session directories of connect processes that
// are gone.
func clearStale(base string) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "connect-")
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
}

// withSSHOptions returns command with the session's SSH options put after
// the program's name when it is OpenSSH's ssh, scp or sftp (which take the
// same -i and -o options), so `mayfly connect host/grant -- ssh user@host`
// uses the lease's key, certificate and pinned host key as the default
// client does. Other commands get them through the MAYFLY_SSH_*
// variables (MAYFLY_SSH_CONFIG for `ssh -F`).
func withSSHOptions(command, opts []string) []string {
	if len(command) == 0 || len(opts) == 0 {
		return command
	}
	switch filepath.Base(command[0]) {
	case "ssh", "scp", "sftp":
	default:
		return command
	}
	out := append([]string{command[0]}, opts...)
	return append(out, command[1:]...)
}
