package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

type adminAuth string

func (a adminAuth) Authenticate(sum string) (httpapi.Identity, bool) {
	return httpapi.Identity{Name: "admin", Admin: true}, sum == string(a)
}

// TestListCommandsPage checks the paging flags of requests, leases and
// audit: the whole list by default (one page for audit), one page with a
// hint on stderr with --limit, --cursor to read on, --all for every page,
// and -o json still one JSON array.
func TestListCommandsPage(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "mayfly.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	err = db.Update(ctx, func(tx mayfly.Tx) error {
		for i := range 5 {
			id := fmt.Sprintf("r%d", i)
			if err := tx.CreateRequest(&mayfly.Request{ID: id, Requester: "alice", Target: "pg", Grant: "ro", State: mayfly.RequestPending, CreatedAt: t0.Add(time.Duration(i) * time.Second)}); err != nil {
				return err
			}
			if err := tx.CreateLease(&mayfly.Lease{ID: "l" + id[1:], RequestID: id, Requester: "alice", Target: "pg", Grant: "ro", State: mayfly.LeaseRevoked, CreatedAt: t0}); err != nil {
				return err
			}
			if err := tx.AppendAudit(&mayfly.AuditEvent{Time: t0, Actor: "alice", Action: "request.create", RequestID: id}); err != nil {
				return err
			}
		}
		// More than one page of the largest size.
		for i := range httpapi.MaxPageSize + 5 {
			if err := tx.CreateRequest(&mayfly.Request{ID: fmt.Sprintf("s%04d", i), Requester: "bob", Target: "pg", Grant: "ro", State: mayfly.RequestDenied, CreatedAt: t0.Add(time.Hour)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	allRequests := []string{"r0", "r1", "r2", "r3", "r4"}
	for i := range httpapi.MaxPageSize + 5 {
		allRequests = append(allRequests, fmt.Sprintf("s%04d", i))
	}
	sum := sha256.Sum256([]byte("admin-token"))
	b := broker.New(&broker.Config{}, broker.Options{Store: db})
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Broker: b, Auth: adminAuth(hex.EncodeToString(sum[:]))}))
	t.Cleanup(srv.Close)
	getenv := func(k string) string {
		return map[string]string{"MAYFLY_ADDR": srv.URL, "MAYFLY_TOKEN": "admin-token"}[k]
	}
	cli := func(args ...string) (ids []string, hint string) {
		t.Helper()
		var out, errb bytes.Buffer
		if err := run(ctx, args, getenv, strings.NewReader(""), &out, &errb); err != nil {
			t.Fatalf("mayfly %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		var items []struct {
			ID  string `json:"id"`
			Seq int64  `json:"seq"`
		}
		if err := json.Unmarshal(out.Bytes(), &items); err != nil {
			t.Fatalf("mayfly %s: output is not a JSON array: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		ids = []string{}
		for _, it := range items {
			if it.ID == "" {
				it.ID = fmt.Sprint(it.Seq)
			}
			ids = append(ids, it.ID)
		}
		return ids, errb.String()
	}
	cursorIn := regexp.MustCompile(`--cursor (\S+)`)
	for _, tt := range []struct {
		cmd   string
		limit string
		want  []string
	}{
		// requests and leases print every page unless asked for one, as
		// they printed the whole list before; audit prints one page.
		{"requests", "--limit", allRequests},
		{"leases", "--limit", []string{"l0", "l1", "l2", "l3", "l4"}},
		{"audit", "--limit", []string{"1", "2", "3", "4", "5"}},
	} {
		if got, hint := cli(tt.cmd, "-o", "json"); !slices.Equal(got, tt.want) || hint != "" {
			t.Errorf("mayfly %s -o json = %v, stderr %q; want %v and nothing on stderr", tt.cmd, got, hint, tt.want)
		}
		got, hint := cli(tt.cmd, tt.limit, "2", "-o", "json")
		m := cursorIn.FindStringSubmatch(hint)
		if !slices.Equal(got, tt.want[:2]) || m == nil {
			t.Fatalf("mayfly %s --limit 2 -o json = %v, stderr %q; want %v and a cursor on stderr", tt.cmd, got, hint, tt.want[:2])
		}
		if got, _ := cli(tt.cmd, tt.limit, "2", "--cursor", m[1], "-o", "json"); !slices.Equal(got, tt.want[2:4]) {
			t.Errorf("mayfly %s --limit 2 --cursor %s = %v; want %v", tt.cmd, m[1], got, tt.want[2:4])
		}
		if got, hint := cli(tt.cmd, tt.limit, "2", "--all", "-o", "json"); !slices.Equal(got, tt.want) || hint != "" {
			t.Errorf("mayfly %s --limit 2 --all = %v, stderr %q; want %v and nothing on stderr", tt.cmd, got, hint, tt.want)
		}
	}
}
