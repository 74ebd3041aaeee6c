package pggw

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

func newTracker(t testing.TB, clear bool) (*tracker, *sessionlog.Recorder, *sqlite.DB) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rec, err := sessionlog.New(db, nil, nil).Start(context.Background(),
		&mayfly.Session{Kind: mayfly.SessionPostgres, LeaseID: "l", User: "u", Target: "pg"})
	if err != nil {
		t.Fatal(err)
	}
	return &tracker{rec: rec, clear: clear, hash: func(s string) string { return "h(" + s + ")" },
		statements: map[string]string{}, portals: map[string]portal{}}, rec, db
}

func statements(t testing.TB, rec *sessionlog.Recorder, db *sqlite.DB) []mayfly.Statement {
	t.Helper()
	if err := rec.End(context.Background(), "client"); err != nil {
		t.Fatal(err)
	}
	var out []mayfly.Statement
	db.View(context.Background(), func(tx mayfly.Tx) error {
		evs, err := tx.ListSessionEvents(rec.ID(), 0, 0)
		for _, e := range evs {
			if e.Kind == mayfly.SessionEventStatement {
				var st mayfly.Statement
				json.Unmarshal(e.Body, &st)
				out = append(out, st)
			}
		}
		return err
	})
	return out
}

// TestTrackerBatch: an extended-protocol batch whose second Execute fails
// records the first with its tag, the second with its error and the third
// as not executed; parameters are hashed, or clear when asked.
func TestTrackerBatch(t *testing.T) {
	for _, clear := range []bool{false, true} {
		tr, rec, db := newTracker(t, clear)
		now := time.Now()
		for _, m := range []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "a", Query: "SELECT $1::int"},
			&pgproto3.Bind{PreparedStatement: "a", Parameters: [][]byte{[]byte("7")}},
			&pgproto3.Execute{},
			&pgproto3.Parse{Query: "SELECT 1/0"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
			&pgproto3.Parse{Query: "SELECT 3"},
			&pgproto3.Bind{Parameters: [][]byte{nil}},
			&pgproto3.Execute{},
			&pgproto3.Sync{},
			&pgproto3.Query{String: "SELECT 4; SELECT 5"},
		} {
			tr.fromClient(m, now)
		}
		for _, m := range []pgproto3.BackendMessage{
			&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.DataRow{},
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
			&pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.ErrorResponse{Code: "22012", Message: "division by zero"},
			&pgproto3.ReadyForQuery{TxStatus: 'I'},
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
			&pgproto3.ReadyForQuery{TxStatus: 'I'},
		} {
			tr.fromServer(m, now)
		}
		sts := statements(t, rec, db)
		if len(sts) != 4 {
			t.Fatalf("recorded %d statements: %+v; want 4", len(sts), sts)
		}
		if sts[0].Text != "SELECT $1::int" || sts[0].Tag != "SELECT 1" || sts[0].Rows != 1 {
			t.Errorf("first = %+v", sts[0])
		}
		if clear && (len(sts[0].Params) != 1 || *sts[0].Params[0] != "7" || sts[0].ParamsHMAC != nil) {
			t.Errorf("clear params = %+v", sts[0])
		}
		if !clear && (len(sts[0].ParamsHMAC) != 1 || sts[0].ParamsHMAC[0] != "h(7)" || sts[0].Params != nil) {
			t.Errorf("hashed params = %+v", sts[0])
		}
		if sts[1].Text != "SELECT 1/0" || sts[1].Error != "22012: division by zero" {
			t.Errorf("second = %+v", sts[1])
		}
		if sts[2].Text != "SELECT 3" || sts[2].Error == "" {
			t.Errorf("third = %+v; want not executed", sts[2])
		}
		if sts[3].Text != "SELECT 4; SELECT 5" || sts[3].Rows != 2 || sts[3].Protocol != "simple" {
			t.Errorf("simple query = %+v", sts[3])
		}
	}
}

// FuzzTracker drives the tracker with arbitrary sequences of client and
// server messages (as a hostile client or a confused server could send
// them): it never panics, and what it records stays a valid chain.
func FuzzTracker(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 10, 12, 15})
	f.Add([]byte{4, 13, 14, 15, 15, 11})
	f.Add([]byte{11, 11, 12, 13, 14, 15, 5, 6})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 200 {
			return
		}
		tr, rec, db := newTracker(t, len(ops)%2 == 0)
		now := time.Now()
		for i, op := range ops {
			name := string(rune('a' + i%3))
			switch op % 16 {
			case 0:
				tr.fromClient(&pgproto3.Parse{Name: name, Query: "SELECT " + name}, now)
			case 1:
				tr.fromClient(&pgproto3.Bind{PreparedStatement: name, DestinationPortal: name, Parameters: [][]byte{{op}, nil},
					ParameterFormatCodes: []int16{int16(op % 2)}}, now)
			case 2:
				tr.fromClient(&pgproto3.Execute{Portal: name}, now)
			case 3:
				tr.fromClient(&pgproto3.Sync{}, now)
			case 4:
				tr.fromClient(&pgproto3.Query{String: "SELECT " + name}, now)
			case 5:
				tr.fromClient(&pgproto3.Close{ObjectType: 'S', Name: name}, now)
			case 6:
				tr.fromClient(&pgproto3.Close{ObjectType: 'P', Name: name}, now)
			case 7:
				tr.fromClient(&pgproto3.FunctionCall{Function: uint32(op)}, now)
			case 10:
				tr.fromServer(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 3")}, now)
			case 11:
				tr.fromServer(&pgproto3.ErrorResponse{Code: "42601", Message: "x"}, now)
			case 12:
				tr.fromServer(&pgproto3.EmptyQueryResponse{}, now)
			case 13:
				tr.fromServer(&pgproto3.PortalSuspended{}, now)
			case 14:
				tr.fromServer(&pgproto3.CommandComplete{CommandTag: []byte{op}}, now)
			case 15:
				tr.fromServer(&pgproto3.ReadyForQuery{TxStatus: 'I'}, now)
			}
		}
		tr.abandon(now)
		statements(t, rec, db)
		res, err := sessionlog.Verify(context.Background(), db, rec.ID())
		if err != nil || !res.OK {
			t.Fatalf("Verify = %+v, %v", res, err)
		}
	})
}
