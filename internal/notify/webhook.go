package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SignatureHeader carries the HMAC-SHA256 of a webhook body:
// "sha256=" followed by the hex digest.
const SignatureHeader = "X-Mayfly-Signature"

// Sign returns the value of SignatureHeader for body signed with secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// poster POSTs JSON bodies to one URL. The URL may be a secret (Slack
// incoming webhooks), so it never appears in errors.
type poster struct {
	url    string
	client *http.Client
}

func newPoster(u string, timeout time.Duration) *poster {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &poster{url: u, client: &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// A redirected POST would lose its body or leak it elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (p *poster) post(ctx context.Context, body []byte, header http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return errors.New("build request: invalid URL")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mayfly-notify")
	resp, err := p.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return fmt.Errorf("post: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
	return nil
}

// webhookSender posts the message as signed JSON.
type webhookSender struct {
	p      *poster
	secret []byte
}

// Payload is the JSON body of a webhook notification.
type Payload struct {
	// ID is stable across retries: deduplicate on it.
	ID         string           `json:"id"`
	Type       string           `json:"type"`
	Time       time.Time        `json:"time"`
	Urgent     bool             `json:"urgent"`
	Actor      string           `json:"actor,omitempty"`
	Recipients []PayloadUser    `json:"recipients"`
	Request    *PayloadRequest  `json:"request,omitempty"`
	Lease      *PayloadLease    `json:"lease,omitempty"`
	Subject    string           `json:"subject"`
	Text       string           `json:"text"`
	URL        string           `json:"url,omitempty"`
	Commands   []PayloadCommand `json:"commands,omitempty"`
}

// PayloadUser is one recipient.
type PayloadUser struct {
	User  string `json:"user"`
	Email string `json:"email,omitempty"`
}

// PayloadRequest describes the request a notification is about.
type PayloadRequest struct {
	ID              string   `json:"id"`
	Requester       string   `json:"requester"`
	Target          string   `json:"target"`
	Grant           string   `json:"grant"`
	Reason          string   `json:"reason"`
	Duration        string   `json:"duration"`
	DurationSeconds int64    `json:"duration_seconds"`
	State           string   `json:"state"`
	Policy          string   `json:"policy,omitempty"`
	ApproverGroups  []string `json:"approver_groups,omitempty"`
	Approvers       []string `json:"approvers,omitempty"`
}

// PayloadLease describes the lease a notification is about.
type PayloadLease struct {
	ID        string    `json:"id"`
	Username  string    `json:"username"`
	Target    string    `json:"target"`
	Grant     string    `json:"grant"`
	State     string    `json:"state"`
	ExpiresAt time.Time `json:"expires_at"`
	EndReason string    `json:"end_reason,omitempty"`
}

// PayloadCommand is a command line that acts on the notification.
type PayloadCommand struct {
	Label string `json:"label"`
	Line  string `json:"line"`
}

func payloadOf(m *message) Payload {
	p := Payload{ID: m.ID, Type: m.Type, Time: m.Time.UTC(), Urgent: m.Urgent, Actor: m.Actor,
		Recipients: []PayloadUser{}, Subject: m.Subject, Text: m.Text(), URL: m.Link}
	for _, r := range m.Recipients {
		p.Recipients = append(p.Recipients, PayloadUser(r))
	}
	if r := m.Request; r != nil {
		p.Request = &PayloadRequest{ID: r.ID, Requester: r.Requester, Target: r.Target, Grant: r.Grant,
			Reason: r.Reason, Duration: human(r.Duration), DurationSeconds: int64(r.Duration / time.Second),
			State: string(r.State), Policy: r.Policy, ApproverGroups: r.ApproverGroups, Approvers: r.Approvers}
	}
	if l := m.Lease; l != nil {
		p.Lease = &PayloadLease{ID: l.ID, Username: l.Username, Target: l.Target, Grant: l.Grant,
			State: string(l.State), ExpiresAt: l.ExpiresAt.UTC(), EndReason: l.EndReason}
	}
	for _, c := range m.Commands {
		p.Commands = append(p.Commands, PayloadCommand(c))
	}
	return p
}

func (s *webhookSender) send(ctx context.Context, m *message) error {
	body, err := json.Marshal(payloadOf(m))
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	h := http.Header{}
	h.Set(SignatureHeader, Sign(s.secret, body))
	h.Set("X-Mayfly-Event", m.Type)
	h.Set("X-Mayfly-Delivery", m.ID)
	return s.p.post(ctx, body, h)
}

// slackSender posts to a Slack incoming webhook.
type slackSender struct {
	p *poster
}

type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type slackBlock struct {
	Type     string      `json:"type"`
	Text     *slackText  `json:"text,omitempty"`
	Fields   []slackText `json:"fields,omitempty"`
	Elements []slackText `json:"elements,omitempty"`
}

type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

// slackEscape escapes the characters Slack gives meaning to, so a reason
// cannot mention @channel or disguise a link.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// slackCode shows s as inline code.
func slackCode(s string) string {
	return "`" + slackEscape(strings.ReplaceAll(s, "`", "'")) + "`"
}

func cut(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func slackOf(m *message) slackMessage {
	title := m.Subject
	if m.Urgent {
		title = ":rotating_light: " + title
	}
	out := slackMessage{Text: slackEscape(title)}
	out.Blocks = append(out.Blocks,
		slackBlock{Type: "header", Text: &slackText{"plain_text", cut(title, 150)}},
		slackBlock{Type: "section", Text: &slackText{"mrkdwn", cut(slackEscape(m.Headline), 3000)}})
	for i := 0; i < len(m.Fields); i += 10 { // at most 10 fields per section
		b := slackBlock{Type: "section"}
		for _, f := range m.Fields[i:min(i+10, len(m.Fields))] {
			b.Fields = append(b.Fields, slackText{"mrkdwn", cut("*"+f.Label+"*\n"+slackEscape(f.Value), 2000)})
		}
		out.Blocks = append(out.Blocks, b)
	}
	if len(m.Commands) > 0 {
		var lines []string
		for _, c := range m.Commands {
			lines = append(lines, "*"+c.Label+":* "+slackCode(c.Line))
		}
		out.Blocks = append(out.Blocks, slackBlock{Type: "section", Text: &slackText{"mrkdwn", cut(strings.Join(lines, "\n"), 3000)}})
	}
	var ctx []string
	if len(m.Recipients) > 0 {
		var names []string
		for _, r := range m.Recipients {
			names = append(names, r.User)
		}
		ctx = append(ctx, "For: "+slackEscape(strings.Join(names, ", ")))
	}
	if m.Link != "" {
		ctx = append(ctx, "<"+strings.NewReplacer("|", "%7C", ">", "%3E").Replace(m.Link)+"|Open in Mayfly>")
	}
	if m.Note != "" {
		ctx = append(ctx, slackEscape(m.Note))
	}
	if len(ctx) > 0 {
		out.Blocks = append(out.Blocks, slackBlock{Type: "context", Elements: []slackText{{"mrkdwn", cut(strings.Join(ctx, " · "), 3000)}}})
	}
	return out
}

func (s *slackSender) send(ctx context.Context, m *message) error {
	body, err := json.Marshal(slackOf(m))
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	return s.p.post(ctx, body, nil)
}
