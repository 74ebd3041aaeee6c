package sink

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

	"github.com/mayflyhq/mayfly"
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the request
// body, keyed with the webhook secret.
const SignatureHeader = "X-Mayfly-Signature"

// webhookSink POSTs batches of events as {"events": [...]}.
type webhookSink struct {
	url    string
	host   string // for error messages: the URL may carry a token
	secret []byte
	client *http.Client
}

func newWebhookSink(c Config, secret []byte) *webhookSink {
	u, _ := url.Parse(c.URL) // checked by Validate
	return &webhookSink{
		url:    c.URL,
		host:   u.Host,
		secret: secret,
		client: &http.Client{
			Timeout: c.Timeout,
			// A redirect is a misconfiguration; retrying it later is
			// safer than re-posting the batch somewhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Sign returns the value of the X-Mayfly-Signature header for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// deliver posts the batch; only a 2xx response confirms it.
func (s *webhookSink) deliver(ctx context.Context, events []*mayfly.AuditEvent) error {
	body, err := json.Marshal(struct {
		Events []*mayfly.AuditEvent `json:"events"`
	}{events})
	if err != nil {
		return fmt.Errorf("encode webhook body: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("post to webhook %s: invalid request", s.host)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mayfly-audit-sink")
	if s.secret != nil {
		req.Header.Set(SignatureHeader, Sign(s.secret, body))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// The *url.Error repeats the URL, which may hold a token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post to webhook %s: %w", s.host, err)
	}
	// Drain a little so the connection can be reused; never log the body.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook %s answered %s", s.host, resp.Status)
	}
	return nil
}

func (s *webhookSink) close() error {
	s.client.CloseIdleConnections()
	return nil
}
