package sshgw

import (
	"encoding/json"

	"github.com/mayflyhq/mayfly"
)

// Summary is what an SSH session's events say, decoded, without the
// terminal recording itself (served as asciicast from the cast endpoint).
type Summary struct {
	Channels  []SummaryChannel  `json:"channels"`
	Transfers []SummaryTransfer `json:"transfers"`
	Refused   []SummaryRefusal  `json:"refused"`
	Forwards  []SummaryRefusal  `json:"forwards"`
	// CastBytes is the size of the terminal recordings, all channels.
	CastBytes int64 `json:"cast_bytes"`
}

// SummaryChannel is one session channel: what ran and how it ended.
type SummaryChannel struct {
	Seq int64 `json:"seq"`
	ChannelInfo
	Exit *Exit `json:"exit,omitempty"`
	// Recorded is set when the channel has a terminal recording.
	Recorded bool `json:"recorded"`
}

// SummaryTransfer is a transfer event with its place in the chain.
type SummaryTransfer struct {
	Seq int64 `json:"seq"`
	Transfer
}

// SummaryRefusal is a refused or forward event with its place in the
// chain.
type SummaryRefusal struct {
	Seq int64 `json:"seq"`
	Refusal
}

// Summarize decodes the SSH events of evs (a session's, in order).
func Summarize(evs []*mayfly.SessionEvent) Summary {
	s := Summary{Channels: []SummaryChannel{}, Transfers: []SummaryTransfer{}, Refused: []SummaryRefusal{}, Forwards: []SummaryRefusal{}}
	byChan := map[int]int{}
	for _, e := range evs {
		switch e.Kind {
		case EventChannel:
			var c ChannelInfo
			if json.Unmarshal(e.Body, &c) == nil {
				byChan[c.Channel] = len(s.Channels)
				s.Channels = append(s.Channels, SummaryChannel{Seq: e.Seq, ChannelInfo: c})
			}
		case EventExit:
			var x Exit
			if json.Unmarshal(e.Body, &x) == nil {
				if i, ok := byChan[x.Channel]; ok {
					s.Channels[i].Exit = &x
				}
			}
		case EventCast:
			var c CastBody
			if json.Unmarshal(e.Body, &c) == nil {
				s.CastBytes += int64(len(c.Cast))
				if i, ok := byChan[c.Channel]; ok {
					s.Channels[i].Recorded = true
				}
			}
		case EventTransfer:
			var t Transfer
			if json.Unmarshal(e.Body, &t) == nil {
				s.Transfers = append(s.Transfers, SummaryTransfer{Seq: e.Seq, Transfer: t})
			}
		case EventRefused, EventForward:
			var r Refusal
			if json.Unmarshal(e.Body, &r) == nil {
				if e.Kind == EventRefused {
					s.Refused = append(s.Refused, SummaryRefusal{Seq: e.Seq, Refusal: r})
				} else {
					s.Forwards = append(s.Forwards, SummaryRefusal{Seq: e.Seq, Refusal: r})
				}
			}
		}
	}
	return s
}
