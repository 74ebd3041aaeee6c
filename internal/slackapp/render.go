package slackapp

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/slack-go/slack"

	"github.com/mayflyhq/mayfly"
)

// Action ids of the buttons on an approval message; their value is the
// request id.
const (
	ActionApprove = "mayfly_approve"
	ActionDeny    = "mayfly_deny"
	actionOpen    = "mayfly_open"
)

// rendered is a message: its notification text and its blocks.
type rendered struct {
	Text   string
	Blocks []slack.Block
}

func (m rendered) options() []slack.MsgOption {
	return []slack.MsgOption{slack.MsgOptionText(m.Text, false), slack.MsgOptionBlocks(m.Blocks...)}
}

// approvalMessage renders the approval message of r as it stands: with
// the buttons while it is pending, with its outcome and who decided after.
func approvalMessage(r *mayfly.Request, baseURL string) rendered {
	who, asked := esc(r.Requester), askedFor(r)
	var title, status string
	pending := r.State == mayfly.RequestPending
	switch r.State {
	case mayfly.RequestPending:
		title = "Approval needed: " + plain(r.Requester) + " asks for " + plain(askedPlain(r))
		status = ":hourglass_flowing_sand: " + waiting(r)
	case mayfly.RequestApproved:
		title = "Approved: " + plain(r.Requester) + "'s request for " + plain(askedPlain(r))
		status = ":white_check_mark: *Approved* by " + esc(strings.Join(r.Approvers, ", ")) + "."
		if len(r.Approvers) == 0 {
			status = ":white_check_mark: *Approved*."
		}
	case mayfly.RequestDenied:
		title = "Denied: " + plain(r.Requester) + "'s request for " + plain(askedPlain(r))
		status = ":no_entry: *Denied* by " + esc(r.Decider) + ": " + orNone(r.DecisionReason)
	case mayfly.RequestCancelled:
		title = "Withdrawn: " + plain(r.Requester) + "'s request for " + plain(askedPlain(r))
		status = ":leftwards_arrow_with_hook: *Withdrawn* by " + esc(r.Decider) + "."
		if strings.TrimSpace(r.DecisionReason) != "" {
			status += " " + orNone(r.DecisionReason)
		}
	case mayfly.RequestLapsed:
		title = "Lapsed: " + plain(r.Requester) + "'s request for " + plain(askedPlain(r))
		status = ":hourglass: *Lapsed*: " + orNone(r.DecisionReason)
	default:
		title = plain(r.Requester) + "'s request for " + plain(askedPlain(r)) + ": " + plain(string(r.State))
		status = esc(string(r.State))
	}
	if !pending && len(r.Approvers) > 0 && r.State != mayfly.RequestApproved {
		status += "\nApproved before that by " + esc(strings.Join(r.Approvers, ", ")) + "."
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, cut(title, 150), true, false)),
		slack.NewSectionBlock(mrkdwn(fmt.Sprintf("*%s* asks for %s.", who, asked)), nil, nil),
		slack.NewSectionBlock(nil, requestFields(r), nil),
		slack.NewSectionBlock(mrkdwn(cut(status, 3000)), nil, nil),
	}
	var buttons []slack.BlockElement
	if pending {
		approve := slack.NewButtonBlockElement(ActionApprove, r.ID, slack.NewTextBlockObject(slack.PlainTextType, "Approve", false, false)).
			WithStyle(slack.StylePrimary)
		deny := slack.NewButtonBlockElement(ActionDeny, r.ID, slack.NewTextBlockObject(slack.PlainTextType, "Deny…", false, false)).
			WithStyle(slack.StyleDanger)
		buttons = append(buttons, approve, deny)
	}
	if baseURL != "" {
		link := baseURL + "/app/approvals"
		buttons = append(buttons, slack.NewButtonBlockElement(actionOpen, r.ID,
			slack.NewTextBlockObject(slack.PlainTextType, "Open in Mayfly", false, false)).WithURL(link))
	}
	if len(buttons) > 0 {
		blocks = append(blocks, slack.NewActionBlock("mayfly_actions", buttons...))
	}
	return rendered{Text: slackEscape(title), Blocks: blocks}
}

// Ids of the form that asks for a denial's reason.
const (
	denyCallback = "mayfly_deny"
	reasonBlock  = "reason"
	reasonAction = "reason"
)

// denyForm renders the form (a modal) that asks the approver why they
// deny r; submitting it denies r with that reason.
func denyForm(r *mayfly.Request) slack.ModalViewRequest {
	input := slack.NewPlainTextInputBlockElement(
		slack.NewTextBlockObject(slack.PlainTextType, "Why? The requester is told.", false, false), reasonAction).
		WithMaxLength(1024)
	input.Multiline = true
	return slack.ModalViewRequest{
		Type:            slack.VTModal,
		CallbackID:      denyCallback,
		PrivateMetadata: r.ID,
		Title:           slack.NewTextBlockObject(slack.PlainTextType, "Deny request", false, false),
		Submit:          slack.NewTextBlockObject(slack.PlainTextType, "Deny", false, false),
		Close:           slack.NewTextBlockObject(slack.PlainTextType, "Cancel", false, false),
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			slack.NewSectionBlock(mrkdwn(cut(fmt.Sprintf("Deny *%s*'s request for %s?\nReason given: %s", esc(r.Requester), askedFor(r), orNone(r.Reason)), 3000)), nil, nil),
			slack.NewInputBlock(reasonBlock, slack.NewTextBlockObject(slack.PlainTextType, "Reason for the denial", false, false), nil, input),
		}},
	}
}

// waiting says what a pending request waits for.
func waiting(r *mayfly.Request) string {
	left := max(r.ApprovalsRequired-r.StepApprovals, 1)
	s := fmt.Sprintf("*Waiting* for %d more %s from %s", left, plural(left, "approval", "approvals"),
		esc(strings.Join(r.ApproverGroups, ", ")))
	if len(r.Steps) > 1 {
		s += fmt.Sprintf(" (step %d of %d)", r.Step+1, len(r.Steps))
	}
	s += "."
	if len(r.Approvers) > 0 {
		s += " Approved so far by " + esc(strings.Join(r.Approvers, ", ")) + "."
	}
	return s
}

func requestFields(r *mayfly.Request) []*slack.TextBlockObject {
	dur := "Duration"
	if r.ExtendsLease != "" {
		dur = "Extension"
	}
	f := [][2]string{
		{"Requester", r.Requester},
		{"Target", r.Target},
		{"Grant", r.Grant},
		{dur, human(r.Duration)},
		{"Reason", r.Reason},
		{"Policy", r.Policy},
		{"Request", r.ID},
	}
	if r.ExtendsLease != "" {
		f = append(f, [2]string{"Lease", r.ExtendsLease})
	}
	out := make([]*slack.TextBlockObject, 0, len(f))
	for _, x := range f {
		out = append(out, mrkdwn(cut("*"+x[0]+"*\n"+orNone(x[1]), 2000)))
	}
	return out
}

// decisionDM renders the direct message that tells the requester of r
// its outcome.
func decisionDM(r *mayfly.Request, baseURL string) rendered {
	var title, body string
	switch r.State {
	case mayfly.RequestApproved:
		title = "Approved: " + plain(askedPlain(r))
		body = fmt.Sprintf(":white_check_mark: Your request for %s was *approved* by %s.", askedFor(r), esc(strings.Join(r.Approvers, ", ")))
		if r.ExtendsLease != "" {
			body += " The lease now lasts " + human(r.Duration) + " longer."
		} else {
			body += fmt.Sprintf(" Create your account when you need it: `mayfly creds %s`", esc(r.ID))
		}
	case mayfly.RequestDenied:
		title = "Denied: " + plain(askedPlain(r))
		body = fmt.Sprintf(":no_entry: Your request for %s was *denied* by %s: %s", askedFor(r), esc(r.Decider), orNone(r.DecisionReason))
	case mayfly.RequestLapsed:
		title = "Lapsed: " + plain(askedPlain(r))
		body = fmt.Sprintf(":hourglass: Your request for %s *lapsed*: %s. Ask again if you still need access.", askedFor(r), orNone(r.DecisionReason))
	default:
		title = "Request " + plain(r.ID) + " is " + plain(string(r.State))
		body = esc(title)
	}
	return dm(title, body, r, baseURL, "/app/access#req-"+r.ID)
}

// expiringDM renders the warning that lease l expires soon.
func expiringDM(l *mayfly.Lease, r *mayfly.Request, left time.Duration, baseURL string) rendered {
	title := "Expiring in " + human(left) + ": " + plain(l.Grant) + " on " + plain(l.Target)
	body := fmt.Sprintf(":alarm_clock: Your access to *%s* on *%s* expires in %s, at %s. Save your work: the account %s and its sessions will then be removed.\nExtend it: `mayfly extend %s --for 30m --reason \"WHY\"`",
		esc(l.Grant), esc(l.Target), human(left), l.ExpiresAt.UTC().Format("2006-01-02 15:04:05 UTC"), esc(l.Username), esc(l.ID))
	return dm(title, body, r, baseURL, "/app/access")
}

func dm(title, body string, r *mayfly.Request, baseURL, path string) rendered {
	blocks := []slack.Block{slack.NewSectionBlock(mrkdwn(cut(body, 3000)), nil, nil)}
	if r != nil {
		blocks = append(blocks, slack.NewContextBlock("", mrkdwn(cut("Request "+esc(r.ID)+" · reason: "+orNone(r.Reason)+" · policy "+orNone(r.Policy), 3000))))
	}
	if baseURL != "" {
		blocks = append(blocks, slack.NewActionBlock("mayfly_actions", slack.NewButtonBlockElement(actionOpen, "",
			slack.NewTextBlockObject(slack.PlainTextType, "Open in Mayfly", false, false)).WithURL(baseURL+path)))
	}
	return rendered{Text: slackEscape(title), Blocks: blocks}
}

func mrkdwn(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
}

// askedFor names what r asks for, in mrkdwn.
func askedFor(r *mayfly.Request) string {
	if r.ExtendsLease != "" {
		return fmt.Sprintf("an extension of lease %s (*%s* on *%s*) by %s", esc(r.ExtendsLease), esc(r.Grant), esc(r.Target), human(r.Duration))
	}
	s := fmt.Sprintf("*%s* on *%s* for %s", esc(r.Grant), esc(r.Target), human(r.Duration))
	if r.BreakGlass {
		s += " (break-glass)"
	}
	return s
}

// askedPlain names what r asks for, in plain text.
func askedPlain(r *mayfly.Request) string {
	if r.ExtendsLease != "" {
		return "an extension of lease " + r.ExtendsLease + " by " + human(r.Duration)
	}
	return r.Grant + " on " + r.Target + " for " + human(r.Duration)
}

// clean makes a value safe to show on one line: control characters
// become spaces, and it is cut at 500 characters.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	return cut(strings.TrimSpace(s), 500)
}

// plain is a value for plain_text: cleaned, nothing to escape.
func plain(s string) string { return clean(s) }

// esc is a value for mrkdwn: cleaned, with the characters Slack gives
// meaning to escaped, so a reason can neither mention @channel nor
// disguise a link.
func esc(s string) string { return slackEscape(clean(s)) }

func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func orNone(s string) string {
	if s = esc(s); s == "" {
		return "(none)"
	}
	return s
}

func cut(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// human formats d without zero units: 1h, 1h30m, 45s.
func human(d time.Duration) string {
	d = d.Round(time.Second)
	if d <= 0 {
		return "0s"
	}
	h, m, s := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	var b strings.Builder
	if h > 0 {
		b.WriteString(strconv.Itoa(h) + "h")
	}
	if m > 0 {
		b.WriteString(strconv.Itoa(m) + "m")
	}
	if s > 0 {
		b.WriteString(strconv.Itoa(s) + "s")
	}
	return b.String()
}
