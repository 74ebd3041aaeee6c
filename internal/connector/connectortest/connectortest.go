// Package connectortest is the conformance suite every connector passes
// against a real server of its kind: issued credentials work, rights stop at
// the grant, revocation ends sessions and logins, calls are idempotent,
// hostile input is never executed, and concurrency leaves nothing behind.
package connectortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Session is a login made with an issued credential.
type Session interface {
	// Allowed performs an action the harness's grant allows.
	Allowed(ctx context.Context) error
	// Forbidden performs an action outside the grant; the target must refuse it.
	Forbidden(ctx context.Context) error
	// Ping reports whether the session is still alive on the target.
	Ping(ctx context.Context) error
	Close() error
}

// Harness describes one connector under test.
type Harness struct {
	Connector mayfly.Connector
	// Prefix starts every account name the suite creates; make it unique to
	// the test so parallel suites do not see each other's accounts.
	Prefix string
	// MaxNameLen is the target's limit on account names.
	MaxNameLen int
	// Grant allows Session.Allowed and not Session.Forbidden.
	Grant mayfly.Grant
	// Login opens a session with cred; it returns an error when the target
	// refuses the credential.
	Login func(ctx context.Context, cred mayfly.Credential) (Session, error)
	// Tamper returns a credential that must be refused: a wrong password,
	// a certificate from another authority.
	Tamper func(cred mayfly.Credential) mayfly.Credential
	// HostileGrants are grants whose parameters carry hostile strings; each
	// must be refused, leaving no account behind, or applied safely quoted:
	// then the account's login must still be refused what Grant forbids,
	// and GrantHolds, when set, must find nothing beyond Grant on the
	// target. Each may try to create an account named Prefix+"pwned"; the
	// suite checks none exists.
	HostileGrants []mayfly.Grant
	// GrantHolds checks on the target, as its admin, that the account
	// username holds nothing beyond what Grant gives (its role
	// memberships, its privileges), after a hostile grant was accepted.
	GrantHolds func(ctx context.Context, username string) error
	// Marks is true when Connector was built with an installation key:
	// every account it provisions must be listed Marked.
	Marks bool
	// Other, when set, is a connector to the same target built with
	// another installation's key: the accounts it provisions must be
	// listed unmarked by Connector, and Connector's unmarked by it.
	Other mayfly.Connector
	// CreateByHand, when set, creates the account name on the target as an
	// admin would, outside Mayfly, and removes it when the test ends; it
	// must be listed, unmarked.
	CreateByHand func(t *testing.T, name string)
	// TerminatesSessions is true when Revoke ends sessions opened before it.
	TerminatesSessions bool
	// ReportsActivity is true when Accounts reports sessions or last activity.
	ReportsActivity bool
	// Concurrency is how many provisions and revocations run at once (default 50).
	Concurrency int
	// ProvisionedName returns the name the account appears under in
	// Accounts for a requested username (default: the username itself).
	ProvisionedName func(username string) string
}

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	if h.Concurrency == 0 {
		h.Concurrency = 50
	}
	if h.ProvisionedName == nil {
		h.ProvisionedName = func(s string) string { return s }
	}
	t.Run("ProvisionLoginAndGrantLimits", func(t *testing.T) { testProvision(t, h) })
	t.Run("RevokeEndsSessionsAndLogins", func(t *testing.T) { testRevoke(t, h) })
	t.Run("RevokeIsIdempotent", func(t *testing.T) { testRevokeIdempotent(t, h) })
	t.Run("ProvisionTwiceOneAccount", func(t *testing.T) { testProvisionTwice(t, h) })
	t.Run("HostileInput", func(t *testing.T) { testHostile(t, h) })
	t.Run("MarksOwnAccountsOnly", func(t *testing.T) { testMarks(t, h) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, h) })
	t.Run("Activity", func(t *testing.T) { testActivity(t, h) })
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Name returns a fresh account name under prefix within maxLen.
func Name(prefix string, maxLen int) string {
	b := make([]byte, 6)
	rand.Read(b)
	n := prefix + hex.EncodeToString(b)
	if maxLen > 0 && len(n) > maxLen {
		n = n[len(n)-maxLen:]
	}
	return n
}

func provision(t *testing.T, h Harness, name string, g mayfly.Grant) mayfly.Credential {
	t.Helper()
	res, err := h.Connector.Provision(ctxT(t), mayfly.ProvisionRequest{
		LeaseID: "lse_" + name, Username: name, Grant: g, ExpiresAt: time.Now().Add(10 * time.Minute),
	})
	if err != nil {
		t.Fatalf("Provision(%q) = %v", name, err)
	}
	t.Cleanup(func() {
		h.Connector.Revoke(context.Background(), mayfly.RevokeRequest{LeaseID: "lse_" + name, Username: name, ExpiresAt: time.Now().Add(10 * time.Minute)})
	})
	return res.Credential
}

func revoke(t *testing.T, h Harness, name string) {
	t.Helper()
	if err := h.Connector.Revoke(ctxT(t), mayfly.RevokeRequest{LeaseID: "lse_" + name, Username: name, ExpiresAt: time.Now().Add(10 * time.Minute)}); err != nil {
		t.Fatalf("Revoke(%q) = %v", name, err)
	}
}

func accountNames(t *testing.T, h Harness) []string {
	t.Helper()
	accts, err := h.Connector.Accounts(ctxT(t), mayfly.AccountsRequest{Prefix: h.Prefix})
	if err != nil {
		t.Fatalf("Accounts(%q) = %v", h.Prefix, err)
	}
	var names []string
	for _, a := range accts {
		if !strings.HasPrefix(a.Name, h.Prefix) {
			t.Errorf("Accounts(%q) returned %q, outside the prefix", h.Prefix, a.Name)
		}
		names = append(names, a.Name)
	}
	return names
}

func testProvision(t *testing.T, h Harness) {
	name := Name(h.Prefix, h.MaxNameLen)
	cred := provision(t, h, name, h.Grant)
	if cred.Username == "" {
		t.Fatalf("Provision returned no username")
	}
	s, err := h.Login(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login with issued credential: %v", err)
	}
	defer s.Close()
	if err := s.Allowed(ctxT(t)); err != nil {
		t.Errorf("action the grant allows was refused: %v", err)
	}
	if err := s.Forbidden(ctxT(t)); err == nil {
		t.Errorf("action outside the grant succeeded; want refusal")
	}
	if h.Tamper != nil {
		if s2, err := h.Login(ctxT(t), h.Tamper(cred)); err == nil {
			s2.Close()
			t.Errorf("login with a tampered credential succeeded; want refusal")
		}
	}
	if got := accountNames(t, h); !slices.Contains(got, h.ProvisionedName(name)) {
		t.Errorf("Accounts() = %v; want it to contain %q", got, h.ProvisionedName(name))
	}
}

func testRevoke(t *testing.T, h Harness) {
	name := Name(h.Prefix, h.MaxNameLen)
	cred := provision(t, h, name, h.Grant)
	s, err := h.Login(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login with issued credential: %v", err)
	}
	defer s.Close()
	if err := s.Allowed(ctxT(t)); err != nil {
		t.Fatalf("allowed action before revocation: %v", err)
	}
	revoke(t, h, name)
	if h.TerminatesSessions {
		// The target may take a moment to tear the session down.
		deadline := time.Now().Add(5 * time.Second)
		for {
			// Ping, not Allowed: a dropped account may lose its rights while
			// its session lives on, and that session must end too.
			err := s.Ping(ctxT(t))
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("session opened before revocation still works after it")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if s2, err := h.Login(ctxT(t), cred); err == nil {
		s2.Close()
		t.Fatalf("login after revocation succeeded; want refusal")
	}
	if got := accountNames(t, h); slices.Contains(got, h.ProvisionedName(name)) {
		t.Errorf("Accounts() = %v after revocation; want %q absent", got, name)
	}
}

func testRevokeIdempotent(t *testing.T, h Harness) {
	name := Name(h.Prefix, h.MaxNameLen)
	provision(t, h, name, h.Grant)
	revoke(t, h, name)
	revoke(t, h, name)
	revoke(t, h, Name(h.Prefix, h.MaxNameLen)) // never existed
}

func testProvisionTwice(t *testing.T, h Harness) {
	name := Name(h.Prefix, h.MaxNameLen)
	provision(t, h, name, h.Grant)
	cred := provision(t, h, name, h.Grant)
	n := 0
	for _, a := range accountNames(t, h) {
		if a == h.ProvisionedName(name) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("after provisioning %q twice, Accounts() lists it %d times; want 1", name, n)
	}
	s, err := h.Login(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login with the second credential: %v", err)
	}
	s.Close()
	revoke(t, h, name)
}

// HostileStrings are inputs every connector must reject or quote safely.
var HostileStrings = []string{
	`a'b`, `a"b`, "a`b", `a\b`, "a\x00b", "a b", "a%b", "a*b", `a';--`, `a";--`,
	strings.Repeat("x", 300), "a\nb", "a;b", "$(id)", "../etc",
}

func testHostile(t *testing.T, h Harness) {
	pwned := h.Prefix + "pwned"
	for i, s := range HostileStrings {
		name := h.Prefix + s
		t.Run(fmt.Sprintf("name%d", i), func(t *testing.T) {
			res, err := h.Connector.Provision(ctxT(t), mayfly.ProvisionRequest{
				LeaseID: fmt.Sprintf("lse_hostile%d", i), Username: name, Grant: h.Grant, ExpiresAt: time.Now().Add(time.Minute),
			})
			if err == nil {
				revoke(t, h, res.Credential.Username)
				t.Fatalf("Provision(%q) succeeded; want the connector to refuse the name (EINVALID)", name)
			}
			// The connector's own check must refuse the name before the
			// target sees it: a failure from the target proves nothing.
			if code := mayfly.ErrorCode(err); code != mayfly.EINVALID {
				t.Errorf("Provision(%q) = %v (code %s); want the connector's refusal, code %s", name, err, code, mayfly.EINVALID)
			}
		})
	}
	for i, g := range h.HostileGrants {
		t.Run(fmt.Sprintf("grant%d", i), func(t *testing.T) {
			name := Name(h.Prefix, h.MaxNameLen)
			res, err := h.Connector.Provision(ctxT(t), mayfly.ProvisionRequest{
				LeaseID: "lse_" + name, Username: name, Grant: g, ExpiresAt: time.Now().Add(time.Minute),
			})
			if err != nil {
				// Refused, by the connector or by the target: nothing may
				// be left behind.
				if got := accountNames(t, h); slices.Contains(got, h.ProvisionedName(name)) {
					revoke(t, h, name)
					t.Errorf("Provision(hostile grant %d) = %v, yet account %q exists", i, err, name)
				}
				return
			}
			defer revoke(t, h, name)
			// Accepted: the hostile parameter must have been quoted, so the
			// account has no more than the grant allows.
			if h.GrantHolds != nil {
				if err := h.GrantHolds(ctxT(t), name); err != nil {
					t.Errorf("after hostile grant %d: %v", i, err)
				}
			}
			s, err := h.Login(ctxT(t), res.Credential)
			if err != nil {
				return // a login the hostile grant does not allow: nothing gained
			}
			defer s.Close()
			if err := s.Forbidden(ctxT(t)); err == nil {
				t.Errorf("after hostile grant %d the account may do what Grant forbids", i)
			}
		})
	}
	for _, a := range accountNames(t, h) {
		if a == pwned {
			t.Fatalf("hostile input was executed: account %q exists", pwned)
		}
	}
}

func testMarks(t *testing.T, h Harness) {
	if !h.Marks && h.Other == nil && h.CreateByHand == nil {
		t.Skip("the harness sets neither Marks, Other nor CreateByHand")
	}
	listed := func(c mayfly.Connector, name string) (mayfly.Account, bool) {
		t.Helper()
		accts, err := c.Accounts(ctxT(t), mayfly.AccountsRequest{Prefix: h.Prefix})
		if err != nil {
			t.Fatalf("Accounts: %v", err)
		}
		for _, a := range accts {
			if a.Name == h.ProvisionedName(name) {
				return a, true
			}
		}
		return mayfly.Account{}, false
	}
	mine := Name(h.Prefix, h.MaxNameLen)
	provision(t, h, mine, h.Grant)
	if a, ok := listed(h.Connector, mine); !ok {
		t.Errorf("account %q not listed", mine)
	} else if a.Marked != h.Marks {
		t.Errorf("account %q made by this installation: Marked = %v; want %v", mine, a.Marked, h.Marks)
	}
	if h.Other != nil {
		theirs := Name(h.Prefix, h.MaxNameLen)
		_, err := h.Other.Provision(ctxT(t), mayfly.ProvisionRequest{LeaseID: "lse_" + theirs, Username: theirs, Grant: h.Grant, ExpiresAt: time.Now().Add(10 * time.Minute)})
		if err != nil {
			t.Fatalf("the other installation's Provision(%q) = %v", theirs, err)
		}
		t.Cleanup(func() {
			h.Other.Revoke(context.Background(), mayfly.RevokeRequest{LeaseID: "lse_" + theirs, Username: theirs, ExpiresAt: time.Now().Add(10 * time.Minute)})
		})
		if a, ok := listed(h.Connector, theirs); !ok {
			t.Errorf("the other installation's account %q not listed", theirs)
		} else if a.Marked {
			t.Errorf("the other installation's account %q is listed Marked; want unmarked", theirs)
		}
		if a, ok := listed(h.Other, mine); ok && a.Marked {
			t.Errorf("this installation's account %q is listed Marked by the other; want unmarked", mine)
		}
		if a, ok := listed(h.Other, theirs); ok && !a.Marked {
			t.Errorf("the other installation does not recognise its own account %q", theirs)
		}
	}
	if h.CreateByHand != nil {
		byHand := Name(h.Prefix, h.MaxNameLen)
		h.CreateByHand(t, byHand)
		if a, ok := listed(h.Connector, byHand); !ok {
			t.Errorf("account %q created by hand under the prefix is not listed", byHand)
		} else if a.Marked {
			t.Errorf("account %q created by hand is listed Marked; want unmarked", byHand)
		}
	}
}

func testConcurrent(t *testing.T, h Harness) {
	n := h.Concurrency
	names := make([]string, n)
	for i := range names {
		names[i] = Name(h.Prefix, h.MaxNameLen)
	}
	run := func(f func(name string) error) error {
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = f(name)
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	ctx := ctxT(t)
	exp := time.Now().Add(10 * time.Minute)
	if err := run(func(name string) error {
		_, err := h.Connector.Provision(ctx, mayfly.ProvisionRequest{LeaseID: "lse_" + name, Username: name, Grant: h.Grant, ExpiresAt: exp})
		return err
	}); err != nil {
		t.Errorf("concurrent provisions: %v", err)
	}
	if err := run(func(name string) error {
		return h.Connector.Revoke(ctx, mayfly.RevokeRequest{LeaseID: "lse_" + name, Username: name, ExpiresAt: exp})
	}); err != nil {
		t.Errorf("concurrent revocations: %v", err)
	}
	left := accountNames(t, h)
	for _, name := range names {
		if slices.Contains(left, h.ProvisionedName(name)) {
			t.Errorf("after concurrent revocations %q is still present", name)
		}
	}
}

func testActivity(t *testing.T, h Harness) {
	if !h.ReportsActivity {
		t.Skip("target does not report activity")
	}
	name := Name(h.Prefix, h.MaxNameLen)
	cred := provision(t, h, name, h.Grant)
	find := func() mayfly.Account {
		accts, err := h.Connector.Accounts(ctxT(t), mayfly.AccountsRequest{Prefix: h.Prefix})
		if err != nil {
			t.Fatalf("Accounts: %v", err)
		}
		for _, a := range accts {
			if a.Name == h.ProvisionedName(name) {
				return a
			}
		}
		t.Fatalf("account %q not listed", name)
		return mayfly.Account{}
	}
	if a := find(); a.Sessions != 0 {
		t.Errorf("before any login, Sessions = %d; want 0", a.Sessions)
	}
	s, err := h.Login(ctxT(t), cred)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer s.Close()
	if err := s.Allowed(ctxT(t)); err != nil {
		t.Fatalf("allowed action: %v", err)
	}
	a := find()
	if a.Sessions < 1 && a.LastActivity.IsZero() {
		t.Errorf("with a live session, Accounts() reports Sessions=%d LastActivity=%v; want activity", a.Sessions, a.LastActivity)
	}
}
