package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

// testLoginStates: entries are single-use, lapse at their expiry, keep
// their key while live, and are bounded in number.
func testLoginStates(t *testing.T, s mayfly.Store) {
	var ls mayfly.LoginStateTx
	view(t, s, func(tx mayfly.Tx) error {
		var ok bool
		ls, ok = tx.(mayfly.LoginStateTx)
		if !ok {
			t.Skip("this store keeps no login states")
		}
		return nil
	})
	_ = ls
	now := base
	put := func(key, value string, expires time.Time, max int) error {
		return s.Update(t.Context(), func(tx mayfly.Tx) error {
			return tx.(mayfly.LoginStateTx).PutLoginState(key, []byte(value), now, expires, max)
		})
	}
	take := func(key string, at time.Time) ([]byte, error) {
		var v []byte
		err := s.Update(t.Context(), func(tx mayfly.Tx) error {
			var err error
			v, err = tx.(mayfly.LoginStateTx).TakeLoginState(key, at)
			return err
		})
		return v, err
	}
	has := func(key string, at time.Time) bool {
		var ok bool
		view(t, s, func(tx mayfly.Tx) error {
			var err error
			ok, err = tx.(mayfly.LoginStateTx).HasLoginState(key, at)
			return err
		})
		return ok
	}
	if err := put("state:a", "one", now.Add(time.Minute), 0); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "PutLoginState of a key in use", put("state:a", "two", now.Add(time.Minute), 0), mayfly.ECONFLICT)
	wantCode(t, "PutLoginState with no key", put("", "x", now.Add(time.Minute), 0), mayfly.EINVALID)
	wantCode(t, "PutLoginState expired already", put("state:b", "x", now, 0), mayfly.EINVALID)
	if !has("state:a", now) || has("state:a", now.Add(time.Minute+time.Nanosecond)) || has("state:zz", now) {
		t.Error("HasLoginState: want state:a present until its expiry, and state:zz absent")
	}
	v, err := take("state:a", now.Add(time.Second))
	if err != nil || string(v) != "one" {
		t.Fatalf("TakeLoginState = %q, %v; want one", v, err)
	}
	_, err = take("state:a", now.Add(time.Second))
	wantCode(t, "TakeLoginState taken twice", err, mayfly.ENOTFOUND)

	// An expired entry is not taken, and its key may be used again.
	if err := put("state:c", "old", now.Add(time.Second), 0); err != nil {
		t.Fatal(err)
	}
	_, err = take("state:c", now.Add(2*time.Second))
	wantCode(t, "TakeLoginState after expiry", err, mayfly.ENOTFOUND)
	if err := put("state:d", "old", now.Add(time.Second), 0); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	if err := put("state:d", "new", now.Add(time.Minute), 0); err != nil {
		t.Fatalf("PutLoginState over an expired entry: %v", err)
	}

	// The bound counts live entries only.
	for _, k := range []string{"n:1", "n:2"} {
		if err := put(k, "x", now.Add(time.Minute), 3); err != nil {
			t.Fatal(err)
		}
	}
	err = put("n:3", "x", now.Add(time.Minute), 3)
	wantCode(t, "PutLoginState beyond the bound", err, mayfly.EUNAVAILABLE)
	var me *mayfly.Error
	if !errors.As(err, &me) {
		t.Fatalf("bound error %v is not a *mayfly.Error", err)
	}
	if has("n:3", now) {
		t.Error("an entry refused by the bound was stored")
	}
}
