package slackapp

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// RunSocketMode receives interactions over Socket Mode until ctx ends,
// reconnecting with backoff when the connection fails. Every replica may
// run it: Slack hands each interaction to one of the app's connections.
// Each interaction is acknowledged at once and then handled by Interact,
// as over HTTP.
func (a *App) RunSocketMode(ctx context.Context) error {
	if a.appToken == "" {
		return fmt.Errorf("slack: Socket Mode needs app_token_env")
	}
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := a.socketSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			failures = 0
		}
		failures++
		d := backoff(failures)
		a.log.Warn("slack: Socket Mode connection ended; reconnecting", "err", err, "retry_in", d.String())
		if !sleep(ctx, d) {
			return nil
		}
	}
	return nil
}

// socketSession runs one Socket Mode client until it fails or ctx ends.
func (a *App) socketSession(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := socketmode.New(a.api, socketmode.OptionLog(slogOutput{a.log}))
	done := make(chan error, 1)
	go func() { done <- c.RunContext(ctx) }()
	for {
		select {
		case err := <-done:
			return err
		case evt := <-c.Events:
			switch evt.Type {
			case socketmode.EventTypeConnected:
				a.log.Info("slack: Socket Mode connected")
			case socketmode.EventTypeConnectionError, socketmode.EventTypeIncomingError:
				a.log.Warn("slack: Socket Mode", "event", string(evt.Type), "err", fmt.Sprint(evt.Data))
			case socketmode.EventTypeInvalidAuth:
				a.log.Error("slack: Socket Mode refused the app-level token (invalid_auth)")
			case socketmode.EventTypeInteractive:
				if evt.Request == nil {
					continue
				}
				// The envelope's payload passes the same checks as an
				// HTTP one.
				parsed, err := ParseInteraction(evt.Request.Payload)
				if err != nil {
					a.log.Warn("slack: Socket Mode interaction refused", "reason", err.Error())
					c.AckCtx(ctx, evt.Request.EnvelopeID, nil)
					continue
				}
				if parsed.Type == slack.InteractionTypeViewSubmission {
					// The answer to a form goes back with the
					// acknowledgement (its errors, or nothing to close it).
					if err := c.AckCtx(ctx, evt.Request.EnvelopeID, a.Interact(ctx, parsed)); err != nil {
						a.log.Warn("slack: Socket Mode acknowledgement failed", "err", err)
					}
					continue
				}
				// A click is acknowledged at once (Slack waits 3 seconds),
				// then handled.
				if err := c.AckCtx(ctx, evt.Request.EnvelopeID, nil); err != nil {
					a.log.Warn("slack: Socket Mode acknowledgement failed", "err", err)
				}
				a.Interact(ctx, parsed)
			}
		}
	}
}

// slogOutput makes the Socket Mode client's log lines debug records; the
// client does not log payloads unless its debug option is on (it is not).
type slogOutput struct{ log *slog.Logger }

func (s slogOutput) Output(_ int, msg string) error {
	s.log.Debug("slack socketmode: " + msg)
	return nil
}
