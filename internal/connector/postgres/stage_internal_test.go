package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestStageEndedEarly is the defense behind the check of grant
// statements: if a statement ends the creation's transaction anyway, Wait
// reports the outcome unknown (the broker then revokes the account) rather
// than a creation waiting for its commit.
func TestStageEndedEarly(t *testing.T) {
	ctx := context.Background()
	prefix := "mf_pgti" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "") + "_"
	c, err := New(mayfly.Target{Name: "pgtest", Kind: mayfly.KindPostgres, Prefix: prefix, DSN: testenv.PostgresDSN()}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer c.Close()
	if err := c.Check(ctx); err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	req := mayfly.ProvisionRequest{LeaseID: "lse_early", Username: prefix + "early",
		Grant: mayfly.Grant{Name: "g", Roles: []string{"pg_read_all_data"}}, ExpiresAt: time.Now().Add(time.Minute)}
	cr, err := c.build(req)
	if err != nil {
		t.Fatal(err)
	}
	// What the check of grant statements refuses, slipped in after it.
	cr.stmts = append(cr.stmts, query{sql: "COMMIT"})
	cr.seg = append(cr.seg, query{sql: "COMMIT"})
	p, err := c.stage(ctx, req, cr)
	if err != nil {
		t.Fatalf("stage: %v", err)
	}
	defer c.Revoke(ctx, mayfly.RevokeRequest{LeaseID: req.LeaseID, Username: req.Username})
	_, err = p.Wait()
	if err == nil || !strings.Contains(err.Error(), "ended before its commit") {
		t.Fatalf("Wait after a statement committed = %v; want the transaction reported ended early", err)
	}
	p.Abort() // nothing left to do, and no panic
	if got, err := c.Accounts(ctx, mayfly.AccountsRequest{Prefix: prefix}); err != nil || len(got) != 1 {
		t.Fatalf("Accounts = %v, %v; want the role committed early, for the broker to revoke", got, err)
	}
}

// FuzzLeadingKeyword checks that the first word of any statement is found
// without panicking, and is a word.
func FuzzLeadingKeyword(f *testing.F) {
	for _, s := range []string{"COMMIT", " /* a /* b */ */ begin", "-- x\nEND", "/* open", "--", "GRANT x TO y", "", "1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := leadingKeyword(s)
		for _, r := range k {
			if !(r >= 'A' && r <= 'Z' || r == '_') {
				t.Fatalf("leadingKeyword(%q) = %q: not an upper-case word", s, k)
			}
		}
		if k != "" && !strings.Contains(strings.ToUpper(s), k) {
			t.Fatalf("leadingKeyword(%q) = %q: not in the statement", s, k)
		}
		if rest := strings.TrimLeft(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"); len(rest) < len(s) && k != strings.ToUpper(s[:len(s)-len(rest)]) {
			t.Fatalf("leadingKeyword(%q) = %q; want the word it starts with", s, k)
		}
	})
}
