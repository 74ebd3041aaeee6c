package httpapi

import (
	"net/http"
	"strconv"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/gateway/sshgw"
)

// handleSessionCast serves the terminal recording of an SSH session's
// channel (?channel=N, default 0) as asciicast v2, for players.
func (s *server) handleSessionCast() http.Handler {
	fail := func(w http.ResponseWriter, r *http.Request, err error) {
		if mayfly.ErrorCode(err) == mayfly.EINTERNAL {
			s.Logger.Error("api internal error", "method", r.Method, "path", r.URL.Path, "err", err.Error())
		}
		writeError(w, err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch, err := intParam(r.URL.Query().Get("channel"), 0)
		if err != nil {
			fail(w, r, err)
			return
		}
		id := r.PathValue("id")
		if err := s.visibleSession(r, id, func(_ mayfly.Tx, ses *mayfly.Session) error {
			if ses.Kind != mayfly.SessionSSH {
				return mayfly.Errorf(mayfly.ENOTFOUND, "session %s is a %s session: it has no terminal recording", id, ses.Kind)
			}
			return nil
		}); err != nil {
			fail(w, r, err)
			return
		}
		cast, err := sshgw.Cast(r.Context(), s.Broker.Store(), id, ch)
		if err != nil {
			fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-asciicast")
		w.Header().Set("Content-Length", strconv.Itoa(len(cast)))
		w.Header().Set("Content-Disposition", `inline; filename="`+id+`-`+strconv.Itoa(ch)+`.cast"`)
		w.WriteHeader(http.StatusOK)
		w.Write(cast)
	})
}
