package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/gateway/sshgw"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
)

// Session logs: admins read every session; others their own.

// StatementView is one statement of a PostgreSQL gateway session.
type StatementView struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	mayfly.Statement
}

// SessionView is a session with what happened in it (GET
// /v1/sessions/{id}): its statements (PostgreSQL) and, with ?events=true,
// every event of its chain. Events and statements come in pages of
// ?limit= events after ?after=SEQ; NextAfter, when set, is where the next
// page starts.
type SessionView struct {
	mayfly.Session
	// EventCount is the session's Events (how many events its chain
	// holds), which the events list below hides under the same name.
	EventCount int64           `json:"event_count"`
	Statements []StatementView `json:"statements"`
	// SSH is what an SSH session's events say (channels with their
	// commands and exits, transfers, refusals); the terminal recording is
	// at /v1/sessions/{id}/cast.
	SSH       *sshgw.Summary         `json:"ssh,omitempty"`
	Events    []*mayfly.SessionEvent `json:"events,omitempty"`
	NextAfter int64                  `json:"next_after,omitempty"`
}

const (
	defaultEventPage = 10000
	maxEventPage     = 100000
)

func (s *server) handleListSessions() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		q := r.URL.Query()
		limit, err := pageLimit(q.Get("limit"), DefaultPageSize, MaxPageSize)
		if err != nil {
			return 0, nil, err
		}
		f := mayfly.SessionFilter{LeaseID: q.Get("lease"), User: q.Get("user"), Kind: q.Get("kind"),
			Open: q.Get("open") == "true", Limit: limit + 1}
		if f.After, err = decodeCursor(q.Get("cursor")); err != nil {
			return 0, nil, err
		}
		if c := callerFrom(r); !c.Admin {
			if f.User != "" && f.User != c.User {
				return 0, nil, mayfly.Errorf(mayfly.EFORBIDDEN, "only admins may list the sessions of other users")
			}
			f.User = c.User
		}
		var ss []*mayfly.Session
		err = s.Broker.Store().View(r.Context(), func(tx mayfly.Tx) error {
			var err error
			ss, err = tx.ListSessions(f)
			return err
		})
		if err != nil {
			return 0, nil, err
		}
		ss = page(w, ss, limit, func(x *mayfly.Session) string {
			return encodeCursor(mayfly.PageCursor{CreatedAt: x.StartedAt, ID: x.ID})
		})
		if ss == nil {
			ss = []*mayfly.Session{}
		}
		return 200, ss, nil
	})
}

// visibleSession returns session id when the caller may read it.
func (s *server) visibleSession(r *http.Request, id string, fn func(tx mayfly.Tx, ses *mayfly.Session) error) error {
	c := callerFrom(r)
	return s.Broker.Store().View(r.Context(), func(tx mayfly.Tx) error {
		ses, err := tx.GetSession(id)
		if err != nil {
			return err
		}
		if !c.Admin && ses.User != c.User {
			// The same answer as a missing session: ids are not disclosed.
			return mayfly.Errorf(mayfly.ENOTFOUND, "session %q not found", id)
		}
		return fn(tx, ses)
	})
}

func (s *server) handleGetSession() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		q := r.URL.Query()
		limit, err := pageLimit(q.Get("limit"), defaultEventPage, maxEventPage)
		if err != nil {
			return 0, nil, err
		}
		after, err := intParam(q.Get("after"), 0)
		if err != nil {
			return 0, nil, err
		}
		withEvents := q.Get("events") == "true"
		var v SessionView
		err = s.visibleSession(r, r.PathValue("id"), func(tx mayfly.Tx, ses *mayfly.Session) error {
			v.Session, v.EventCount = *ses, ses.Events
			evs, err := tx.ListSessionEvents(ses.ID, int64(after), limit+1)
			if err != nil {
				return err
			}
			if len(evs) > limit {
				evs = evs[:limit]
				v.NextAfter = evs[limit-1].Seq
			}
			v.Statements = statementsOf(evs)
			if ses.Kind == mayfly.SessionSSH {
				sum := sshgw.Summarize(evs)
				v.SSH = &sum
			}
			if withEvents {
				v.Events = evs
			}
			return nil
		})
		if err != nil {
			return 0, nil, err
		}
		return 200, v, nil
	})
}

// statementsOf decodes the statement events of evs.
func statementsOf(evs []*mayfly.SessionEvent) []StatementView {
	out := []StatementView{}
	for _, e := range evs {
		if e.Kind != mayfly.SessionEventStatement {
			continue
		}
		sv := StatementView{Seq: e.Seq, Time: e.Time}
		if err := json.Unmarshal(e.Body, &sv.Statement); err != nil {
			sv.Text = "(unreadable statement event: " + err.Error() + ")"
		}
		out = append(out, sv)
	}
	return out
}

func (s *server) handleVerifySession() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		id := r.PathValue("id")
		if err := s.visibleSession(r, id, func(mayfly.Tx, *mayfly.Session) error { return nil }); err != nil {
			return 0, nil, err
		}
		res, err := sessionlog.Verify(r.Context(), s.Broker.Store(), id)
		if err != nil {
			return 0, nil, err
		}
		return 200, res, nil
	})
}
