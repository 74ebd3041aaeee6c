package slackapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/broker"
)

// maxBody bounds an interaction request's body.
const maxBody = 1 << 20

// ParseInteraction decodes the JSON payload of an interaction (the
// payload form field over HTTP, the envelope's payload over Socket Mode)
// and checks the fields Mayfly relies on.
func ParseInteraction(payload []byte) (*slack.InteractionCallback, error) {
	if len(payload) == 0 {
		return nil, errors.New("no payload")
	}
	if len(payload) > maxBody {
		return nil, fmt.Errorf("payload is larger than %d bytes", maxBody)
	}
	var cb slack.InteractionCallback
	if err := json.Unmarshal(payload, &cb); err != nil {
		return nil, fmt.Errorf("payload is not an interaction: %v", err)
	}
	if cb.Type == "" {
		return nil, errors.New("payload has no type")
	}
	if cb.Type == slack.InteractionTypeBlockActions && !ValidUserID(cb.User.ID) {
		return nil, fmt.Errorf("payload's user id %q is not a Slack user id", cut(cb.User.ID, 40))
	}
	return &cb, nil
}

// ParseBody decodes the body of an interaction request over HTTP: a form
// whose payload field holds the interaction's JSON.
func ParseBody(body []byte) (*slack.InteractionCallback, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, errors.New("body is not form-encoded")
	}
	return ParseInteraction([]byte(form.Get("payload")))
}

// Handler serves POST /v1/integrations/slack/interactions. It refuses a
// request whose signature does not verify with the signing secret, whose
// timestamp is more than five minutes from now, or that was seen before
// (by any replica sharing the store), and answers 200 to what Slack sent,
// whatever Mayfly made of it: a refusal of the clicker is told to them
// privately.
func (a *App) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, mayfly.EINVALID, "use POST")
			return
		}
		if a.secret == "" {
			writeError(w, http.StatusNotFound, mayfly.ENOTFOUND, "Slack interactions over HTTP are not enabled (slack.signing_secret_env)")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, mayfly.EINVALID, "cannot read the request body")
			return
		}
		if len(body) > maxBody {
			writeError(w, http.StatusRequestEntityTooLarge, mayfly.EINVALID, "request body is too large")
			return
		}
		if err := a.verify(r.Context(), r.Header, body); err != nil {
			code := mayfly.ErrorCode(err)
			status := http.StatusUnauthorized
			if code == mayfly.EUNAVAILABLE || code == mayfly.EINTERNAL {
				status = http.StatusServiceUnavailable
			}
			a.log.Warn("slack: interaction refused", "remote", r.RemoteAddr, "reason", mayfly.ErrorMessageOrText(err))
			writeError(w, status, code, mayfly.ErrorMessage(err))
			return
		}
		cb, err := ParseBody(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, mayfly.EINVALID, "interaction: "+err.Error())
			return
		}
		resp := a.Interact(r.Context(), cb)
		if resp == nil {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
	})
}

// verify checks a request's Slack signature and timestamp and that it was
// not seen before.
func (a *App) verify(ctx context.Context, h http.Header, body []byte) error {
	sv, err := slack.NewSecretsVerifier(h, a.secret)
	if err != nil {
		if errors.Is(err, slack.ErrExpiredTimestamp) {
			return mayfly.Errorf(mayfly.EUNAUTHORIZED, "request timestamp is more than 5 minutes from now (a replay, or a clock out of step)")
		}
		return mayfly.Errorf(mayfly.EUNAUTHORIZED, "request is not signed by Slack: missing or malformed X-Slack-Signature or X-Slack-Request-Timestamp")
	}
	if _, err := sv.Write(body); err != nil {
		return mayfly.Errorf(mayfly.EUNAUTHORIZED, "request signature: %v", err)
	}
	if err := sv.Ensure(); err != nil {
		return mayfly.Errorf(mayfly.EUNAUTHORIZED, "request signature does not match the signing secret")
	}
	now := a.clock.Now().UTC()
	key := "slack:" + h.Get("X-Slack-Signature")
	err = a.store.Update(ctx, func(tx mayfly.Tx) error { return tx.UseNonce(key, now, now.Add(ReplayWindow)) })
	if mayfly.ErrorCode(err) == mayfly.ECONFLICT {
		return mayfly.Errorf(mayfly.EUNAUTHORIZED, "request was seen before: a replay is refused")
	}
	if err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "cannot record the request's signature now: %v", err)
	}
	return nil
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// Interact acts on an interaction, from HTTP or Socket Mode, and returns
// what to answer Slack with (nil: nothing). A click on Approve approves;
// a click on Deny opens a form asking for the reason, and submitting the
// form denies. The clicker is told privately what happened (through the
// interaction's response_url, or in the form); other interactions are
// ignored.
func (a *App) Interact(ctx context.Context, cb *slack.InteractionCallback) any {
	switch cb.Type {
	case slack.InteractionTypeBlockActions:
		for _, act := range cb.ActionCallback.BlockActions {
			if act == nil {
				continue
			}
			switch act.ActionID {
			case ActionApprove:
				a.reply(ctx, cb.ResponseURL, a.decide(ctx, cb.User.ID, ActionApprove, act.Value, ""))
			case ActionDeny:
				if text := a.askReason(ctx, cb.User.ID, cb.TriggerID, act.Value); text != "" {
					a.reply(ctx, cb.ResponseURL, text)
				}
			}
		}
	case slack.InteractionTypeViewSubmission:
		if cb.View.CallbackID != denyCallback {
			return nil
		}
		reason := ""
		if cb.View.State != nil {
			reason = cb.View.State.Values[reasonBlock][reasonAction].Value
		}
		if err := a.decideErr(ctx, cb.User.ID, ActionDeny, cb.View.PrivateMetadata, strings.TrimSpace(reason)); err != nil {
			return slack.NewErrorsViewSubmissionResponse(map[string]string{reasonBlock: cut(mayfly.ErrorMessage(err), 300)})
		}
	}
	return nil
}

// askReason opens the form asking for the reason of a denial, when the
// clicker may deny the request; otherwise, or when the form cannot be
// opened, it returns what to tell the clicker.
func (a *App) askReason(ctx context.Context, slackUser, triggerID, id string) string {
	c, err := a.caller(ctx, slackUser)
	if err == nil {
		err = a.b.CanDeny(ctx, c, id)
	}
	if err != nil {
		return refusalText(a.refusal(ctx, c.User, id, err))
	}
	var r *mayfly.Request
	if err := a.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = tx.GetRequest(id)
		return err
	}); err != nil {
		return refusalText(a.refusal(ctx, c.User, id, err))
	}
	if _, err := a.api.OpenViewContext(ctx, triggerID, denyForm(r)); err != nil {
		a.log.Warn("slack: cannot open the denial form", "err", slackErr("views.open", err))
		return fmt.Sprintf(":warning: Slack did not open the form for the reason; deny it with `mayfly deny %s --reason \"WHY\"` or in the web app.", esc(id))
	}
	return ""
}

// caller maps a Slack user to the broker's caller.
func (a *App) caller(ctx context.Context, slackUser string) (broker.Caller, error) {
	user, err := a.mayflyUser(ctx, slackUser)
	if err != nil {
		a.log.Info("slack: click refused", "slack_user", slackUser, "reason", mayfly.ErrorMessageOrText(err))
		return broker.Caller{}, err
	}
	groups, admin, _ := a.dir.User(user)
	return broker.Caller{User: user, Groups: groups, Admin: admin, Source: "slack:" + slackUser}, nil
}

// decide approves or denies request id as the Mayfly user behind the
// Slack user, and returns what to tell the clicker.
func (a *App) decide(ctx context.Context, slackUser, action, id, reason string) string {
	if err := a.decideErr(ctx, slackUser, action, id, reason); err != nil {
		return refusalText(err)
	}
	r, err := a.read(ctx, id)
	switch {
	case err != nil:
		return ":white_check_mark: Done."
	case action == ActionDeny:
		return fmt.Sprintf(":no_entry: You denied request %s of %s.", esc(r.ID), esc(r.Requester))
	case r.State == mayfly.RequestApproved:
		return fmt.Sprintf(":white_check_mark: You approved request %s of %s; it is approved.", esc(r.ID), esc(r.Requester))
	default:
		return fmt.Sprintf(":white_check_mark: You approved request %s of %s. %s", esc(r.ID), esc(r.Requester), waiting(r))
	}
}

// decideErr calls the broker's Approve or Deny as the Mayfly user behind
// the Slack user; the error says, to the clicker, why nothing changed.
func (a *App) decideErr(ctx context.Context, slackUser, action, id, reason string) error {
	if id == "" || len(id) > 200 {
		return mayfly.Errorf(mayfly.EINVALID, "This names no request.")
	}
	c, err := a.caller(ctx, slackUser)
	if err == nil {
		if action == ActionApprove {
			_, err = a.b.Approve(ctx, c, id, reason)
		} else {
			_, err = a.b.Deny(ctx, c, id, reason)
		}
	}
	if err != nil {
		return a.refusal(ctx, c.User, id, err)
	}
	a.Notify()
	return nil
}

// refusal turns an error of the broker into what the clicker is told,
// in plain text.
func (a *App) refusal(ctx context.Context, user, id string, err error) error {
	switch mayfly.ErrorCode(err) {
	case mayfly.ENOTFOUND:
		if user != "" {
			// The broker hides a request from whoever may not see it, as
			// the API does; the clicker saw it in the channel.
			return mayfly.Errorf(mayfly.EFORBIDDEN, "%s may not decide request %s: it waits for approvers from %s, and you are not one of them.",
				user, id, strings.Join(a.groupsOf(ctx, id), ", "))
		}
	case mayfly.EINTERNAL:
		a.log.Error("slack: decision failed", "user", user, "request", id, "err", err)
	}
	return err
}

// refusalText is what a clicker is told when nothing changed.
func refusalText(err error) string {
	msg := mayfly.ErrorMessage(err)
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return ":no_entry_sign: " + slackEscape(msg) + " Nothing was changed."
}

func (a *App) read(ctx context.Context, id string) (*mayfly.Request, error) {
	var r *mayfly.Request
	err := a.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = tx.GetRequest(id)
		return err
	})
	return r, err
}

// mayflyUser maps a Slack user to an active Mayfly user: by the slack_id
// configured on the user or, when the administrator opted in with
// match_email, by the Slack account's confirmed email address.
func (a *App) mayflyUser(ctx context.Context, slackUser string) (string, error) {
	if !ValidUserID(slackUser) {
		return "", mayfly.Errorf(mayfly.EUNAUTHORIZED, "The interaction names no Slack user.")
	}
	name, ok := a.dir.BySlackID(slackUser)
	if !ok && a.cfg.MatchEmail {
		u, err := a.api.GetUserInfoContext(ctx, slackUser)
		if err != nil {
			return "", mayfly.Errorf(mayfly.EUNAVAILABLE, "Mayfly could not look your Slack account up (%v); try again.", slackErr("users.info", err))
		}
		switch {
		case u.Deleted || u.IsBot:
			return "", mayfly.Errorf(mayfly.EFORBIDDEN, "Your Slack account is deactivated or a bot.")
		case u.Profile.Email == "" || !u.IsEmailConfirmed:
			return "", mayfly.Errorf(mayfly.EFORBIDDEN, "Your Slack account has no confirmed email address to match with a Mayfly user; ask an administrator to set slack_id %s on your Mayfly user.", slackUser)
		}
		name, ok = a.dir.ByEmail(strings.ToLower(u.Profile.Email))
		if !ok {
			return "", mayfly.Errorf(mayfly.EFORBIDDEN, "No Mayfly user has the email address of your Slack account; ask an administrator to set slack_id %s on your Mayfly user.", slackUser)
		}
	}
	if !ok {
		return "", mayfly.Errorf(mayfly.EFORBIDDEN, "Your Slack account (%s) is not linked to a Mayfly user; ask an administrator to set slack_id %s on your Mayfly user.", slackUser, slackUser)
	}
	if _, _, known := a.dir.User(name); !known {
		return "", mayfly.Errorf(mayfly.EFORBIDDEN, "Your Slack account is linked to %s, who is not a Mayfly user.", name)
	}
	if st := a.b.CurrentUserStatus(ctx, name); st != broker.UserActive {
		return "", mayfly.Errorf(mayfly.EFORBIDDEN, "Mayfly user %s is %s.", name, st)
	}
	return name, nil
}

// reply tells the clicker text privately through the interaction's
// response_url, which must be Slack's (or, with api_url, the fake's).
func (a *App) reply(ctx context.Context, responseURL, text string) {
	if responseURL == "" {
		return
	}
	if !a.responseURLAllowed(responseURL) {
		a.log.Warn("slack: response_url is not Slack's; reply dropped")
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _, _, err := a.api.SendMessageContext(ctx, "", slack.MsgOptionResponseURL(responseURL, slack.ResponseTypeEphemeral),
		slack.MsgOptionText(text, false))
	if err != nil {
		a.log.Warn("slack: private reply failed", "err", slackErr("response_url", err))
	}
}

func (a *App) responseURLAllowed(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.User != nil {
		return false
	}
	if a.cfg.APIURL != "" {
		api, err := url.Parse(a.cfg.APIURL)
		return err == nil && u.Scheme == api.Scheme && u.Host == api.Host
	}
	return u.Scheme == "https" && u.Host == "hooks.slack.com"
}

// groupsOf returns the approver groups of request id's current step.
func (a *App) groupsOf(ctx context.Context, id string) []string {
	var r *mayfly.Request
	if err := a.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = tx.GetRequest(id)
		return err
	}); err != nil {
		return []string{"(unknown)"}
	}
	return r.ApproverGroups
}
