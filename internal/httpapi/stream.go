package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/mayflyhq/mayfly"
)

// handleAuditStream streams audit events as server-sent events, from the
// event after ?after= (or the Last-Event-ID header) or, without either,
// from the tail (the next event committed), then live as they are
// committed. Each event's SSE id is its seq, so a client reconnects without
// gaps.
func (s *server) handleAuditStream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fl, ok := w.(http.Flusher)
		if !ok {
			writeError(w, mayfly.Errorf(mayfly.EINTERNAL, "streaming unsupported"))
			return
		}
		after := int64(-1)
		for _, v := range []string{r.URL.Query().Get("after"), r.Header.Get("Last-Event-ID")} {
			if v == "" {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				writeError(w, mayfly.Errorf(mayfly.EINVALID, "after %q is not a sequence number", v))
				return
			}
			after = n
		}
		store := s.Broker.Store()
		if after < 0 {
			// From now on: start after the last event, read from the
			// tail (one row), whatever the length of the trail.
			err := store.View(r.Context(), func(tx mayfly.Tx) error {
				evs, err := tx.ListAudit(mayfly.AuditFilter{Newest: true, Limit: 1})
				after = 0
				if len(evs) > 0 {
					after = evs[0].Seq
				}
				return err
			})
			if err != nil {
				writeError(w, err)
				return
			}
		}
		// A stream lives as long as its client: lift any read or write
		// deadline the server sets for ordinary requests.
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Time{})
		rc.SetWriteDeadline(time.Time{})
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, ": mayfly audit stream after seq %d\n\n", after)
		fl.Flush()
		keepalive := time.NewTicker(15 * time.Second)
		defer keepalive.Stop()
		defer s.Broker.Watching()()
		for {
			changed := s.Broker.Changed()
			var evs []*mayfly.AuditEvent
			err := store.View(r.Context(), func(tx mayfly.Tx) error {
				var err error
				evs, err = tx.ListAudit(mayfly.AuditFilter{AfterSeq: after, Limit: 500})
				return err
			})
			if err != nil {
				return
			}
			for _, e := range evs {
				b, _ := json.Marshal(e)
				if _, err := fmt.Fprintf(w, "id: %d\nevent: audit\ndata: %s\n\n", e.Seq, b); err != nil {
					return
				}
				after = e.Seq
			}
			fl.Flush()
			if len(evs) == 500 {
				continue
			}
			select {
			case <-r.Context().Done():
				return
			case <-changed:
			case <-keepalive.C:
				if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
					return
				}
				fl.Flush()
			}
		}
	})
}

// AuditHashBody is the body of POST /v1/audit/hash.
type AuditHashBody struct {
	Value string `json:"value"`
}

// AuditHashResult names the keyed hash of a value and the leases whose
// issued secret had that hash.
type AuditHashResult struct {
	HMAC   string   `json:"hmac"`
	Leases []string `json:"leases"`
}

func (s *server) handleAuditHash() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body AuditHashBody
		if err := decode(r, &body); err != nil {
			return 0, nil, err
		}
		if body.Value == "" {
			return 0, nil, mayfly.Errorf(mayfly.EINVALID, "value is required")
		}
		res := AuditHashResult{HMAC: s.Broker.HashSecret(body.Value), Leases: []string{}}
		err := s.Broker.Store().View(r.Context(), func(tx mayfly.Tx) error {
			evs, err := tx.ListAudit(mayfly.AuditFilter{Action: "lease.activate"})
			for _, e := range evs {
				if e.Data["secret_hmac"] == res.HMAC {
					res.Leases = append(res.Leases, e.LeaseID)
				}
			}
			return err
		})
		if err != nil {
			return 0, nil, err
		}
		return 200, res, nil
	})
}

// PruneBody is the body of POST /v1/audit/prune.
type PruneBody struct {
	OlderThan string `json:"older_than"`
}

func (s *server) handleAuditPrune() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var body PruneBody
		if err := decode(r, &body); err != nil {
			return 0, nil, err
		}
		d, err := mayfly.ParseDuration(body.OlderThan)
		if err != nil {
			return 0, nil, mayfly.Errorf(mayfly.EINVALID, "older_than %q: want a duration such as 2160h or 90d", body.OlderThan)
		}
		if s.ArchiveDir == "" {
			return 0, nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "no archive directory configured")
		}
		res, err := s.Broker.PruneAudit(r.Context(), callerFrom(r), d, s.ArchiveDir)
		if err != nil {
			return 0, nil, err
		}
		return 200, res, nil
	})
}
