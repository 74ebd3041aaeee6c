package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// cmdStoreMigrate runs `mayfly store migrate`: it copies a SQLite store into a
// new PostgreSQL store, offline (stop the server first).
func cmdStoreMigrate(e *env, args []string) error {
	f := newFlags(e, "store migrate", true)
	from := f.String("from", "", "the store to copy: sqlite:PATH (the server using it stopped)")
	to := f.String("to", "", "the new, empty store: postgres:DSN (a password may come from PGPASSWORD or ~/.pgpass instead of the DSN)")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	path, ok := strings.CutPrefix(*from, "sqlite:")
	if !ok || path == "" {
		return usageErr("store migrate: --from must be sqlite:PATH, got %q", *from)
	}
	dsn, ok := strings.CutPrefix(*to, "postgres:")
	if !ok || dsn == "" {
		return usageErr("store migrate: --to must be postgres:DSN, e.g. postgres:postgres://mayfly@db.example.com/mayfly")
	}
	if _, err := os.Stat(path); err != nil {
		if os.IsNotExist(err) {
			return mayfly.Errorf(mayfly.ENOTFOUND, "store migrate: no SQLite store at %s", path)
		}
		return fmt.Errorf("store migrate: %w", err)
	}
	// The copy is whole only if no server writes meanwhile; one told to
	// stop just before is waited for.
	owner, err := sqlite.Own(e.ctx, path, sqliteOwnerWait, func(holder string) {
		fmt.Fprintf(e.stderr, "store migrate: a mayfly server (%s) holds %s; waiting up to %s for it to stop\n", holder, path, sqliteOwnerWait)
	})
	if err != nil {
		return fmt.Errorf("store migrate: %w", err)
	}
	defer owner.Close()
	src, err := sqlite.Open(e.ctx, path)
	if err != nil {
		return fmt.Errorf("store migrate: open %s: %w", path, err)
	}
	defer src.Close()
	dst, err := postgres.Open(e.ctx, dsn, 2)
	if err != nil {
		if mayfly.ErrorCode(err) == mayfly.EINVALID {
			return err
		}
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "store migrate: %s", mayfly.ErrorMessageOrText(err))
	}
	defer dst.Close()
	n, err := dst.CopyFrom(e.ctx, src)
	if err != nil {
		return fmt.Errorf("store migrate: %w", err)
	}
	res, err := audit.Verify(e.ctx, dst, 0, 0)
	if err != nil {
		return fmt.Errorf("store migrate: verify the copied audit chain: %w", err)
	}
	if !res.OK {
		return fmt.Errorf("store migrate: the copied audit chain is broken at event %d: %s", res.Broken, res.Problem)
	}
	if f.json() {
		return e.printJSON(struct {
			postgres.CopyCounts
			AuditVerified bool `json:"audit_verified"`
		}{n, true})
	}
	fmt.Fprintf(e.stdout, "copied %s into the PostgreSQL store:\n", path)
	chain := ""
	if n.AuditEvents > 0 {
		chain = fmt.Sprintf(" (seq %d to %d, chain verified)", n.FirstSeq, n.LastSeq)
	}
	e.table("WHAT\tCOUNT", [][]string{
		{"requests", fmt.Sprint(n.Requests)},
		{"leases", fmt.Sprint(n.Leases)},
		{"audit events", fmt.Sprint(n.AuditEvents) + chain},
		{"user statuses", fmt.Sprint(n.Users)},
		{"settings", fmt.Sprint(n.Settings)},
		{"tokens", fmt.Sprint(n.Tokens)},
		{"slack messages", fmt.Sprint(n.ChatMessages)},
	})
	return nil
}
