package main

import (
	"context"
	"testing"

	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// tamper edits the store directly, as an attacker with file access would.
func tamper(t *testing.T, path, query string) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.ExecForTest(context.Background(), query); err != nil {
		t.Fatal(err)
	}
}
