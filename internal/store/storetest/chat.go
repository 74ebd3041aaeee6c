package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func testChatMessages(t *testing.T, s mayfly.Store) {
	view(t, s, func(tx mayfly.Tx) error {
		if _, err := tx.GetChatMessage("req_none"); mayfly.ErrorCode(err) != mayfly.ENOTFOUND {
			t.Errorf("GetChatMessage(missing) error = %v; want ENOTFOUND", err)
		}
		return nil
	})
	m := &mayfly.ChatMessage{RequestID: "req_1", Channel: "C123", TS: "1700000000.000100", UpdatedAt: base}
	update(t, s, func(tx mayfly.Tx) error { return tx.PutChatMessage(m) })
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.GetChatMessage("req_1")
		if err != nil {
			t.Fatalf("GetChatMessage: %v", err)
		}
		if got.Channel != m.Channel || got.TS != m.TS || !got.UpdatedAt.Equal(base) {
			t.Errorf("GetChatMessage = %+v; want %+v", got, m)
		}
		return nil
	})
	// Put replaces.
	m2 := &mayfly.ChatMessage{RequestID: "req_1", Channel: "C999", TS: "1700000001.000200", UpdatedAt: base.Add(time.Minute)}
	update(t, s, func(tx mayfly.Tx) error { return tx.PutChatMessage(m2) })
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.GetChatMessage("req_1")
		if err != nil {
			t.Fatalf("GetChatMessage: %v", err)
		}
		if got.Channel != "C999" || got.TS != "1700000001.000200" {
			t.Errorf("GetChatMessage after replace = %+v; want %+v", got, m2)
		}
		return nil
	})
	err := s.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.PutChatMessage(&mayfly.ChatMessage{RequestID: "req_2"})
	})
	if mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("PutChatMessage without channel: error = %v; want EINVALID", err)
	}
}

func testNonces(t *testing.T, s mayfly.Store) {
	use := func(key string, now time.Time) error {
		return s.Update(context.Background(), func(tx mayfly.Tx) error { return tx.UseNonce(key, now, now.Add(10*time.Minute)) })
	}
	if err := use("sig-a", base); err != nil {
		t.Fatalf("UseNonce first: %v", err)
	}
	if err := use("sig-a", base.Add(time.Minute)); mayfly.ErrorCode(err) != mayfly.ECONFLICT {
		t.Errorf("UseNonce replayed within its window: error = %v; want ECONFLICT", err)
	}
	if err := use("sig-b", base.Add(time.Minute)); err != nil {
		t.Errorf("UseNonce of another key: %v", err)
	}
	// Once its window has passed, the key is forgotten (and may be used
	// again: the signed request's own timestamp is refused by then).
	if err := use("sig-a", base.Add(11*time.Minute)); err != nil {
		t.Errorf("UseNonce after its window: %v", err)
	}
	err := s.Update(context.Background(), func(tx mayfly.Tx) error { return tx.UseNonce("", base, base.Add(time.Minute)) })
	if mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("UseNonce(\"\") error = %v; want EINVALID", err)
	}
	err = s.Update(context.Background(), func(tx mayfly.Tx) error { return tx.UseNonce("k", base, base) })
	if mayfly.ErrorCode(err) != mayfly.EINVALID {
		t.Errorf("UseNonce with until = now: error = %v; want EINVALID", err)
	}

	// Of many transactions using one key at once, exactly one succeeds.
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	now := base.Add(time.Hour)
	for i := range n {
		wg.Go(func() { errs[i] = use("sig-race", now) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case mayfly.ErrorCode(err) != mayfly.ECONFLICT:
			t.Errorf("concurrent UseNonce: unexpected error %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("concurrent UseNonce of one key: %d succeeded; want exactly 1", ok)
	}
}
