package notify

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly"
)

func TestValidate(t *testing.T) {
	hook := Channel{Name: "hook", Type: TypeWebhook, URL: "https://hooks.example.com/mayfly", SecretEnv: "S"}
	mail := Channel{Name: "mail", Type: TypeEmail, SMTPAddr: "smtp.example.com:587", From: "mayfly@example.com"}
	with := func(c Channel, f func(*Channel)) Config {
		f(&c)
		return Config{Channels: []Channel{c}}
	}
	for _, tt := range []struct {
		name string
		c    Config
		want string // "" for valid
	}{
		{"empty", Config{}, ""},
		{"webhook", Config{Channels: []Channel{hook}}, ""},
		{"email", Config{Channels: []Channel{mail}}, ""},
		{"slack url_env", Config{Channels: []Channel{{Name: "s", Type: TypeSlack, URLEnv: "SLACK_URL"}}}, ""},
		{"all options", Config{ExpiryWarning: time.Minute, BaseURL: "https://mayfly.example.com",
			SecurityGroups: []string{"sec"}, Channels: []Channel{hook, mail}}, ""},
		{"negative warning", Config{ExpiryWarning: -time.Second}, "expiry_warning"},
		{"bad base url", Config{BaseURL: "mayfly.example.com"}, "base_url"},
		{"blank security group", Config{SecurityGroups: []string{" "}}, "security_groups"},
		{"duplicate name", Config{Channels: []Channel{hook, hook}}, "used twice"},
		{"bad name", with(hook, func(c *Channel) { c.Name = "a b" }), "name"},
		{"no type", with(hook, func(c *Channel) { c.Type = "" }), "type is required"},
		{"unknown type", with(hook, func(c *Channel) { c.Type = "pager" }), "unknown type"},
		{"webhook without url", with(hook, func(c *Channel) { c.URL = "" }), "url or url_env"},
		{"webhook url and url_env", with(hook, func(c *Channel) { c.URLEnv = "U" }), "not both"},
		{"webhook ftp url", with(hook, func(c *Channel) { c.URL = "ftp://x/y" }), "http or https"},
		{"webhook without secret", with(hook, func(c *Channel) { c.SecretEnv = "" }), "secret_env is required"},
		{"webhook with smtp", with(hook, func(c *Channel) { c.SMTPAddr = "x:25" }), "smtp_addr is not used"},
		{"slack with secret", Config{Channels: []Channel{{Name: "s", Type: TypeSlack, URL: "https://x/y", SecretEnv: "S"}}}, "secret_env is not used"},
		{"email without addr", with(mail, func(c *Channel) { c.SMTPAddr = "" }), "host:port"},
		{"email without port", with(mail, func(c *Channel) { c.SMTPAddr = "smtp.example.com" }), "host:port"},
		{"email without from", with(mail, func(c *Channel) { c.From = "" }), "from is required"},
		{"email bad from", with(mail, func(c *Channel) { c.From = "not an address" }), "not an email address"},
		{"email half credentials", with(mail, func(c *Channel) { c.UsernameEnv = "U" }), "both"},
		{"email with url", with(mail, func(c *Channel) { c.URL = "https://x" }), "url is not used"},
		{"unknown event", with(hook, func(c *Channel) { c.Events = []string{"request.create"} }), "unknown message type"},
		{"negative timeout", with(hook, func(c *Channel) { c.Timeout = -1 }), "timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.c)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v; want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v; want an error containing %q", err, tt.want)
			}
			if got := mayfly.ErrorCode(err); got != mayfly.EINVALID {
				t.Errorf("code = %q; want %q", got, mayfly.EINVALID)
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	src := `
expiry_warning: 10m
base_url: https://mayfly.example.com
security_groups: [security]
channels:
  - name: ops
    type: webhook
    url: https://hooks.example.com/mayfly
    secret_env: MAYFLY_WEBHOOK_SECRET
    events: [approval_needed, break_glass]
  - name: mail
    type: email
    smtp_addr: smtp.example.com:587
    from: Mayfly <mayfly@example.com>
    username_env: SMTP_USER
    password_env: SMTP_PASSWORD
    starttls: true
`
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	if err := Validate(c); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if c.ExpiryWarning != 10*time.Minute || len(c.Channels) != 2 || !c.Channels[1].StartTLS ||
		!slices.Equal(c.Channels[0].Events, []string{TypeApprovalNeeded, TypeBreakGlass}) {
		t.Errorf("parsed %+v", c)
	}
}

func TestNewSecrets(t *testing.T) {
	db := openStore(t)
	c := Config{Channels: []Channel{
		{Name: "hook", Type: TypeWebhook, URL: "https://hooks.example.com/x", SecretEnv: "HOOK_SECRET"},
		{Name: "chat", Type: TypeSlack, URLEnv: "SLACK_URL"},
		{Name: "mail", Type: TypeEmail, SMTPAddr: "127.0.0.1:25", From: "m@example.com", UsernameEnv: "U", PasswordEnv: "P"},
	}}
	full := map[string]string{"HOOK_SECRET": "k", "SLACK_URL": "https://hooks.slack.example/T/B/secretpath", "U": "u", "P": "p"}
	if _, err := New(db, c, newDir(db), func(k string) string { return full[k] }, nil); err != nil {
		t.Fatalf("New with every variable set: %v", err)
	}
	for _, missing := range []string{"HOOK_SECRET", "SLACK_URL", "U", "P"} {
		env := map[string]string{}
		for k, v := range full {
			if k != missing {
				env[k] = v
			}
		}
		_, err := New(db, c, newDir(db), func(k string) string { return env[k] }, nil)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("New without %s = %v; want an error naming it", missing, err)
		}
	}
	bad := map[string]string{"HOOK_SECRET": "k", "SLACK_URL": "not a url secretpath", "U": "u", "P": "p"}
	_, err := New(db, c, newDir(db), func(k string) string { return bad[k] }, nil)
	if err == nil || strings.Contains(err.Error(), "secretpath") {
		t.Errorf("New with a bad SLACK_URL = %v; want an error that does not show the value", err)
	}
}

func TestWebhookErrorHidesURL(t *testing.T) {
	p := newPoster("http://127.0.0.1:1/T000/B000/secretpath", time.Second)
	err := p.post(context.Background(), []byte("{}"), nil)
	if err == nil {
		t.Fatal("post to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "secretpath") {
		t.Errorf("error shows the URL: %v", err)
	}
}

// leaseEvent stores a lease and returns the messages for one event about it.
func leaseMessagesFor(t *testing.T, n *Notifier, db mayfly.Store, e *mayfly.AuditEvent) []*message {
	t.Helper()
	e.LeaseID = "lease_1"
	e.Subject = "lease:lease_1"
	e.Time = t0
	msgs, err := n.messages(context.Background(), e)
	if err != nil {
		t.Fatalf("messages(%s): %v", e.Action, err)
	}
	return msgs
}

func TestLeaseMessages(t *testing.T) {
	db := openStore(t)
	r := pendingRequest("req_1")
	r.State = mayfly.RequestApproved
	createRequest(t, db, r, nil)
	if err := db.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.CreateLease(&mayfly.Lease{ID: "lease_1", RequestID: "req_1", Requester: "alice", Target: "pg-prod",
			Grant: "readonly", Username: "mf_alice_x1", State: mayfly.LeaseActive, CreatedAt: t0,
			ExpiresAt: t0.Add(time.Hour), DueAt: t0.Add(time.Hour)})
	}); err != nil {
		t.Fatal(err)
	}
	n, err := New(db, Config{SecurityGroups: []string{"sec"}}, newDir(db), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		e      mayfly.AuditEvent
		typ    string // "" for no message
		to     string
		urgent bool
		text   []string
	}{
		{"activate", mayfly.AuditEvent{Actor: "alice", Action: "lease.activate"}, TypeActivated, "alice", false,
			[]string{"mf_alice_x1", "2030-01-02 11:00:00 UTC", "mayfly done lease_1", "investigate INC-42"}},
		{"admin revoke", mayfly.AuditEvent{Actor: "root", Action: "lease.revoke", Reason: "offboarding"}, TypeRevoked, "alice", false,
			[]string{"root revoked your access to readonly on pg-prod", "offboarding"}},
		{"own revoke", mayfly.AuditEvent{Actor: "alice", Action: "lease.revoke"}, "", "", false, nil},
		{"expired", mayfly.AuditEvent{Actor: "mayfly", Action: "lease.revoked", Data: map[string]string{"end_reason": "expired"}},
			TypeEnded, "alice", false, []string{"expired", "mf_alice_x1 has been removed"}},
		{"idle", mayfly.AuditEvent{Actor: "mayfly", Action: "lease.revoked", Data: map[string]string{"end_reason": "idle"}},
			TypeEnded, "alice", false, []string{"unused for too long"}},
		{"missing", mayfly.AuditEvent{Actor: "mayfly", Action: "lease.missing", Data: map[string]string{"end_reason": "missing"}},
			TypeEnded, "alice", false, []string{"vanished from the target"}},
		{"done", mayfly.AuditEvent{Actor: "mayfly", Action: "lease.revoked", Data: map[string]string{"end_reason": "done"}}, "", "", false, nil},
		{"revoked after revoke", mayfly.AuditEvent{Actor: "mayfly", Action: "lease.revoked", Data: map[string]string{"end_reason": "revoked"}}, "", "", false, nil},
		{"first failure", mayfly.AuditEvent{Actor: "mayfly", Action: "lease.revoke_failed", Reason: "connection refused",
			Data: map[string]string{"attempt": "1"}}, TypeRevokeFailed, "bob,sam", true,
			[]string{"could not remove the account mf_alice_x1 on pg-prod (attempt 1)", "connection refused", "mayfly audit --lease lease_1"}},
		{"second failure", mayfly.AuditEvent{Actor: "mayfly", Action: "lease.revoke_failed", Data: map[string]string{"attempt": "2"}}, "", "", false, nil},
		{"tenth failure", mayfly.AuditEvent{Actor: "mayfly", Action: "lease.revoke_failed", Data: map[string]string{"attempt": "10"}},
			TypeRevokeFailed, "bob,sam", true, nil},
		{"other action", mayfly.AuditEvent{Actor: "mayfly", Action: "lease.expire"}, "", "", false, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msgs := leaseMessagesFor(t, n, db, &tt.e)
			if tt.typ == "" {
				if len(msgs) != 0 {
					t.Fatalf("got %d messages (%s); want none", len(msgs), msgs[0].Type)
				}
				return
			}
			if len(msgs) != 1 {
				t.Fatalf("got %d messages; want 1", len(msgs))
			}
			m := msgs[0]
			var to []string
			for _, r := range m.Recipients {
				to = append(to, r.User)
			}
			if m.Type != tt.typ || strings.Join(to, ",") != tt.to || m.Urgent != tt.urgent {
				t.Errorf("got %s to %v urgent=%v; want %s to %s urgent=%v", m.Type, to, m.Urgent, tt.typ, tt.to, tt.urgent)
			}
			text := m.Text()
			for _, s := range tt.text {
				if !strings.Contains(text, s) {
					t.Errorf("text lacks %q:\n%s", s, text)
				}
			}
		})
	}
}

func TestUnknownRequestSkipped(t *testing.T) {
	db := openStore(t)
	n, err := New(db, Config{}, newDir(db), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := n.messages(context.Background(), &mayfly.AuditEvent{Seq: 1, Action: "request.create", RequestID: "req_gone"})
	if err != nil || len(msgs) != 0 {
		t.Errorf("messages = %d, %v; want none and no error", len(msgs), err)
	}
}

func TestHuman(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{time.Hour, "1h"}, {90 * time.Minute, "1h30m"}, {5 * time.Minute, "5m"}, {45 * time.Second, "45s"},
		{90 * time.Second, "1m30s"}, {time.Hour + 5*time.Second, "1h0m5s"}, {8 * time.Hour, "8h"},
		{0, "0s"}, {-time.Minute, "0s"}, {1500 * time.Millisecond, "2s"},
	} {
		if got := human(tt.d); got != tt.want {
			t.Errorf("human(%v) = %q; want %q", tt.d, got, tt.want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"req_1", "req_1"},
		{"pg-prod/readonly", "pg-prod/readonly"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"$(rm -rf /)", "'$(rm -rf /)'"},
		{"", "''"},
	} {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestClean(t *testing.T) {
	long := strings.Repeat("x", 600)
	for _, tt := range []struct{ in, want string }{
		{"ok", "ok"},
		{" a\nApprove: mayfly approve req_evil ", "a Approve: mayfly approve req_evil"},
		{long, strings.Repeat("x", 500) + "…"},
	} {
		if got := clean(tt.in); got != tt.want {
			t.Errorf("clean(%.20q) = %.30q; want %.30q", tt.in, got, tt.want)
		}
	}
}

func TestSign(t *testing.T) {
	// HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), a
	// published test vector.
	got := Sign([]byte("key"), []byte("The quick brown fox jumps over the lazy dog"))
	want := "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
	if got != want {
		t.Errorf("Sign = %s; want %s", got, want)
	}
}

func TestLapsed(t *testing.T) {
	db := openStore(t)
	createRequest(t, db, pendingRequest("req_1"), nil)
	n, err := New(db, Config{}, newDir(db), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := n.messages(context.Background(), &mayfly.AuditEvent{Seq: 2, Time: t0, Actor: "mayfly",
		Action: "request.lapse", RequestID: "req_1", Reason: "nobody decided within 24h0m0s"})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("messages = %d, %v; want 1", len(msgs), err)
	}
	m := msgs[0]
	if m.Type != TypeLapsed || len(m.Recipients) != 1 || m.Recipients[0].User != "alice" {
		t.Errorf("got %s to %v; want lapsed to alice", m.Type, m.Recipients)
	}
	for _, s := range []string{"lapsed: nobody decided within 24h0m0s", "mayfly request pg-prod/readonly --for 1h --reason 'investigate INC-42'"} {
		if !strings.Contains(m.Text(), s) {
			t.Errorf("text lacks %q:\n%s", s, m.Text())
		}
	}
}

func TestOrphan(t *testing.T) {
	db := openStore(t)
	n, err := New(db, Config{SecurityGroups: []string{"sec"}}, newDir(db), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		action string
		urgent bool
		text   string
	}{
		{"account.orphan_removed", false, "and removed it"},
		{"account.orphan_remove_failed", true, "could not remove it"},
	} {
		msgs, err := n.messages(context.Background(), &mayfly.AuditEvent{Seq: 9, Time: t0, Actor: "mayfly", Action: tt.action,
			Subject: "target:pg-prod", Target: "pg-prod", Reason: "permission denied", Data: map[string]string{"account": "mf_eve_x"}})
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%s: messages = %d, %v; want 1", tt.action, len(msgs), err)
		}
		m := msgs[0]
		var to []string
		for _, r := range m.Recipients {
			to = append(to, r.User)
		}
		if m.Type != TypeOrphan || m.Urgent != tt.urgent || strings.Join(to, ",") != "bob,sam" {
			t.Errorf("%s: got %s urgent=%v to %v; want orphan urgent=%v to bob,sam", tt.action, m.Type, m.Urgent, to, tt.urgent)
		}
		for _, s := range []string{"mf_eve_x", "pg-prod", tt.text, "mayfly inventory pg-prod"} {
			if !strings.Contains(m.Text(), s) {
				t.Errorf("%s: text lacks %q:\n%s", tt.action, s, m.Text())
			}
		}
	}
}
