package sshgw

import (
	"context"
	"encoding/json"

	"github.com/mayflyhq/mayfly"
)

// Session event kinds the SSH gateway records, besides "start" and "end".
const (
	EventChannel  = "channel"  // a session channel opened: pty, shell, exec or subsystem
	EventCast     = "cast"     // a chunk of asciicast v2 lines (CastBody)
	EventExit     = "exit"     // a channel's exit status or signal (Exit)
	EventTransfer = "transfer" // a file read or written (Transfer)
	EventRefused  = "refused"  // something the grant does not permit (Refusal)
	EventForward  = "forward"  // a permitted port or agent forwarding (Refusal shape)
)

// ChannelInfo is the body of a "channel" event.
type ChannelInfo struct {
	Channel int `json:"channel"`
	// Type is "shell", "exec" or "subsystem".
	Type      string `json:"type"`
	Command   string `json:"command,omitempty"`
	Subsystem string `json:"subsystem,omitempty"`
	Term      string `json:"term,omitempty"`
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	// Env lists the names (never the values) of variables the client sent.
	Env []string `json:"env,omitempty"`
}

// Exit is the body of an "exit" event.
type Exit struct {
	Channel int    `json:"channel"`
	Status  *int   `json:"status,omitempty"`
	Signal  string `json:"signal,omitempty"`
	// BytesIn and BytesOut count what the client sent and received on
	// the channel.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
}

// Refusal is the body of a "refused" or "forward" event.
type Refusal struct {
	Channel *int   `json:"channel,omitempty"`
	What    string `json:"what"`
	Detail  string `json:"detail,omitempty"`
}

// Cast returns the asciicast v2 recording of a channel of an SSH session
// from the session log: its "cast" events' lines, in order. ENOTFOUND when
// the session or the recording does not exist.
func Cast(ctx context.Context, st mayfly.Store, sessionID string, channel int) ([]byte, error) {
	var out []byte
	err := st.View(ctx, func(tx mayfly.Tx) error {
		if _, err := tx.GetSession(sessionID); err != nil {
			return err
		}
		var after int64
		for {
			evs, err := tx.ListSessionEvents(sessionID, after, 1000)
			if err != nil {
				return err
			}
			for _, e := range evs {
				after = e.Seq
				if e.Kind != EventCast {
					continue
				}
				var b CastBody
				if err := json.Unmarshal(e.Body, &b); err != nil {
					return mayfly.Errorf(mayfly.EINTERNAL, "session %s event %d: %v", sessionID, e.Seq, err)
				}
				if b.Channel == channel {
					out = append(out, b.Cast...)
				}
			}
			if len(evs) < 1000 {
				return nil
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "session %s has no terminal recording on channel %d", sessionID, channel)
	}
	return out, nil
}
