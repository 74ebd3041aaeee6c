package httpapi

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/metrics"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// countingStore wraps a store and counts the rows its lists return, to
// show how much a call reads.
type countingStore struct {
	mayfly.Store
	requests, leases, audit atomic.Int64
}

func (s *countingStore) View(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	return s.Store.View(ctx, func(tx mayfly.Tx) error { return fn(countingTx{tx, s}) })
}

func (s *countingStore) Update(ctx context.Context, fn func(tx mayfly.Tx) error) error {
	return s.Store.Update(ctx, func(tx mayfly.Tx) error { return fn(countingTx{tx, s}) })
}

// rows returns the rows read so far by each kind of list.
func (s *countingStore) rows() (requests, leases, audit int64) {
	return s.requests.Load(), s.leases.Load(), s.audit.Load()
}

type countingTx struct {
	mayfly.Tx
	s *countingStore
}

func (t countingTx) ListRequests(f mayfly.RequestFilter) ([]*mayfly.Request, error) {
	rs, err := t.Tx.ListRequests(f)
	t.s.requests.Add(int64(len(rs)))
	return rs, err
}

func (t countingTx) ListLeases(f mayfly.LeaseFilter) ([]*mayfly.Lease, error) {
	ls, err := t.Tx.ListLeases(f)
	t.s.leases.Add(int64(len(ls)))
	return ls, err
}

func (t countingTx) ListAudit(f mayfly.AuditFilter) ([]*mayfly.AuditEvent, error) {
	es, err := t.Tx.ListAudit(f)
	t.s.audit.Add(int64(len(es)))
	return es, err
}

// tokens authenticates "<name>-token" as name; admin is the only admin.
type tokens map[string]Identity

func (ts tokens) Authenticate(sum string) (Identity, bool) {
	id, ok := ts[sum]
	return id, ok
}

// apiWorld is the real API server over a real SQLite store.
type apiWorld struct {
	t      *testing.T
	store  *countingStore
	broker *broker.Broker
	srv    *httptest.Server
}

var identities = []Identity{
	{Name: "admin", Admin: true},
	{Name: "alice", Groups: []string{"eng"}},
	{Name: "bob", Groups: []string{"eng", "dba"}},
	{Name: "carol", Groups: []string{"eng"}},
}

func newAPIWorld(t *testing.T, withMetrics bool) *apiWorld {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "mayfly.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := &countingStore{Store: db}
	b := broker.New(&broker.Config{Targets: map[string]mayfly.Target{}}, broker.Options{Store: st, HMACKey: []byte("k")})
	auth := tokens{}
	for _, id := range identities {
		sum := sha256.Sum256([]byte(id.Name + "-token"))
		auth[hex.EncodeToString(sum[:])] = id
	}
	d := Deps{Broker: b, Auth: auth}
	if withMetrics {
		d.Metrics = metrics.New(st)
	}
	srv := httptest.NewServer(NewServer(d))
	t.Cleanup(srv.Close)
	return &apiWorld{t: t, store: st, broker: b, srv: srv}
}

// get calls GET path as user and decodes the JSON answer into out; it
// returns the status and the next-page cursor.
func (w *apiWorld) get(user, path string, q url.Values, out any) (int, string) {
	w.t.Helper()
	return w.call(user, "GET", path, q, "", out)
}

func (w *apiWorld) call(user, method, path string, q url.Values, body string, out any) (int, string) {
	w.t.Helper()
	u := w.srv.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+user+"-token")
	}
	resp, err := w.srv.Client().Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			w.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, resp.Header.Get(NextCursorHeader)
}

var t0 = time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)

// addRequests stores n requests of requester, created one second apart
// from start, waiting for approvers in groups.
func (w *apiWorld) addRequests(prefix, requester string, n int, start time.Time, groups ...string) []string {
	w.t.Helper()
	var ids []string
	err := w.store.Update(context.Background(), func(tx mayfly.Tx) error {
		for i := range n {
			r := &mayfly.Request{ID: fmt.Sprintf("%s-%04d", prefix, i), Requester: requester, Target: "pg", Grant: "ro",
				Reason: "INC-1", Duration: time.Hour, State: mayfly.RequestPending, ApprovalsRequired: len(groups),
				ApproverGroups: groups, CreatedAt: start.Add(time.Duration(i) * time.Second)}
			if err := tx.CreateRequest(r); err != nil {
				return err
			}
			ids = append(ids, r.ID)
		}
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return ids
}

func (w *apiWorld) addLeases(prefix, requester string, n int, state mayfly.LeaseState) []string {
	w.t.Helper()
	var ids []string
	err := w.store.Update(context.Background(), func(tx mayfly.Tx) error {
		for i := range n {
			// Several leases share a creation time, so pages must order
			// by id within it.
			l := &mayfly.Lease{ID: fmt.Sprintf("%s-%04d", prefix, i), RequestID: "r", Requester: requester, Target: "pg",
				Grant: "ro", Username: fmt.Sprintf("mf_%s_%d", prefix, i), State: state,
				CreatedAt: t0.Add(time.Duration(i/3) * time.Second), ExpiresAt: t0.Add(time.Hour), DueAt: t0.Add(time.Hour)}
			if err := tx.CreateLease(l); err != nil {
				return err
			}
			ids = append(ids, l.ID)
		}
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return ids
}

func (w *apiWorld) addEvents(actor string, n int, requestID string) {
	w.t.Helper()
	err := w.store.Update(context.Background(), func(tx mayfly.Tx) error {
		for range n {
			if err := tx.AppendAudit(&mayfly.AuditEvent{Time: t0, Actor: actor, Action: "request.create", RequestID: requestID}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

func requestIDsOf(rs []RequestView) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return ids
}

// TestListRequestsNonAdminLimit checks that a non-admin's limit counts
// the requests they may see, and that the server reads about a page to
// answer, not every request ever made.
func TestListRequestsNonAdminLimit(t *testing.T) {
	w := newAPIWorld(t, false)
	others := w.addRequests("carol", "carol", 300, t0, "dba")
	own := w.addRequests("alice", "alice", 1, t0.Add(time.Hour))
	for _, tt := range []struct {
		user    string
		q       url.Values
		want    []string
		maxRead int64
	}{
		{"alice", url.Values{"limit": {"10"}}, own, 2},
		{"alice", url.Values{"limit": {"10"}, "pending": {"true"}}, own, 2},
		{"alice", nil, own, 2},
		// bob decides carol's requests: a page of 10 of them.
		{"bob", url.Values{"limit": {"10"}}, others[:10], 11},
		{"admin", url.Values{"limit": {"10"}}, others[:10], 11},
	} {
		before, _, _ := w.store.rows()
		var got []RequestView
		status, next := w.get(tt.user, "/v1/requests", tt.q, &got)
		read, _, _ := w.store.rows()
		read -= before
		if status != 200 || !slices.Equal(requestIDsOf(got), tt.want) {
			t.Errorf("%s: GET /v1/requests?%s = %d %v; want 200 %v", tt.user, tt.q.Encode(), status, requestIDsOf(got), tt.want)
		}
		if read > tt.maxRead {
			t.Errorf("%s: GET /v1/requests?%s read %d requests from the store; want at most %d", tt.user, tt.q.Encode(), read, tt.maxRead)
		}
		if (next != "") != (len(tt.want) == 10) {
			t.Errorf("%s: GET /v1/requests?%s: next cursor %q; want one only when more follow", tt.user, tt.q.Encode(), next)
		}
	}
}

// TestListPagesWalkAll walks requests, leases and audit events page by
// page with the next cursor: every item comes exactly once, in order.
func TestListPagesWalkAll(t *testing.T) {
	w := newAPIWorld(t, false)
	wantReqs := w.addRequests("r", "carol", 203, t0, "dba")
	wantLeases := w.addLeases("l", "carol", 95, mayfly.LeaseRevoked)
	w.addEvents("carol", 120, "")

	walk := func(user, path string, q url.Values, get func() []string, out func() any) []string {
		t.Helper()
		var all []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatalf("%s: more than 100 pages", path)
			}
			qq := url.Values{}
			for k, v := range q {
				qq[k] = v
			}
			if cursor != "" {
				qq.Set("cursor", cursor)
			}
			status, next := w.get(user, path, qq, out())
			if status != 200 {
				t.Fatalf("GET %s?%s = %d", path, qq.Encode(), status)
			}
			all = append(all, get()...)
			if next == "" {
				return all
			}
			cursor = next
		}
	}

	for _, user := range []string{"admin", "carol"} {
		var rs []RequestView
		got := walk(user, "/v1/requests", url.Values{"limit": {"20"}}, func() []string { return requestIDsOf(rs) }, func() any { rs = nil; return &rs })
		if !slices.Equal(got, wantReqs) {
			t.Errorf("%s: requests in pages of 20 = %d items %v; want %d items", user, len(got), got, len(wantReqs))
		}
		var ls []LeaseView
		got = walk(user, "/v1/leases", url.Values{"limit": {"7"}}, func() []string {
			var ids []string
			for _, l := range ls {
				ids = append(ids, l.ID)
			}
			return ids
		}, func() any { ls = nil; return &ls })
		if !slices.Equal(got, wantLeases) {
			t.Errorf("%s: leases in pages of 7 = %v; want %v", user, got, wantLeases)
		}
	}
	var evs []mayfly.AuditEvent
	got := walk("admin", "/v1/audit", url.Values{"limit": {"50"}}, func() []string {
		var ids []string
		for _, e := range evs {
			ids = append(ids, strconv.FormatInt(e.Seq, 10))
		}
		return ids
	}, func() any { evs = nil; return &evs })
	if len(got) != 120 || got[0] != "1" || got[119] != "120" || len(slices.Compact(slices.Clone(got))) != 120 {
		t.Errorf("audit in pages of 50 = %v; want seq 1 to 120 once each", got)
	}

	// Without a limit, a list is one default page.
	var rs []RequestView
	if status, next := w.get("admin", "/v1/requests", nil, &rs); status != 200 || len(rs) != DefaultPageSize || next == "" {
		t.Errorf("GET /v1/requests = %d, %d items, next %q; want 200, %d items and a next cursor", status, len(rs), next, DefaultPageSize)
	}
}

// TestListAuditNonAdminLimit checks that a non-admin's audit limit counts
// the events they may see: their own actions and those on their requests.
func TestListAuditNonAdminLimit(t *testing.T) {
	w := newAPIWorld(t, false)
	w.addRequests("alice", "alice", 1, t0)
	w.addEvents("carol", 300, "carol-0000")
	w.addEvents("bob", 1, "alice-0000") // on alice's request
	w.addEvents("carol", 300, "")
	w.addEvents("alice", 1, "")
	var evs []mayfly.AuditEvent
	status, _ := w.get("alice", "/v1/audit", url.Values{"limit": {"10"}}, &evs)
	var seqs []int64
	for _, e := range evs {
		seqs = append(seqs, e.Seq)
	}
	if want := []int64{301, 602}; status != 200 || !slices.Equal(seqs, want) {
		t.Errorf("alice: GET /v1/audit?limit=10 = %d %v; want 200 %v", status, seqs, want)
	}
	status, _ = w.get("admin", "/v1/audit", url.Values{"limit": {"10"}}, &evs)
	if status != 200 || len(evs) != 10 {
		t.Errorf("admin: GET /v1/audit?limit=10 = %d, %d events; want 200, 10", status, len(evs))
	}
}

// TestAuditStreamStartsAtTail checks that the live stream, asked for no
// position, starts with the next event committed and reads one event to
// find the tail, not the whole trail; with ?after= it starts there.
func TestAuditStreamStartsAtTail(t *testing.T) {
	w := newAPIWorld(t, false)
	w.addEvents("carol", 3000, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(q string) (*bufio.Reader, func()) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", w.srv.URL+"/v1/audit/stream"+q, nil)
		req.Header.Set("Authorization", "Bearer admin-token")
		resp, err := w.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("GET /v1/audit/stream%s = %d", q, resp.StatusCode)
		}
		return bufio.NewReader(resp.Body), func() { resp.Body.Close() }
	}
	// nextID reads the stream up to the next event and returns its id;
	// the comment the stream opens with names where it starts.
	line := func(r *bufio.Reader) string {
		t.Helper()
		s, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		return strings.TrimSpace(s)
	}
	nextID := func(r *bufio.Reader) string {
		t.Helper()
		for {
			if id, ok := strings.CutPrefix(line(r), "id: "); ok {
				return id
			}
		}
	}

	_, _, before := w.store.rows()
	r, done := open("")
	defer done()
	if got, want := line(r), ": mayfly audit stream after seq 3000"; got != want {
		t.Fatalf("stream opens with %q; want %q", got, want)
	}
	_, _, after := w.store.rows()
	if read := after - before; read > 1 {
		t.Errorf("opening the stream read %d audit events; want at most 1", read)
	}
	w.broker.Alert(ctx, "alert.test", "", "", "test", "a new event", "nothing")
	if got := nextID(r); got != "3001" {
		t.Errorf("first event of the stream = %s; want 3001 (the one after the tail)", got)
	}

	r2, done2 := open("?after=41")
	defer done2()
	if got := nextID(r2); got != "42" {
		t.Errorf("first event of the stream after 41 = %s; want 42", got)
	}
}

// TestMetricsScrapeDoesNotReadHistory checks that a scrape reports the
// lease counts without listing ended leases: what it reads does not grow
// with the history.
func TestMetricsScrapeDoesNotReadHistory(t *testing.T) {
	w := newAPIWorld(t, true)
	w.addLeases("old", "carol", 600, mayfly.LeaseRevoked)
	w.addLeases("live", "carol", 2, mayfly.LeaseActive)
	scrape := func() string {
		t.Helper()
		resp, err := w.srv.Client().Get(w.srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	_, before, _ := w.store.rows()
	body := scrape()
	_, after, _ := w.store.rows()
	for _, want := range []string{`mayfly_leases{state="revoked"} 600`, `mayfly_leases{state="active"} 2`, `mayfly_leases_active{grant="ro",target="pg"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if read := after - before; read > 2 {
		t.Errorf("a scrape listed %d leases; want at most the 2 active ones", read)
	}
	// The counts follow a change of state.
	err := w.store.Update(context.Background(), func(tx mayfly.Tx) error {
		l, err := tx.GetLease("live-0000")
		if err != nil {
			return err
		}
		l.State = mayfly.LeaseRevoked
		return tx.UpdateLease(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	body = scrape()
	for _, want := range []string{`mayfly_leases{state="revoked"} 601`, `mayfly_leases{state="active"} 1`, `mayfly_leases_active{grant="ro",target="pg"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics after a revocation lacks %s", want)
		}
	}
}

// TestErrorStatus checks the code-to-status table, through the server:
// the status and the error body agree.
func TestErrorStatus(t *testing.T) {
	w := newAPIWorld(t, false)
	w.addRequests("carol", "carol", 1, t0)
	for _, tt := range []struct {
		user, method, path, query, body string
		status                          int
		code                            string
	}{
		{"", "GET", "/v1/requests", "", "", 401, mayfly.EUNAUTHORIZED},
		{"mallory", "GET", "/v1/requests", "", "", 401, mayfly.EUNAUTHORIZED},
		{"alice", "POST", "/v1/audit/prune", "", `{"older_than":"1h"}`, 403, mayfly.EFORBIDDEN},
		{"alice", "GET", "/v1/audit/stream", "", "", 403, mayfly.EFORBIDDEN},
		{"alice", "GET", "/v1/nowhere", "", "", 404, mayfly.ENOTFOUND},
		// Someone else's request is not found rather than forbidden.
		{"alice", "GET", "/v1/requests/carol-0000", "", "", 404, mayfly.ENOTFOUND},
		{"alice", "GET", "/v1/requests", "limit=-1", "", 400, mayfly.EINVALID},
		{"alice", "GET", "/v1/requests", "cursor=nonsense!", "", 400, mayfly.EINVALID},
		{"alice", "GET", "/v1/leases", "cursor=" + encodeSeqCursor(3), "", 400, mayfly.EINVALID},
		{"alice", "GET", "/v1/audit", "cursor=" + encodeCursor(mayfly.PageCursor{ID: "x"}), "", 400, mayfly.EINVALID},
		{"alice", "GET", "/v1/audit", "since=yesterday", "", 400, mayfly.EINVALID},
		{"admin", "GET", "/v1/audit/stream", "after=-3", "", 400, mayfly.EINVALID},
		{"admin", "POST", "/v1/audit/prune", "", `{"older_than":"1h"}`, 503, mayfly.EUNAVAILABLE},
	} {
		q, _ := url.ParseQuery(tt.query)
		var eb errorBody
		status, _ := w.call(tt.user, tt.method, tt.path, q, tt.body, &eb)
		if status != tt.status || eb.Error.Code != tt.code || eb.Error.Message == "" {
			t.Errorf("%s %s %s?%s = %d %q %q; want %d %q with a message", tt.user, tt.method, tt.path, tt.query, status, eb.Error.Code, eb.Error.Message, tt.status, tt.code)
		}
	}
	// Every code has a status, and the table is one to one.
	seen := map[int]string{}
	for _, code := range []string{mayfly.EINVALID, mayfly.EUNAUTHORIZED, mayfly.EFORBIDDEN, mayfly.ENOTFOUND, mayfly.ECONFLICT, mayfly.EUNAVAILABLE, mayfly.EINTERNAL} {
		st, ok := statusOf[code]
		if !ok || st < 400 {
			t.Errorf("statusOf[%q] = %d, %v; want an error status", code, st, ok)
		}
		if other, dup := seen[st]; dup {
			t.Errorf("statusOf[%q] = statusOf[%q] = %d; want one code per status", code, other, st)
		}
		seen[st] = code
	}
}

// TestDecodeBodies checks that JSON bodies are decoded strictly: unknown
// fields, trailing data, an empty or oversized body are refused with 400
// and change nothing.
func TestDecodeBodies(t *testing.T) {
	w := newAPIWorld(t, false)
	for _, tt := range []struct {
		name, body, want string
	}{
		{"empty", "", "request body is empty"},
		{"not JSON", "{", "invalid JSON body"},
		{"unknown field", `{"target":"pg","grant":"ro","duration":"1h","sudo":true}`, "unknown field"},
		{"trailing data", `{"target":"pg","grant":"ro","duration":"1h"} {}`, "trailing data"},
		{"wrong type", `{"target":1}`, "invalid JSON body"},
		{"too large", `{"reason":"` + strings.Repeat("x", maxBody) + `"}`, "invalid JSON body"},
		{"bad duration", `{"target":"pg","grant":"ro","duration":"forever"}`, "duration"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var eb errorBody
			status, _ := w.call("alice", "POST", "/v1/requests", nil, tt.body, &eb)
			if status != 400 || eb.Error.Code != mayfly.EINVALID || !strings.Contains(eb.Error.Message, tt.want) {
				t.Errorf("POST /v1/requests %.40q = %d %q %q; want 400 invalid mentioning %q", tt.body, status, eb.Error.Code, eb.Error.Message, tt.want)
			}
		})
	}
	var rs []RequestView
	if _, _ = w.get("admin", "/v1/requests", nil, &rs); len(rs) != 0 {
		t.Errorf("after refused bodies, %d requests exist; want 0", len(rs))
	}
}

// TestLeaseVisibility checks that a non-admin lists only their own leases,
// is refused another user's (?user=), and cannot read another's lease.
func TestLeaseVisibility(t *testing.T) {
	w := newAPIWorld(t, false)
	carols := w.addLeases("carol", "carol", 5, mayfly.LeaseActive)
	alices := w.addLeases("alice", "alice", 2, mayfly.LeaseActive)
	for _, tt := range []struct {
		user string
		q    url.Values
		want []string
	}{
		{"alice", nil, alices},
		{"alice", url.Values{"user": {"alice"}}, alices},
		{"admin", url.Values{"user": {"carol"}}, carols},
		// Oldest first, by id within one creation time.
		{"admin", url.Values{"limit": {"3"}}, []string{alices[0], alices[1], carols[0]}},
	} {
		var ls []LeaseView
		status, _ := w.get(tt.user, "/v1/leases", tt.q, &ls)
		var ids []string
		for _, l := range ls {
			ids = append(ids, l.ID)
		}
		slices.Sort(ids)
		want := slices.Sorted(slices.Values(tt.want))
		if status != 200 || !slices.Equal(ids, want) {
			t.Errorf("%s: GET /v1/leases?%s = %d %v; want 200 %v", tt.user, tt.q.Encode(), status, ids, want)
		}
	}
	var eb errorBody
	if status, _ := w.get("alice", "/v1/leases", url.Values{"user": {"carol"}}, &eb); status != 403 || eb.Error.Code != "forbidden" {
		t.Errorf("alice: GET /v1/leases?user=carol = %d %+v; want 403 forbidden", status, eb)
	}
	eb = errorBody{}
	if status, _ := w.get("alice", "/v1/leases/"+carols[0], nil, &eb); status != 404 {
		t.Errorf("alice: GET /v1/leases/%s = %d; want 404", carols[0], status)
	}
}
