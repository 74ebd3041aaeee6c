package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Client is a small client of the API, used by the CLI.
type Client struct {
	// Addr is the server's base URL, e.g. http://127.0.0.1:8765.
	Addr  string
	Token string
	HTTP  *http.Client
}

// NewClient returns a client for addr authenticating with token.
func NewClient(addr, token string) *Client {
	return &Client{Addr: strings.TrimRight(addr, "/"), Token: token, HTTP: &http.Client{Timeout: 2 * time.Minute}}
}

// Do sends a request with an optional JSON body and decodes the JSON answer
// into out (when not nil). API errors come back as *mayfly.Error.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	_, err := c.do(ctx, method, path, query, body, out)
	return err
}

// ListPage gets one page of a list (GET /v1/requests, /v1/leases,
// /v1/audit) into out and returns the cursor of the next page to pass as
// ?cursor=, "" after the last page.
func (c *Client) ListPage(ctx context.Context, path string, query url.Values, out any) (next string, err error) {
	h, err := c.do(ctx, "GET", path, query, nil, out)
	if err != nil {
		return "", err
	}
	return h.Get(NextCursorHeader), nil
}

// do is Do, returning the answer's headers.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := c.Addr + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "bad server address %q: %v", c.Addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, transportError(c.Addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "read answer from %s: %v", c.Addr, err)
	}
	if resp.StatusCode >= 400 {
		if err := httpsHint(c.Addr, resp.StatusCode, data); err != nil {
			return nil, err
		}
		var eb errorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			return nil, &mayfly.Error{Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return nil, mayfly.Errorf(mayfly.EINTERNAL, "server answered %s", resp.Status)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return resp.Header, nil
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// CreateToken creates an API token (POST /v1/tokens); the answer holds its
// plaintext, shown this once.
func (c *Client) CreateToken(ctx context.Context, body TokenBody) (*CreatedToken, error) {
	var out CreatedToken
	if err := c.Do(ctx, "POST", "/v1/tokens", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListTokens lists tokens (GET /v1/tokens), of one user when user is set.
func (c *Client) ListTokens(ctx context.Context, user string) ([]*mayfly.Token, error) {
	var q url.Values
	if user != "" {
		q = url.Values{"user": {user}}
	}
	var out []*mayfly.Token
	if err := c.Do(ctx, "GET", "/v1/tokens", q, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RevokeToken revokes a token (DELETE /v1/tokens/{id}).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/v1/tokens/"+url.PathEscape(id), nil, nil, nil)
}

// GetRaw gets path and returns the answer's body as it is (an asciicast);
// API errors come back as *mayfly.Error.
func (c *Client) GetRaw(ctx context.Context, path string, query url.Values) ([]byte, error) {
	var raw []byte
	_, err := c.do(ctx, "GET", path, query, nil, &raw)
	return raw, err
}
