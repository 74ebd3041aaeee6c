package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func TestOwnOneHolderAtATime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "mayfly.db")
	first, err := Own(context.Background(), path, 0, nil)
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
	var waited []string
	began := time.Now()
	_, err = Own(context.Background(), path, 300*time.Millisecond, func(h string) { waited = append(waited, h) })
	if took := time.Since(began); took < 300*time.Millisecond {
		t.Errorf("second Own gave up after %s; want it to try for 300ms", took)
	}
	if want := fmt.Sprintf("process %d", os.Getpid()); len(waited) != 1 || waited[0] != want {
		t.Errorf("waiting called with %q; want once with %q", waited, want)
	}
	if mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Fatalf("second Own = %v; want a conflict", err)
	}
	for _, want := range []string{path, fmt.Sprintf("process %d", os.Getpid()), "store.postgres"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not name %q", err, want)
		}
	}

	// A wait ends with its context (a server told to stop meanwhile).
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began = time.Now()
	if _, err := Own(ctx, path, 5*time.Second, nil); !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 2*time.Second {
		t.Errorf("Own with its context ending after 100ms = %v after %s; want the context's error at once", err, time.Since(began))
	}

	// Released, the store can be owned again.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Own(context.Background(), path, 0, nil)
	if err != nil {
		t.Fatalf("Own after the holder closed: %v", err)
	}

	// A holder that lets go while another waits hands the store over.
	go func() {
		time.Sleep(200 * time.Millisecond)
		again.Close()
	}()
	next, err := Own(context.Background(), path, 5*time.Second, nil)
	if err != nil {
		t.Fatalf("Own while the holder lets go within the wait: %v", err)
	}
	next.Close()

	if _, err := Own(context.Background(), "", 0, nil); mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("Own(\"\") = %v; want invalid", err)
	}
}
