package mayfly

import "time"

// ChatMessage is where a message Mayfly posted about a request in a chat
// tool (the Slack approval message) is, so that it can be updated in
// place as the request is decided: one per request.
type ChatMessage struct {
	RequestID string `json:"request_id"`
	// Channel and TS locate the message (Slack: the channel id and the
	// message's timestamp).
	Channel   string    `json:"channel"`
	TS        string    `json:"ts"`
	UpdatedAt time.Time `json:"updated_at"`
}
