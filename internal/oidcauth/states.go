package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
)

// stateSet holds single-use entries until they expire: in the store when
// it keeps login states (mayfly.LoginStateTx), else in memory.
type stateSet struct {
	store mayfly.Store
	log   *slog.Logger

	mu sync.Mutex
	m  map[string]stateEntry // without a store
}

type stateEntry struct {
	value   []byte
	expires time.Time
}

// maxPending bounds the logins in progress (and the device-flow ID tokens
// remembered), so unauthenticated callers cannot grow them without end.
const maxPending = 100_000

// stateTimeout bounds one store call of a login.
const stateTimeout = 5 * time.Second

// put stores v (JSON-encoded) under key until expires. It fails with
// EUNAVAILABLE when too many logins are in progress or the store does not
// answer.
func (ss *stateSet) put(now time.Time, key string, v any, expires time.Time) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if ss.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
		defer cancel()
		stored := false
		err := ss.store.Update(ctx, func(tx mayfly.Tx) error {
			lt, ok := tx.(mayfly.LoginStateTx)
			if !ok {
				return nil
			}
			stored = true
			return lt.PutLoginState(key, b, now, expires, maxPending)
		})
		if stored || err != nil {
			return ss.storeErr("keep the login's state", err)
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[string]stateEntry{}
	}
	if len(ss.m) >= maxPending/2 {
		for k, e := range ss.m {
			if now.After(e.expires) {
				delete(ss.m, k)
			}
		}
	}
	if len(ss.m) >= maxPending {
		return errBusy
	}
	ss.m[key] = stateEntry{value: b, expires: expires}
	return nil
}

// take removes the entry under key and decodes it into v; false when there
// is none, it expired, or the store failed (logged).
func (ss *stateSet) take(now time.Time, key string, v any) bool {
	var b []byte
	if ss.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
		defer cancel()
		stored := false
		err := ss.store.Update(ctx, func(tx mayfly.Tx) error {
			lt, ok := tx.(mayfly.LoginStateTx)
			if !ok {
				return nil
			}
			stored = true
			var err error
			b, err = lt.TakeLoginState(key, now)
			return err
		})
		if stored || err != nil {
			if err != nil {
				if mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
					ss.log.Error("oidc: reading a login's state", "err", err)
				}
				return false
			}
			return json.Unmarshal(b, v) == nil
		}
	}
	ss.mu.Lock()
	e, ok := ss.m[key]
	delete(ss.m, key)
	ss.mu.Unlock()
	if !ok || now.After(e.expires) {
		return false
	}
	return json.Unmarshal(e.value, v) == nil
}

// has reports whether key is present and unexpired (true when the store
// fails, so that a check of reuse errs on the side of refusing).
func (ss *stateSet) has(now time.Time, key string) bool {
	if ss.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
		defer cancel()
		var found, stored bool
		err := ss.store.View(ctx, func(tx mayfly.Tx) error {
			lt, ok := tx.(mayfly.LoginStateTx)
			if !ok {
				return nil
			}
			stored = true
			var err error
			found, err = lt.HasLoginState(key, now)
			return err
		})
		if err != nil {
			ss.log.Error("oidc: reading a login's state", "err", err)
			return true
		}
		if stored {
			return found
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	e, ok := ss.m[key]
	return ok && !now.After(e.expires)
}

// storeErr is what a login is told when the store refused or failed.
func (ss *stateSet) storeErr(what string, err error) error {
	if err == nil {
		return nil
	}
	var me *mayfly.Error
	if errors.As(err, &me) && me.Code == mayfly.EUNAVAILABLE {
		return err
	}
	ss.log.Error("oidc: "+what, "err", err)
	return mayfly.Errorf(mayfly.EUNAVAILABLE, "cannot %s now (the store did not answer); try again", what)
}

// pendingJSON is a pending login as it is stored.
type pendingJSON struct {
	Nonce    string    `json:"nonce,omitempty"`
	Verifier string    `json:"verifier,omitempty"`
	Redirect string    `json:"redirect,omitempty"`
	ReturnTo string    `json:"return_to,omitempty"`
	Poll     string    `json:"poll,omitempty"`
	Expires  time.Time `json:"expires"`
}

func (p pending) MarshalJSON() ([]byte, error) {
	return json.Marshal(pendingJSON{p.nonce, p.verifier, p.redirect, p.returnTo, p.poll, p.expires})
}

func (p *pending) UnmarshalJSON(b []byte) error {
	var j pendingJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = pending{nonce: j.Nonce, verifier: j.Verifier, redirect: j.Redirect, returnTo: j.ReturnTo, poll: j.Poll, expires: j.Expires}
	return nil
}

// polledJSON is a finished login waiting for its CLI, as it is stored.
type polledJSON struct {
	User    string    `json:"user,omitempty"`
	Groups  []string  `json:"groups,omitempty"`
	Method  string    `json:"method,omitempty"`
	ErrCode string    `json:"err_code,omitempty"`
	ErrMsg  string    `json:"err,omitempty"`
	Code    string    `json:"code,omitempty"`
	Expires time.Time `json:"expires"`
}

func (p polled) MarshalJSON() ([]byte, error) {
	j := polledJSON{User: p.login.User, Groups: p.login.Groups, Method: p.login.Method, Code: p.code, Expires: p.expires}
	if p.err != nil {
		j.ErrCode, j.ErrMsg = mayfly.ErrorCode(p.err), mayfly.ErrorMessage(p.err)
	}
	return json.Marshal(j)
}

func (p *polled) UnmarshalJSON(b []byte) error {
	var j polledJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = polled{login: Login{User: j.User, Groups: j.Groups, Method: j.Method}, code: j.Code, expires: j.Expires}
	if j.ErrMsg != "" {
		p.err = mayfly.Errorf(j.ErrCode, "%s", j.ErrMsg)
	}
	return nil
}
