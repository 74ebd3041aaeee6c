package credential

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/testenv"
)

// TestRotationTargetDown rotates the admin password of a PostgreSQL
// target that goes away in the middle: before the target changes the
// password, and after it changed it but before the new one is verified.
// The rotation fails with a clear error that holds no password, the
// broker keeps a credential that works once the target is back, and Sync
// then settles the rotation the way the target went: the old password
// stays when the target never changed it, the new one becomes current
// when it did.
func TestRotationTargetDown(t *testing.T) {
	fx := pgFixture(t)
	delete(fixtures, fx.target.Name) // another test's account of the same name
	for _, tc := range []struct {
		cutAfter string
		changed  bool
	}{{StepPendingStored, false}, {StepChangedRecorded, true}} {
		t.Run("cut after "+tc.cutAfter, func(t *testing.T) {
			ctx := context.Background()
			start, err := currentCred(fx)
			if err != nil {
				t.Fatal(err)
			}
			proxy, su := testenv.ProxyTo(t, start)
			viaProxy := func(dsn string) string {
				u, err := url.Parse(dsn)
				if err != nil {
					t.Fatal(err)
				}
				u.Host = proxy.Addr()
				return u.String()
			}
			direct := func(dsn string) string {
				u, err := url.Parse(dsn)
				if err != nil {
					t.Fatal(err)
				}
				u.Host = su.Host
				return u.String()
			}
			target := fx.target
			target.DSN = viaProxy(start)

			e := newEnv(t)
			m := New(Options{Store: e.st, Keys: e.keys, Kinds: testKinds(), Holder: "r1",
				AfterStep: func(step string) {
					if step == tc.cutAfter {
						proxy.Cut()
					}
				}})
			c, err := m.Connector(ctx, target)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := m.Set(ctx, "admin", "", target.Name, target.DSN, true); err != nil {
				t.Fatalf("Set: %v", err)
			}

			_, rotErr := m.Rotate(ctx, "admin", "", target.Name)
			if code := mayfly.ErrorCode(rotErr); code != mayfly.EUNAVAILABLE {
				t.Fatalf("Rotate with the target gone after %s = %v (%s); want unavailable", tc.cutAfter, rotErr, code)
			}
			rec, _ := current(t, ctx, m, target.Name)
			if rec.Pending == "" {
				t.Fatalf("the rotation left nothing pending while the target was down")
			}
			pending, err := m.open(target.Name, rec.Pending)
			if err != nil {
				t.Fatal(err)
			}
			pu, _ := url.Parse(pending)
			newPassword, _ := pu.User.Password()
			oldPassword, _ := su.User.Password()
			for _, secret := range []string{newPassword, oldPassword} {
				if secret != "" && strings.Contains(rotErr.Error(), secret) {
					t.Fatalf("the rotation's error holds a password: %v", rotErr)
				}
			}
			if !strings.Contains(rotErr.Error(), "the rotation stays pending and is settled once the target answers again") {
				t.Errorf("the rotation's error does not say what became of it: %v", rotErr)
			}
			t.Logf("refused with: %v", rotErr)

			// The target is back: the broker works with what it holds, and
			// Sync settles the rotation.
			proxy.Thaw()
			if err := m.Sync(ctx); err != nil {
				t.Fatalf("Sync once the target is back: %v", err)
			}
			rec, cur := current(t, ctx, m, target.Name)
			if rec.Pending != "" {
				t.Fatalf("Sync left the rotation pending")
			}
			if got, want := cur == viaProxy(start), !tc.changed; got != want {
				t.Fatalf("after Sync the old credential is current = %v; want %v", got, want)
			}
			if tc.changed && cur != pending {
				t.Fatalf("after Sync the current credential is neither the old one nor the one set on the target")
			}
			if err := fx.login(ctx, direct(cur)); err != nil {
				t.Fatalf("the current credential does not log in: %v", err)
			}
			if tc.changed {
				if err := fx.login(ctx, start); err == nil {
					t.Fatalf("the old admin password still logs in after the target changed it")
				}
			}
			if err := c.Check(ctx); err != nil {
				t.Fatalf("the broker's connector does not work once the target is back: %v", err)
			}
			issue(t, ctx, fx, c, "a rotation cut after "+tc.cutAfter)
			fixtures[fx.target.Name] = direct(cur)
		})
	}
}
