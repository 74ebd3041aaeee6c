package sink

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/mayflyhq/mayfly"
)

// readLines decodes the JSON lines of the given files, in order.
func readLines(t *testing.T, paths ...string) []*mayfly.AuditEvent {
	t.Helper()
	var out []*mayfly.AuditEvent
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e mayfly.AuditEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("%s: line %q: %v", p, sc.Text(), err)
			}
			out = append(out, &e)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func fileLen(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}

func TestFileSink(t *testing.T) {
	db := openStore(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	want := appendEvents(t, db, 250)
	r := newRunner(t, db, nil, Config{Name: "local", Type: "file", Path: path})
	start(t, r)
	waitFor(t, "250 lines", func() bool { return fileLen(path) == 250 })

	got := readLines(t, path)
	for i := range want {
		// The decoded event must equal the stored one field by field, and
		// still verify against its hash.
		if !reflect.DeepEqual(got[i].Data, want[i].Data) || got[i].Seq != want[i].Seq || got[i].Actor != want[i].Actor ||
			got[i].Reason != want[i].Reason || !got[i].Time.Equal(want[i].Time) || got[i].Hash != want[i].Hash {
			t.Fatalf("line %d = %+v; want %+v", i, got[i], want[i])
		}
		if h := got[i].ComputeHash(); h != want[i].Hash {
			t.Fatalf("line %d: hash of the decoded event = %s; want %s", i, h, want[i].Hash)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("file mode = %v; want %v", got, want)
	}
	waitFor(t, "cursor 250", func() bool { return storedCursor(t, db, "local") == "250" })
	if got := r.Backlog()["local"]; got != 0 {
		t.Errorf("Backlog = %d; want 0", got)
	}
}

func TestFileRotation(t *testing.T) {
	db := openStore(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	const maxBytes, maxFiles, n = 4000, 3, 400
	appendEvents(t, db, n)
	r := newRunner(t, db, nil, Config{Name: "local", Type: "file", Path: path, MaxBytes: maxBytes, MaxFiles: maxFiles, BatchSize: 37})
	start(t, r)
	waitFor(t, "all events delivered", func() bool { return storedCursor(t, db, "local") == fmt.Sprint(n) })

	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"audit.log", "audit.log.1", "audit.log.2", "audit.log.3"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("files = %v; want %v", names, want)
	}
	for _, name := range names {
		st, err := os.Stat(filepath.Join(filepath.Dir(path), name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > maxBytes {
			t.Errorf("%s is %d bytes; want at most %d", name, st.Size(), maxBytes)
		}
	}
	// Oldest to newest, the kept files hold the last events without a gap.
	got := seqs(readLines(t, path+".3", path+".2", path+".1", path))
	if len(got) == 0 || got[len(got)-1] != n {
		t.Fatalf("last event kept = %v; want %d", got, n)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("kept events %v are not contiguous", got)
		}
	}
	if len(got) < 3*maxBytes/400 {
		t.Errorf("kept %d events; rotated files look nearly empty", len(got))
	}
}

// TestFileUnwritable keeps the file's directory missing for a while: the
// sink retries, the cursor stays put, and once the directory exists every
// event arrives once, in order.
func TestFileUnwritable(t *testing.T) {
	db := openStore(t)
	dir := filepath.Join(t.TempDir(), "later")
	path := filepath.Join(dir, "audit.log")
	appendEvents(t, db, 120)
	r := newRunner(t, db, nil, Config{Name: "local", Type: "file", Path: path, BatchSize: 50})
	start(t, r)
	waitFor(t, "backlog 120", func() bool { return r.Backlog()["local"] == 120 })
	appendEvents(t, db, 30)
	r.Notify()
	waitFor(t, "backlog 150", func() bool { return r.Backlog()["local"] == 150 })
	if got := storedCursor(t, db, "local"); got != "" {
		t.Fatalf("cursor while the file is unwritable = %q; want none", got)
	}

	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "150 lines", func() bool { return fileLen(path) >= 150 && storedCursor(t, db, "local") == "150" })
	if got, want := seqs(readLines(t, path)), seqs(allEvents(t, db)); !reflect.DeepEqual(got, want) {
		t.Fatalf("delivered %v; want %v", got, want)
	}
	if got := r.Backlog()["local"]; got != 0 {
		t.Errorf("Backlog = %d; want 0", got)
	}
}

// TestFileMovedAway checks that a file moved away by an outside tool is
// replaced rather than written to under its old name.
func TestFileMovedAway(t *testing.T) {
	db := openStore(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	appendEvents(t, db, 10)
	r := newRunner(t, db, nil, Config{Name: "local", Type: "file", Path: path})
	start(t, r)
	waitFor(t, "10 lines", func() bool { return fileLen(path) == 10 })
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, db, 5)
	r.Notify()
	waitFor(t, "5 lines in a new file", func() bool { return fileLen(path) == 5 })
	if got, want := seqs(readLines(t, path+".old", path)), seqs(allEvents(t, db)); !reflect.DeepEqual(got, want) {
		t.Fatalf("delivered %v; want %v", got, want)
	}
}
