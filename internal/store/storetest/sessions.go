package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func sessionIDs(ss []*mayfly.Session) []string {
	ids := []string{}
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}

// testSessions covers the round trip of a session, its filters and pages,
// and ending it.
func testSessions(t *testing.T, s mayfly.Store) {
	a := &mayfly.Session{ID: "ses_a", Kind: mayfly.SessionPostgres, LeaseID: "l1", RequestID: "r1", User: "alice",
		Target: "pg", Grant: "readonly", Account: "mf_alice_x", ClientAddr: "127.0.0.1:5555", StartedAt: base,
		Data: map[string]string{"database": "app"}}
	b := &mayfly.Session{ID: "ses_b", Kind: mayfly.SessionSSH, LeaseID: "l2", User: "bob", Target: "web",
		StartedAt: base.Add(time.Second)}
	c := &mayfly.Session{ID: "ses_c", Kind: mayfly.SessionPostgres, LeaseID: "l1", User: "alice", Target: "pg",
		StartedAt: base.Add(2 * time.Second)}
	update(t, s, func(tx mayfly.Tx) error {
		for _, x := range []*mayfly.Session{c, a, b} {
			if err := tx.CreateSession(x); err != nil {
				return err
			}
		}
		return nil
	})
	err := s.Update(context.Background(), func(tx mayfly.Tx) error { return tx.CreateSession(a) })
	wantCode(t, "CreateSession(duplicate)", err, mayfly.ECONFLICT)
	err = s.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.CreateSession(&mayfly.Session{ID: "x", Kind: "postgres", StartedAt: base})
	})
	wantCode(t, "CreateSession(no lease, no user)", err, mayfly.EINVALID)

	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.GetSession("ses_a")
		if err != nil {
			return err
		}
		want := *a
		want.StartedAt = utc(want.StartedAt)
		if !reflect.DeepEqual(got, &want) {
			t.Errorf("GetSession(ses_a) = %+v; want %+v", got, &want)
		}
		_, err = tx.GetSession("nope")
		wantCode(t, "GetSession(missing)", err, mayfly.ENOTFOUND)
		for _, tc := range []struct {
			f    mayfly.SessionFilter
			want []string
		}{
			{mayfly.SessionFilter{}, []string{"ses_a", "ses_b", "ses_c"}},
			{mayfly.SessionFilter{LeaseID: "l1"}, []string{"ses_a", "ses_c"}},
			{mayfly.SessionFilter{User: "bob"}, []string{"ses_b"}},
			{mayfly.SessionFilter{Kind: mayfly.SessionPostgres, User: "alice"}, []string{"ses_a", "ses_c"}},
			{mayfly.SessionFilter{IDs: []string{"ses_c", "ses_b"}}, []string{"ses_b", "ses_c"}},
			{mayfly.SessionFilter{Limit: 2}, []string{"ses_a", "ses_b"}},
			{mayfly.SessionFilter{After: mayfly.PageCursor{CreatedAt: a.StartedAt, ID: a.ID}}, []string{"ses_b", "ses_c"}},
			{mayfly.SessionFilter{LeaseID: "none"}, []string{}},
		} {
			got, err := tx.ListSessions(tc.f)
			if err != nil {
				return err
			}
			if ids := sessionIDs(got); !reflect.DeepEqual(ids, tc.want) {
				t.Errorf("ListSessions(%+v) = %v; want %v", tc.f, ids, tc.want)
			}
		}
		return nil
	})

	end := base.Add(time.Minute)
	update(t, s, func(tx mayfly.Tx) error { return tx.EndSession("ses_a", end, "revoked") })
	err = s.Update(context.Background(), func(tx mayfly.Tx) error { return tx.EndSession("ses_a", end, "again") })
	wantCode(t, "EndSession(ended)", err, mayfly.ECONFLICT)
	err = s.Update(context.Background(), func(tx mayfly.Tx) error { return tx.EndSession("nope", end, "x") })
	wantCode(t, "EndSession(missing)", err, mayfly.ENOTFOUND)
	err = s.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.AppendSessionEvents("ses_a", []*mayfly.SessionEvent{{Time: end, Kind: "statement"}})
	})
	wantCode(t, "AppendSessionEvents(ended)", err, mayfly.ECONFLICT)
	err = s.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.AppendSessionEvents("nope", []*mayfly.SessionEvent{{Time: end, Kind: "statement"}})
	})
	wantCode(t, "AppendSessionEvents(missing)", err, mayfly.ENOTFOUND)
	view(t, s, func(tx mayfly.Tx) error {
		got, err := tx.GetSession("ses_a")
		if err != nil {
			return err
		}
		if !got.EndedAt.Equal(end) || got.EndReason != "revoked" {
			t.Errorf("ended session: ended_at %v, reason %q; want %v, revoked", got.EndedAt, got.EndReason, end)
		}
		open, err := tx.ListSessions(mayfly.SessionFilter{Open: true})
		if err != nil {
			return err
		}
		if ids := sessionIDs(open); !reflect.DeepEqual(ids, []string{"ses_b", "ses_c"}) {
			t.Errorf("ListSessions(open) = %v; want [ses_b ses_c]", ids)
		}
		return nil
	})
}

// testSessionEvents covers the chain of a session's events: sequence
// numbers, hashes, bodies stored as compact JSON, the head kept on the
// session, paging, and a rolled-back append that leaves nothing.
func testSessionEvents(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error {
		return tx.CreateSession(&mayfly.Session{ID: "ses_1", Kind: mayfly.SessionPostgres, LeaseID: "l1", User: "alice",
			Target: "pg", StartedAt: base})
	})
	var all []*mayfly.SessionEvent
	for i := range 3 {
		evs := []*mayfly.SessionEvent{
			{Time: base.Add(time.Duration(i) * time.Second), Kind: "statement",
				Body: json.RawMessage(fmt.Sprintf(`{ "text" : "SELECT %d",  "rows": 1 }`, i))},
			{Time: base.Add(time.Duration(i)*time.Second + time.Millisecond), Kind: "notice"},
		}
		update(t, s, func(tx mayfly.Tx) error { return tx.AppendSessionEvents("ses_1", evs) })
		all = append(all, evs...)
	}
	// A large append, which a store may write in chunks: checked below
	// with the rest, event by event.
	var big []*mayfly.SessionEvent
	for i := range 75 {
		big = append(big, &mayfly.SessionEvent{Time: base.Add(time.Minute + time.Duration(i)*time.Millisecond), Kind: "statement",
			Body: json.RawMessage(fmt.Sprintf(`{"text":"SELECT %d"}`, i))})
	}
	update(t, s, func(tx mayfly.Tx) error { return tx.AppendSessionEvents("ses_1", big) })
	all = append(all, big...)
	for i, e := range all {
		if e.Seq != int64(i+1) || e.SessionID != "ses_1" {
			t.Errorf("event %d: seq %d session %q; want %d ses_1", i, e.Seq, e.SessionID, i+1)
		}
		prev := ""
		if i > 0 {
			prev = all[i-1].Hash
		}
		if e.PrevHash != prev || e.Hash != e.ComputeHash() || e.Hash == "" {
			t.Errorf("event %d: prev_hash %q hash %q; want prev %q and a hash of its content", i, e.PrevHash, e.Hash, prev)
		}
	}
	if got := string(all[0].Body); got != `{"text":"SELECT 0","rows":1}` {
		t.Errorf("stored body = %s; want compact JSON", got)
	}
	// An append that rolls back leaves neither events nor a moved head.
	err := s.Update(context.Background(), func(tx mayfly.Tx) error {
		if err := tx.AppendSessionEvents("ses_1", []*mayfly.SessionEvent{{Time: base, Kind: "x"}}); err != nil {
			return err
		}
		return fmt.Errorf("roll back")
	})
	if err == nil {
		t.Fatal("Update returned nil after fn failed")
	}
	err = s.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.AppendSessionEvents("ses_1", []*mayfly.SessionEvent{{Time: base, Kind: "x", Body: json.RawMessage("{nope")}})
	})
	wantCode(t, "AppendSessionEvents(bad body)", err, mayfly.EINVALID)
	err = s.Update(context.Background(), func(tx mayfly.Tx) error {
		return tx.AppendSessionEvents("ses_1", []*mayfly.SessionEvent{{Time: base}})
	})
	wantCode(t, "AppendSessionEvents(no kind)", err, mayfly.EINVALID)

	view(t, s, func(tx mayfly.Tx) error {
		ses, err := tx.GetSession("ses_1")
		if err != nil {
			return err
		}
		if last := all[len(all)-1]; ses.Events != last.Seq || ses.LastHash != last.Hash {
			t.Errorf("session head = %d %s; want %d %s", ses.Events, ses.LastHash, last.Seq, last.Hash)
		}
		got, err := tx.ListSessionEvents("ses_1", 0, 0)
		if err != nil {
			return err
		}
		if len(got) != len(all) {
			t.Fatalf("ListSessionEvents = %d events; want %d", len(got), len(all))
		}
		for i, e := range got {
			w := *all[i]
			w.Time = utc(w.Time)
			if !reflect.DeepEqual(e, &w) {
				t.Errorf("event %d = %+v; want %+v", i, e, &w)
			}
			if e.ComputeHash() != e.Hash {
				t.Errorf("event %d read back does not hash to its hash", i)
			}
		}
		page, err := tx.ListSessionEvents("ses_1", 2, 3)
		if err != nil {
			return err
		}
		if len(page) != 3 || page[0].Seq != 3 || page[2].Seq != 5 {
			t.Errorf("ListSessionEvents(after 2, limit 3) = %d events from %v; want seq 3 to 5", len(page), page)
		}
		none, err := tx.ListSessionEvents("other", 0, 0)
		if err != nil {
			return err
		}
		if len(none) != 0 {
			t.Errorf("ListSessionEvents(other) = %d events; want 0", len(none))
		}
		return nil
	})
}

// testConcurrentSessionAppends appends to one session from several
// goroutines at once: the chain has no gap and no fork.
func testConcurrentSessionAppends(t *testing.T, s mayfly.Store) {
	update(t, s, func(tx mayfly.Tx) error {
		return tx.CreateSession(&mayfly.Session{ID: "ses_c", Kind: mayfly.SessionSSH, LeaseID: "l1", User: "alice",
			Target: "web", StartedAt: base})
	})
	const workers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				errs <- s.Update(context.Background(), func(tx mayfly.Tx) error {
					return tx.AppendSessionEvents("ses_c", []*mayfly.SessionEvent{{Time: base, Kind: "output",
						Body: json.RawMessage(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))}})
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	view(t, s, func(tx mayfly.Tx) error { return wantUnbrokenChain(t, tx, "ses_c", workers*each) })
}

// wantUnbrokenChain checks that session id has n events numbered from 1,
// each chained to the one before and hashing to its hash (no gap, no
// fork), and that the session's head is the last.
func wantUnbrokenChain(t *testing.T, tx mayfly.Tx, id string, n int) error {
	t.Helper()
	evs, err := tx.ListSessionEvents(id, 0, 0)
	if err != nil {
		return err
	}
	if len(evs) != n {
		t.Fatalf("%s: %d events; want %d", id, len(evs), n)
	}
	prev := ""
	for i, e := range evs {
		if e.Seq != int64(i+1) || e.PrevHash != prev || e.ComputeHash() != e.Hash {
			t.Fatalf("%s: event %d (seq %d) breaks the chain", id, i, e.Seq)
		}
		prev = e.Hash
	}
	ses, err := tx.GetSession(id)
	if err != nil {
		return err
	}
	if n > 0 && (ses.Events != evs[n-1].Seq || ses.LastHash != evs[n-1].Hash) {
		t.Errorf("%s head = %d %s; want %d %s", id, ses.Events, ses.LastHash, evs[n-1].Seq, evs[n-1].Hash)
	}
	return nil
}

// testAppendSessionsEvents covers appends to several sessions in one call:
// each chain continues after its own head, a session named twice chains
// on in order, and a call naming a missing or ended session, or with an
// event that cannot be chained, fails with that session's error and
// appends nothing, to no session. Then a concurrent writer of one session
// meets the batch's lock of its head (the chain has no fork).
func testAppendSessionsEvents(t *testing.T, s mayfly.Store) {
	ids := []string{"ses_m3", "ses_m1", "ses_m2", "ses_mx"}
	update(t, s, func(tx mayfly.Tx) error {
		for _, id := range ids {
			if err := tx.CreateSession(&mayfly.Session{ID: id, Kind: mayfly.SessionPostgres, LeaseID: "l1", User: "alice",
				Target: "pg", StartedAt: base}); err != nil {
				return err
			}
		}
		if err := tx.AppendSessionEvents("ses_m2", []*mayfly.SessionEvent{{Time: base, Kind: "statement"}}); err != nil {
			return err
		}
		return tx.EndSession("ses_mx", base, "closed")
	})
	ev := func(i int) *mayfly.SessionEvent {
		return &mayfly.SessionEvent{Time: base.Add(time.Duration(i) * time.Millisecond), Kind: "statement",
			Body: json.RawMessage(fmt.Sprintf(`{"text": "SELECT %d"}`, i))}
	}
	heads := func() map[string]int64 {
		out := map[string]int64{}
		view(t, s, func(tx mayfly.Tx) error {
			for _, id := range ids {
				ses, err := tx.GetSession(id)
				if err != nil {
					return err
				}
				out[id] = ses.Events
			}
			return nil
		})
		return out
	}
	before := heads()
	for _, tc := range []struct {
		name string
		as   []mayfly.SessionAppend
		code string
		want string
	}{
		{"missing", []mayfly.SessionAppend{{ID: "ses_m1", Events: []*mayfly.SessionEvent{ev(1)}}, {ID: "ses_nope", Events: []*mayfly.SessionEvent{ev(2)}}},
			mayfly.ENOTFOUND, "ses_nope"},
		{"ended", []mayfly.SessionAppend{{ID: "ses_m3", Events: []*mayfly.SessionEvent{ev(1)}}, {ID: "ses_mx", Events: []*mayfly.SessionEvent{ev(2)}}},
			mayfly.ECONFLICT, "ses_mx"},
		{"no kind", []mayfly.SessionAppend{{ID: "ses_m1", Events: []*mayfly.SessionEvent{ev(1)}}, {ID: "ses_m2", Events: []*mayfly.SessionEvent{{Time: base}}}},
			mayfly.EINVALID, "ses_m2"},
	} {
		var called error
		err := s.Update(context.Background(), func(tx mayfly.Tx) error {
			called = tx.AppendSessionsEvents(tc.as)
			return nil // commit whatever the failed call may have left
		})
		if err != nil {
			t.Fatalf("AppendSessionsEvents(%s): Update: %v", tc.name, err)
		}
		wantCode(t, "AppendSessionsEvents("+tc.name+")", called, tc.code)
		if called != nil && !strings.Contains(called.Error(), tc.want) {
			t.Errorf("AppendSessionsEvents(%s) = %v; want it to name %s", tc.name, called, tc.want)
		}
		if got := heads(); !reflect.DeepEqual(got, before) {
			t.Errorf("after the failed AppendSessionsEvents(%s), heads %v; want them unmoved, %v", tc.name, got, before)
		}
	}

	// ses_m1 twice: its second part chains after its first.
	as := []mayfly.SessionAppend{
		{ID: "ses_m3", Events: []*mayfly.SessionEvent{ev(1), ev(2)}},
		{ID: "ses_m1", Events: []*mayfly.SessionEvent{ev(3)}},
		{ID: "ses_m2", Events: []*mayfly.SessionEvent{ev(4), ev(5), ev(6)}},
		{ID: "ses_m1", Events: []*mayfly.SessionEvent{ev(7)}},
		{ID: "ses_m3"},
	}
	update(t, s, func(tx mayfly.Tx) error { return tx.AppendSessionsEvents(as) })
	want := map[string][]*mayfly.SessionEvent{
		"ses_m3": as[0].Events,
		"ses_m1": {as[1].Events[0], as[3].Events[0]},
		"ses_m2": as[2].Events,
	}
	view(t, s, func(tx mayfly.Tx) error {
		for id, evs := range want {
			got, err := tx.ListSessionEvents(id, before[id], 0)
			if err != nil {
				return err
			}
			if len(got) != len(evs) {
				t.Fatalf("%s: %d new events; want %d", id, len(got), len(evs))
			}
			for i, e := range got {
				w := *evs[i]
				w.Time = utc(w.Time)
				if !reflect.DeepEqual(e, &w) {
					t.Errorf("%s event %d = %+v; want %+v", id, i, e, &w)
				}
			}
			if err := wantUnbrokenChain(t, tx, id, int(before[id])+len(evs)); err != nil {
				return err
			}
		}
		return nil
	})

	// Batches of two sessions and single appends to one of them, at once.
	const rounds = 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*rounds)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range rounds {
			errs <- s.Update(context.Background(), func(tx mayfly.Tx) error {
				return tx.AppendSessionsEvents([]mayfly.SessionAppend{{ID: "ses_m2", Events: []*mayfly.SessionEvent{ev(100 + i)}},
					{ID: "ses_m1", Events: []*mayfly.SessionEvent{ev(200 + i)}}})
			})
		}
	}()
	go func() {
		defer wg.Done()
		for i := range rounds {
			errs <- s.Update(context.Background(), func(tx mayfly.Tx) error {
				return tx.AppendSessionEvents("ses_m1", []*mayfly.SessionEvent{ev(300 + i)})
			})
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	view(t, s, func(tx mayfly.Tx) error {
		for id, n := range map[string]int{"ses_m1": 2 + 2*rounds, "ses_m2": 1 + 3 + rounds} {
			if err := wantUnbrokenChain(t, tx, id, n); err != nil {
				return err
			}
		}
		return nil
	})
}
