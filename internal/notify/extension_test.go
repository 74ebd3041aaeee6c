package notify

import (
	"context"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly"
)

// Messages about an extension request say it is one, name the lease, and
// never tell the requester to activate it.
func TestExtensionMessages(t *testing.T) {
	db := openStore(t)
	r := pendingRequest("req_ext")
	r.ExtendsLease = "lease_9"
	createRequest(t, db, r, nil)
	n, err := New(db, Config{}, newDir(db), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	text := func(action, actor, reason string, data map[string]string) *message {
		t.Helper()
		msgs, err := n.messages(context.Background(), &mayfly.AuditEvent{Seq: 3, Time: t0, Actor: actor, Action: action,
			RequestID: r.ID, Reason: reason, Data: data})
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%s: messages = %d, %v; want 1", action, len(msgs), err)
		}
		return msgs[0]
	}
	need := text("request.create", "alice", r.Reason, map[string]string{"decision": "approval", "extends_lease": "lease_9"})
	for _, s := range []string{"asks for an extension of lease lease_9 (readonly on pg-prod) by 1h", "Kind:", "extension of lease lease_9"} {
		if !strings.Contains(need.Subject+"\n"+need.Text(), s) {
			t.Errorf("approval needed lacks %q:\n%s\n%s", s, need.Subject, need.Text())
		}
	}

	r.State, r.Approvers, r.LeaseID = mayfly.RequestApproved, []string{"bob"}, "lease_9"
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error { return tx.UpdateRequest(r) }); err != nil {
		t.Fatal(err)
	}
	ok := text("request.approve", "bob", "", map[string]string{"approvers": "bob"})
	if strings.Contains(ok.Text(), "mayfly creds") || !strings.Contains(ok.Subject, "Extension approved") {
		t.Errorf("extension approved message = %q\n%s; want it labelled, without `mayfly creds`", ok.Subject, ok.Text())
	}

	void := text("request.cancel", "mayfly", "lease lease_9 is revoked (revoked)", nil)
	if !strings.Contains(void.Headline, "void: lease lease_9 is revoked") {
		t.Errorf("void extension headline = %q", void.Headline)
	}
}
