package script

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/connector/mark"
)

// TestMark: with an installation key the provision request carries the
// mark of the username, and an account listed with that mark is Marked;
// one listed with another installation's mark, or none, is not.
func TestMark(t *testing.T) {
	const secret = "this installation's key"
	key, err := mark.NewKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := mark.NewKey("another installation's key")
	dir := t.TempDir()
	reqFile, listFile := filepath.Join(dir, "req.json"), filepath.Join(dir, "accounts.json")
	list := []AccountOutput{
		{Name: "mf_alice_k3j9x2", Mark: key.Tag("mf_alice_k3j9x2")},
		{Name: "mf_bob_theirs", Mark: other.Tag("mf_bob_theirs")},
		{Name: "mf_carol_byhand"},
		{Name: "mf_dave_copied", Mark: key.Tag("mf_alice_k3j9x2")},
	}
	b, _ := json.Marshal(list)
	if err := os.WriteFile(listFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	tg := shTarget(`cat > "$0"`)
	tg.Commands.Provision = []string{"sh", "-c", `cat > "$0"`, reqFile}
	tg.Commands.Accounts = []string{"sh", "-c", `cat "$0"`, listFile}
	tg.InstanceKeyEnv = "MAYFLY_INSTANCE_KEY"
	c, err := New(tg, func(string) string { return secret })
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	if _, err := c.Provision(context.Background(), provisionReq()); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	var req Request
	b, err = os.ReadFile(reqFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	if want := key.Tag(provisionReq().Username); req.Mark != want {
		t.Errorf("provision request mark = %q; want %q", req.Mark, want)
	}
	accts, err := c.Accounts(context.Background(), mayfly.AccountsRequest{Prefix: "mf_"})
	if err != nil {
		t.Fatalf("Accounts() = %v", err)
	}
	want := map[string]bool{"mf_alice_k3j9x2": true, "mf_bob_theirs": false, "mf_carol_byhand": false, "mf_dave_copied": false}
	for _, a := range accts {
		if a.Marked != want[a.Name] {
			t.Errorf("account %s Marked = %v; want %v", a.Name, a.Marked, want[a.Name])
		}
	}
	if len(accts) != len(want) {
		t.Errorf("Accounts() listed %d accounts; want %d", len(accts), len(want))
	}
}
