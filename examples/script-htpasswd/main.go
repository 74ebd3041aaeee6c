//go:build unix

// Command htpasswd-target is a worked example of a Mayfly scripted target.
// It keeps ephemeral accounts in an htpasswd file, the format Apache httpd
// (AuthUserFile) and nginx (auth_basic_user_file) read for HTTP basic
// authentication, so a Mayfly lease becomes a time-limited login to a web
// application behind the proxy.
//
// Each account is two lines of the file:
//
//	# mayfly name perms=read,write expires=2026-01-02T15:04:05Z mark=<64 hex digits>
//	name:bcrypt-hash
//
// The first is a comment, which Apache httpd, nginx and `htpasswd -v` all
// skip (a third field after the hash would not do: `htpasswd -v` reads it
// as part of the hash); mark is the installation's mark Mayfly sent,
// listed back so Mayfly recognises its own accounts, and the application
// behind the proxy may read perms to decide what the user can do. Lines
// Mayfly did not write are kept as they are.
//
// Mayfly runs the command once per operation with a JSON request on stdin
// (see docs/connectors/script.md):
//
//	htpasswd-target -file /etc/nginx/mayfly.htpasswd
//
// The grant's "permissions" param (comma-separated words, default "read")
// is stored in the comment; an account with "admin" is reported as a
// superuser.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// bcryptCost is low on purpose: Mayfly's passwords carry 256 random bits,
// so a slow hash adds no protection, only latency.
const bcryptCost = bcrypt.MinCost

var (
	validName  = regexp.MustCompile(`^[a-z0-9_]{1,32}$`)
	validPerms = regexp.MustCompile(`^[a-z]+(,[a-z]+)*$`)
	validMark  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// request is the JSON document Mayfly writes on stdin.
type request struct {
	Operation string            `json:"operation"`
	Username  string            `json:"username"`
	Password  string            `json:"password"`
	Params    map[string]string `json:"params"`
	ExpiresAt string            `json:"expires_at"`
	Prefix    *string           `json:"prefix"`
	Mark      string            `json:"mark"`
}

type account struct {
	Name       string   `json:"name"`
	CanLogin   bool     `json:"can_login"`
	Superuser  bool     `json:"superuser"`
	Privileges []string `json:"privileges,omitempty"`
	Sessions   int      `json:"sessions"`
	Mark       string   `json:"mark,omitempty"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("htpasswd-target", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "htpasswd file to manage")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "htpasswd-target: -file is required")
		return 2
	}
	var req request
	dec := json.NewDecoder(stdin)
	if err := dec.Decode(&req); err != nil {
		fmt.Fprintf(stderr, "htpasswd-target: read request: %v\n", err)
		return 2
	}
	if err := handle(*file, req, stdout); err != nil {
		fmt.Fprintf(stderr, "htpasswd-target: %s: %v\n", req.Operation, err)
		return 1
	}
	return 0
}

func handle(file string, req request, stdout io.Writer) error {
	switch req.Operation {
	case "provision", "revoke":
		if !validName.MatchString(req.Username) {
			return fmt.Errorf("invalid username %q", req.Username)
		}
	}
	switch req.Operation {
	case "provision":
		perms := req.Params["permissions"]
		if perms == "" {
			perms = "read"
		}
		if !validPerms.MatchString(perms) {
			return fmt.Errorf("invalid permissions %q", perms)
		}
		if req.Password == "" {
			return errors.New("no password in request")
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(req.Password), bcryptCost)
		if err != nil {
			return err
		}
		comment := "perms=" + perms
		if req.ExpiresAt != "" {
			if _, err := time.Parse(time.RFC3339, req.ExpiresAt); err != nil {
				return fmt.Errorf("invalid expires_at %q", req.ExpiresAt)
			}
			comment += " expires=" + req.ExpiresAt
		}
		if req.Mark != "" {
			// Kept with the account and listed back, so Mayfly knows it
			// made the account even after losing its store.
			if !validMark.MatchString(req.Mark) {
				return fmt.Errorf("invalid mark %q", req.Mark)
			}
			comment += " mark=" + req.Mark
		}
		return update(file, func(lines []string) []string {
			// The same lease again replaces the password.
			lines = remove(lines, req.Username)
			return append(lines, metaPrefix+req.Username+" "+comment, req.Username+":"+string(hash))
		})
	case "revoke":
		return update(file, func(lines []string) []string { return remove(lines, req.Username) })
	case "accounts":
		lines, err := read(file)
		if err != nil {
			return err
		}
		meta := metaOf(lines)
		accts := []account{}
		for _, l := range lines {
			name, hash, comment := split(l)
			if m, ok := meta[name]; ok {
				comment = m
			}
			if name == "" || (req.Prefix != nil && !strings.HasPrefix(name, *req.Prefix)) {
				continue
			}
			perms := permsOf(comment)
			accts = append(accts, account{
				Name:       name,
				CanLogin:   hash != "" && !strings.HasPrefix(hash, "!"),
				Superuser:  slices.Contains(perms, "admin"),
				Privileges: perms,
				Mark:       field(comment, "mark"),
			})
		}
		return json.NewEncoder(stdout).Encode(accts)
	case "check":
		dir := filepath.Dir(file)
		if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
			return fmt.Errorf("directory %s is not writable: %w", dir, err)
		}
		_, err := read(file)
		return err
	}
	return fmt.Errorf("unknown operation %q", req.Operation)
}

// metaPrefix starts the comment line that describes the account on the
// next line.
const metaPrefix = "# mayfly "

// metaOf returns the comments of the accounts Mayfly wrote, by name.
func metaOf(lines []string) map[string]string {
	m := map[string]string{}
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, metaPrefix); ok {
			name, comment, _ := strings.Cut(rest, " ")
			m[name] = comment
		}
	}
	return m
}

// remove drops the account name and its comment line.
func remove(lines []string, name string) []string {
	return slices.DeleteFunc(lines, func(l string) bool {
		if rest, ok := strings.CutPrefix(l, metaPrefix); ok {
			n, _, _ := strings.Cut(rest, " ")
			return n == name
		}
		return nameOf(l) == name
	})
}

// split reads an account line; a third field (written by earlier versions
// of this example) is read as its comment.
func split(line string) (name, hash, comment string) {
	name, rest, ok := strings.Cut(line, ":")
	if !ok || strings.HasPrefix(line, "#") {
		return "", "", ""
	}
	hash, comment, _ = strings.Cut(rest, ":")
	return name, hash, comment
}

func nameOf(line string) string {
	n, _, _ := split(line)
	return n
}

func permsOf(comment string) []string {
	if p := field(comment, "perms"); p != "" {
		return strings.Split(p, ",")
	}
	return nil
}

// field returns the value of key=value in comment, "" when absent.
func field(comment, key string) string {
	for f := range strings.FieldsSeq(comment) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// read returns the lines of file; a missing file has none.
func read(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}

// update rewrites file under an exclusive lock, atomically: readers (the web
// server) see the old or the new file, never half of one.
func update(file string, change func([]string) []string) error {
	lock, err := os.OpenFile(file+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", file, err)
	}
	lines, err := read(file)
	if err != nil {
		return err
	}
	mode := os.FileMode(0o640)
	if fi, err := os.Stat(file); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".htpasswd-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	var buf bytes.Buffer
	for _, l := range change(lines) {
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}
