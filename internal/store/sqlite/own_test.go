package sqlite

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly"
)

func TestOwnOneHolderAtATime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "mayfly.db")
	first, err := Own(path)
	if err != nil {
		t.Fatalf("Own of a free store: %v", err)
	}
	fi, err := os.Stat(path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode %v; want 0600", fi.Mode().Perm())
	}

	// A second holder (another open of the file, as another process's
	// would be) is refused, and told who holds it.
	_, err = Own(path)
	if mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Fatalf("second Own = %v; want a conflict", err)
	}
	for _, want := range []string{path, fmt.Sprintf("process %d", os.Getpid()), "store.postgres"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not name %q", err, want)
		}
	}

	// Released, the store can be owned again.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Own(path)
	if err != nil {
		t.Fatalf("Own after the holder closed: %v", err)
	}
	again.Close()

	if _, err := Own(""); mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("Own(\"\") = %v; want invalid", err)
	}
}
