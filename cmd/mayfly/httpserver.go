package main

import (
	"net/http"
	"time"
)

// httpTimeouts bound how long a connection may hold the server without
// making progress.
type httpTimeouts struct {
	// ReadHeader bounds reading a request's headers, from the first byte.
	ReadHeader time.Duration
	// Idle bounds how long a kept-alive connection may wait between
	// requests before the server closes it.
	Idle time.Duration
}

// defaultHTTPTimeouts are the API server's. There is no overall read or
// write timeout: net/http would cancel a request's context when its read
// deadline passes, cutting a slow activation short, and the audit stream
// lives as long as its client. Bodies are bounded in size by the API and
// handlers by their own contexts.
func defaultHTTPTimeouts() httpTimeouts {
	return httpTimeouts{ReadHeader: 10 * time.Second, Idle: 2 * time.Minute}
}

// maxHeaderBytes bounds a request's headers (a bearer token or an OIDC
// session fits easily).
const maxHeaderBytes = 64 << 10

// newHTTPServer returns the API's HTTP server for h.
func newHTTPServer(h http.Handler, t httpTimeouts) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}
