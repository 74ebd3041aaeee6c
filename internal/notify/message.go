package notify

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/mayflyhq/mayfly"
)

// Message types: the "type" of each message and the values a channel's
// events may list.
const (
	// TypeApprovalNeeded goes to the members of a request's current
	// approver groups (never the requester).
	TypeApprovalNeeded = "approval_needed"
	// TypeBreakGlass goes to the approvers and the security groups when
	// someone takes break-glass access; it is urgent.
	TypeBreakGlass = "break_glass"
	// TypeApproval tells the requester one approval was recorded and more
	// are needed.
	TypeApproval = "approval"
	// TypeApproved tells the requester the request is fully approved.
	TypeApproved = "approved"
	// TypeDenied tells the requester the request was denied.
	TypeDenied = "denied"
	// TypeCancelled tells the approvers a request was withdrawn.
	TypeCancelled = "cancelled"
	// TypeLapsed tells the requester a request ran out of time: nobody
	// decided in time, or it was approved but never activated.
	TypeLapsed = "lapsed"
	// TypeActivated tells the requester an account was created.
	TypeActivated = "activated"
	// TypeExpiring warns the requester that a lease expires soon.
	TypeExpiring = "expiring"
	// TypeRevoked tells the requester someone else revoked the lease.
	TypeRevoked = "revoked"
	// TypeEnded tells the requester the lease ended (expired, idle, user
	// suspended, orphan) and its account is gone.
	TypeEnded = "ended"
	// TypeRevokeFailed tells the security groups a revocation keeps
	// failing; it is urgent.
	TypeRevokeFailed = "revoke_failed"
	// TypeOrphan tells the security groups an account with no live lease
	// was found on a target (and removed, or not: then it is urgent).
	TypeOrphan = "orphan"
	// TypeAlert tells the security groups about an operational problem
	// (a target unreachable, revocations overdue, an audit sink backlog),
	// with what to do.
	TypeAlert = "alert"
)

// messageTypes lists every message type.
var messageTypes = []string{TypeApprovalNeeded, TypeBreakGlass, TypeApproval, TypeApproved, TypeDenied,
	TypeCancelled, TypeLapsed, TypeActivated, TypeExpiring, TypeRevoked, TypeEnded, TypeRevokeFailed, TypeOrphan, TypeAlert}

// message is one notification, rendered by each channel in its own format.
type message struct {
	// ID is stable across retries and restarts: receivers deduplicate on it.
	ID         string
	Type       string
	Time       time.Time
	Urgent     bool
	Actor      string
	Recipients []recipient
	Request    *mayfly.Request
	Lease      *mayfly.Lease
	Subject    string
	Headline   string
	Fields     []field
	Commands   []command
	Note       string
	Link       string
	// done holds the email addresses that already have the message, so a
	// retry does not send it to them again.
	done map[string]bool
}

type recipient struct {
	User  string `json:"user"`
	Email string `json:"email,omitempty"`
}

type field struct{ Label, Value string }

type command struct{ Label, Line string }

// Text renders m as plain text.
func (m *message) Text() string {
	var b strings.Builder
	b.WriteString(m.Headline)
	b.WriteString("\n")
	if len(m.Fields) > 0 {
		b.WriteString("\n")
		width := 0
		for _, f := range m.Fields {
			width = max(width, len(f.Label))
		}
		for _, f := range m.Fields {
			fmt.Fprintf(&b, "%-*s  %s\n", width+1, f.Label+":", f.Value)
		}
	}
	if len(m.Commands) > 0 {
		b.WriteString("\n")
		width := 0
		for _, c := range m.Commands {
			width = max(width, len(c.Label))
		}
		for _, c := range m.Commands {
			fmt.Fprintf(&b, "%-*s  %s\n", width+1, c.Label+":", c.Line)
		}
	}
	if m.Link != "" {
		fmt.Fprintf(&b, "\nOpen in Mayfly: %s\n", m.Link)
	}
	if m.Note != "" {
		fmt.Fprintf(&b, "\n%s\n", m.Note)
	}
	return b.String()
}

// messages turns one audit event into the messages it calls for (often
// none). An error means the facts could not be read now and the event must
// be tried again.
func (n *Notifier) messages(ctx context.Context, e *mayfly.AuditEvent) ([]*message, error) {
	switch e.Action {
	case "request.create", "request.approval", "request.approve", "request.deny", "request.cancel", "request.lapse":
		r, err := n.request(ctx, e.RequestID)
		if err != nil || r == nil {
			return nil, err
		}
		return n.requestMessages(e, r), nil
	case "account.orphan_removed", "account.orphan_remove_failed":
		return []*message{n.orphan(e)}, nil
	case "alert.target_unreachable", "alert.target_recovered", "alert.revocation_overdue", "alert.sink_backlog":
		return []*message{n.alert(e)}, nil
	case "lease.activate", "lease.revoke", "lease.revoked", "lease.missing", "lease.revoke_failed":
		var l *mayfly.Lease
		err := n.store.View(ctx, func(tx mayfly.Tx) error {
			var err error
			l, err = tx.GetLease(e.LeaseID)
			return err
		})
		if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
			n.log.Warn("notifications: lease of audit event not found; skipped", "seq", e.Seq, "lease", e.LeaseID)
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read lease %s: %w", e.LeaseID, err)
		}
		r, err := n.request(ctx, l.RequestID)
		if err != nil {
			return nil, err
		}
		return n.leaseMessages(e, l, r), nil
	}
	return nil, nil
}

// request looks a request up in the directory; nil when it is unknown.
func (n *Notifier) request(ctx context.Context, id string) (*mayfly.Request, error) {
	if id == "" {
		return nil, nil
	}
	r, err := n.dir.RequestInfo(ctx, id)
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
		n.log.Warn("notifications: request not found; skipped", "request", id)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up request %s: %w", id, err)
	}
	return r, nil
}

func (n *Notifier) newMessage(typ string, e *mayfly.AuditEvent, r *mayfly.Request, l *mayfly.Lease) *message {
	m := &message{ID: strconv.FormatInt(e.Seq, 10) + "." + typ, Type: typ, Time: e.Time, Actor: e.Actor,
		Request: r, Lease: l}
	n.link(m)
	return m
}

// link points m at the web app (served under /app/): approvers at their
// approvals inbox, requesters at their access page, on the request.
func (n *Notifier) link(m *message) {
	if n.baseURL == "" || m.Request == nil {
		return
	}
	switch m.Type {
	case TypeApprovalNeeded, TypeBreakGlass, TypeCancelled:
		m.Link = n.baseURL + "/app/approvals"
	default:
		m.Link = n.baseURL + "/app/access#req-" + url.PathEscape(m.Request.ID)
	}
}

// stepGroups returns the approver groups of step i (0-based) of r.
func stepGroups(r *mayfly.Request, i int) (groups []string, approvals int) {
	if i >= 0 && i < len(r.Steps) {
		return r.Steps[i].ApproverGroups, r.Steps[i].Approvals
	}
	if i == 0 || len(r.Steps) == 0 {
		return r.ApproverGroups, r.ApprovalsRequired
	}
	return nil, 0
}

// fraction parses "n/m".
func fraction(s string) (n, m int, ok bool) {
	a, b, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	n, err1 := strconv.Atoi(a)
	m, err2 := strconv.Atoi(b)
	return n, m, err1 == nil && err2 == nil
}

func (n *Notifier) requestMessages(e *mayfly.AuditEvent, r *mayfly.Request) []*message {
	d := e.Data
	switch e.Action {
	case "request.create":
		if d["break_glass"] == "true" {
			return []*message{n.breakGlass(e, r)}
		}
		if d["decision"] == "auto" || d["decision"] == "break_glass" {
			return nil
		}
		groups, approvals := stepGroups(r, 0)
		if len(groups) == 0 {
			return nil
		}
		return []*message{n.approvalNeeded(e, r, 0, groups, approvals)}
	case "request.approval":
		got, need, ok := fraction(d["approvals"])
		step, steps, multi := fraction(d["step"])
		if !multi {
			step, steps = 1, 1
		}
		stepDone := ok && got >= need
		if stepDone && step >= steps {
			return nil // request.approve follows and says it all
		}
		m := n.newMessage(TypeApproval, e, r, nil)
		m.Recipients = n.users(r.Requester)
		m.Subject = fmt.Sprintf("%s approved your request for %s (%s)", clean(e.Actor), asked(r), d["approvals"])
		m.Headline = m.Subject + ". More approvals are needed before you can use it."
		m.Fields = append(requestFields(r), field{"Approvals", clean(d["approvals"])})
		if multi {
			m.Fields = append(m.Fields, field{"Step", fmt.Sprintf("%d of %d", step, steps)})
		}
		out := []*message{m}
		if stepDone {
			groups, approvals := stepGroups(r, step) // the next step, 0-based
			if len(groups) > 0 {
				out = append(out, n.approvalNeeded(e, r, step, groups, approvals))
			}
		}
		return out
	case "request.approve":
		if d["auto"] == "true" {
			return nil // the requester saw the decision in the response
		}
		m := n.newMessage(TypeApproved, e, r, nil)
		m.Recipients = n.users(r.Requester)
		if r.ExtendsLease != "" {
			// Approving an extension applies it: there is nothing to activate.
			m.Subject = "Extension approved: " + asked(r)
			m.Headline = fmt.Sprintf("Your request for %s was approved and applied: the lease now lasts %s longer.",
				asked(r), human(r.Duration))
			m.Fields = requestFields(r)
			if len(r.Approvers) > 0 {
				m.Fields = append(m.Fields, field{"Approved by", clean(strings.Join(r.Approvers, ", "))})
			}
			m.Commands = []command{{"See the lease", "mayfly leases --active"}}
			return []*message{m}
		}
		m.Subject = "Approved: " + what(r.Grant, r.Target)
		m.Headline = fmt.Sprintf("Your request for %s for %s was approved. Create your account when you need it.",
			what(r.Grant, r.Target), human(r.Duration))
		m.Fields = requestFields(r)
		if len(r.Approvers) > 0 {
			m.Fields = append(m.Fields, field{"Approved by", clean(strings.Join(r.Approvers, ", "))})
		}
		m.Commands = []command{{"Get credentials", "mayfly creds " + shellQuote(r.ID)}}
		return []*message{m}
	case "request.deny":
		m := n.newMessage(TypeDenied, e, r, nil)
		m.Recipients = n.users(r.Requester)
		m.Subject = "Denied: " + asked(r)
		m.Headline = fmt.Sprintf("%s denied your request for %s.", clean(e.Actor), asked(r))
		m.Fields = append(requestFields(r), field{"Denial reason", orNone(e.Reason)})
		return []*message{m}
	case "request.cancel":
		m := n.newMessage(TypeCancelled, e, r, nil)
		m.Recipients = n.members(r.ApproverGroups, r.Requester)
		m.Subject = fmt.Sprintf("Withdrawn: %s's request for %s", clean(r.Requester), asked(r))
		m.Headline = fmt.Sprintf("%s withdrew the request for %s; there is nothing left to approve.",
			clean(e.Actor), asked(r))
		if r.ExtendsLease != "" && e.Actor != r.Requester {
			// The lease ended before anyone decided.
			m.Recipients = n.members(r.ApproverGroups, "")
			m.Subject = fmt.Sprintf("Void: %s's request for %s", clean(r.Requester), asked(r))
			m.Headline = fmt.Sprintf("The request for %s is void: %s. There is nothing left to approve.", asked(r), orNone(e.Reason))
		}
		m.Fields = requestFields(r)
		return []*message{m}
	case "request.lapse":
		m := n.newMessage(TypeLapsed, e, r, nil)
		m.Recipients = n.users(r.Requester)
		m.Subject = "Lapsed: " + asked(r)
		m.Headline = fmt.Sprintf("Your request for %s lapsed: %s. Ask again if you still need access.",
			asked(r), orNone(e.Reason))
		m.Fields = requestFields(r)
		m.Commands = []command{{"Ask again", askAgain(r)}}
		return []*message{m}
	}
	return nil
}

// asked names what request r asks for: "readonly on pg", or "an
// extension of lease L (readonly on pg) by 2h".
func asked(r *mayfly.Request) string {
	if r.ExtendsLease != "" {
		return fmt.Sprintf("an extension of lease %s (%s) by %s", clean(r.ExtendsLease), what(r.Grant, r.Target), human(r.Duration))
	}
	return what(r.Grant, r.Target)
}

// askAgain is the command that repeats request r.
func askAgain(r *mayfly.Request) string {
	if r.ExtendsLease != "" {
		ask := "mayfly extend " + shellQuote(r.ExtendsLease) + " --for " + human(r.Duration)
		if strings.TrimSpace(r.Reason) != "" {
			ask += " --reason " + shellQuote(clean(r.Reason))
		}
		return ask
	}
	ask := "mayfly request " + shellQuote(r.Target+"/"+r.Grant) + " --for " + human(r.Duration)
	if strings.TrimSpace(r.Reason) != "" {
		ask += " --reason " + shellQuote(clean(r.Reason))
	}
	return ask
}

func (n *Notifier) approvalNeeded(e *mayfly.AuditEvent, r *mayfly.Request, step int, groups []string, approvals int) *message {
	m := n.newMessage(TypeApprovalNeeded, e, r, nil)
	if step > 0 {
		m.ID += "." + strconv.Itoa(step+1)
	}
	m.Recipients = n.members(groups, r.Requester)
	m.Subject = fmt.Sprintf("Approval needed: %s asks for %s for %s", clean(r.Requester), what(r.Grant, r.Target), human(r.Duration))
	m.Headline = fmt.Sprintf("%s asks for %s for %s. You can approve or deny it as a member of %s.",
		clean(r.Requester), what(r.Grant, r.Target), human(r.Duration), clean(strings.Join(groups, ", ")))
	if r.ExtendsLease != "" {
		m.Subject = fmt.Sprintf("Approval needed: %s asks for %s", clean(r.Requester), asked(r))
		m.Headline = fmt.Sprintf("%s asks for %s. Approving it lengthens the running lease at once. You can approve or deny it as a member of %s.",
			clean(r.Requester), asked(r), clean(strings.Join(groups, ", ")))
	}
	m.Fields = requestFields(r)
	if approvals > 0 {
		m.Fields = append(m.Fields, field{"Approvals needed", strconv.Itoa(approvals)})
	}
	if len(r.Steps) > 1 {
		m.Fields = append(m.Fields, field{"Step", fmt.Sprintf("%d of %d", step+1, len(r.Steps))})
	}
	m.Commands = []command{
		{"Approve", "mayfly approve " + shellQuote(r.ID)},
		{"Deny", "mayfly deny " + shellQuote(r.ID) + ` --reason "WHY"`},
	}
	return m
}

func (n *Notifier) breakGlass(e *mayfly.AuditEvent, r *mayfly.Request) *message {
	m := n.newMessage(TypeBreakGlass, e, r, nil)
	m.Urgent = true
	groups, _ := stepGroups(r, 0)
	m.Recipients = n.members(append(slices.Clone(groups), n.security...), r.Requester)
	m.Subject = fmt.Sprintf("BREAK-GLASS: %s took %s for %s", clean(r.Requester), what(r.Grant, r.Target), human(r.Duration))
	m.Headline = fmt.Sprintf("%s used break-glass access to %s for %s, without prior approval. Check the reason and what was done.",
		clean(r.Requester), what(r.Grant, r.Target), human(r.Duration))
	m.Fields = append(requestFields(r), field{"Policy", orNone(r.Policy)})
	m.Commands = []command{
		{"Audit trail", "mayfly audit --request " + shellQuote(r.ID)},
		{"Leases", "mayfly leases --user " + shellQuote(r.Requester)},
		{"Record review", `mayfly review LEASE_ID --note "WHAT YOU FOUND"`},
		{"Revoke", `mayfly revoke LEASE_ID --reason "WHY"`},
	}
	return m
}

func (n *Notifier) leaseMessages(e *mayfly.AuditEvent, l *mayfly.Lease, r *mayfly.Request) []*message {
	switch e.Action {
	case "lease.activate":
		m := n.newMessage(TypeActivated, e, r, l)
		m.Recipients = n.users(l.Requester)
		m.Subject = fmt.Sprintf("Access active: %s until %s", what(l.Grant, l.Target), clock(l.ExpiresAt))
		m.Headline = fmt.Sprintf("An account was created for your access to %s. It expires at %s.",
			what(l.Grant, l.Target), clock(l.ExpiresAt))
		m.Fields = leaseFields(l, r)
		m.Commands = []command{{"End it early", "mayfly done " + shellQuote(l.ID)}}
		m.Note = "If you did not ask for this access, end it and tell your security team."
		return []*message{m}
	case "lease.revoke":
		if e.Actor == l.Requester {
			return nil
		}
		m := n.newMessage(TypeRevoked, e, r, l)
		m.Recipients = n.users(l.Requester)
		m.Subject = "Revoked: " + what(l.Grant, l.Target)
		m.Headline = fmt.Sprintf("%s revoked your access to %s. The account and its sessions are being removed.",
			clean(e.Actor), what(l.Grant, l.Target))
		m.Fields = append(leaseFields(l, r), field{"Revocation reason", orNone(e.Reason)})
		return []*message{m}
	case "lease.revoked", "lease.missing":
		reason := e.Data["end_reason"]
		if reason == "" {
			reason = l.EndReason
		}
		if reason == mayfly.EndDone || reason == mayfly.EndRevoked {
			return nil // the requester ended it, or was told at revocation
		}
		m := n.newMessage(TypeEnded, e, r, l)
		m.Recipients = n.users(l.Requester)
		m.Subject = fmt.Sprintf("Access ended: %s (%s)", what(l.Grant, l.Target), clean(reason))
		m.Headline = fmt.Sprintf("Your access to %s %s. The account %s has been removed.",
			what(l.Grant, l.Target), endedBecause(reason), clean(l.Username))
		m.Fields = leaseFields(l, r)
		return []*message{m}
	case "lease.revoke_failed":
		attempt, _ := strconv.Atoi(e.Data["attempt"])
		if attempt != 1 && attempt%10 != 0 {
			return nil
		}
		m := n.newMessage(TypeRevokeFailed, e, r, l)
		m.Urgent = true
		m.Recipients = n.members(n.security, "")
		m.Subject = fmt.Sprintf("Revocation failing: %s on %s (attempt %d)", clean(l.Username), clean(l.Target), attempt)
		m.Headline = fmt.Sprintf("Mayfly could not remove the account %s on %s (attempt %d). It keeps retrying; the target may need attention.",
			clean(l.Username), clean(l.Target), attempt)
		m.Fields = append(leaseFields(l, r), field{"Last error", orNone(e.Reason)})
		m.Commands = []command{
			{"Audit trail", "mayfly audit --lease " + shellQuote(l.ID)},
			{"Leases", "mayfly leases --target " + shellQuote(l.Target)},
		}
		return []*message{m}
	}
	return nil
}

// alert renders an operational alert recorded in the audit trail: its
// reason says what happened, Data["what_to_do"] what to do about it.
func (n *Notifier) alert(e *mayfly.AuditEvent) *message {
	m := n.newMessage(TypeAlert, e, nil, nil)
	m.Recipients = n.members(n.security, "")
	m.Urgent = e.Action != "alert.target_recovered"
	m.Subject = clean(e.Data["summary"])
	if m.Subject == "" {
		m.Subject = "Mayfly alert: " + clean(e.Action)
	}
	m.Headline = clean(e.Reason)
	m.Note = clean(e.Data["what_to_do"])
	if e.Target != "" {
		m.Fields = append(m.Fields, field{"Target", clean(e.Target)})
	}
	if e.LeaseID != "" {
		m.Fields = append(m.Fields, field{"Lease", clean(e.LeaseID)})
	}
	return m
}

func (n *Notifier) orphan(e *mayfly.AuditEvent) *message {
	m := n.newMessage(TypeOrphan, e, nil, nil)
	m.Recipients = n.members(n.security, "")
	account, target := clean(e.Data["account"]), clean(e.Target)
	if e.Action == "account.orphan_remove_failed" {
		m.Urgent = true
		m.Subject = fmt.Sprintf("Unexplained account %s on %s could not be removed", account, target)
		m.Headline = fmt.Sprintf("Mayfly found the account %s on %s with no live lease behind it and could not remove it. Remove it by hand and find out where it came from.",
			account, target)
		m.Fields = []field{{"Target", target}, {"Account", account}, {"Error", orNone(e.Reason)}}
	} else {
		m.Subject = fmt.Sprintf("Unexplained account %s on %s removed", account, target)
		m.Headline = fmt.Sprintf("Mayfly found the account %s on %s with no live lease behind it and removed it. Find out where it came from.",
			account, target)
		m.Fields = []field{{"Target", target}, {"Account", account}}
	}
	m.Commands = []command{
		{"Accounts", "mayfly inventory " + shellQuote(e.Target)},
		{"Audit trail", "mayfly audit --target " + shellQuote(e.Target)},
	}
	return m
}

func endedBecause(reason string) string {
	switch reason {
	case mayfly.EndExpired:
		return "expired"
	case mayfly.EndIdle:
		return "was unused for too long and has ended"
	case mayfly.EndUserSuspended:
		return "ended because your user was suspended"
	case mayfly.EndMissing:
		return "ended: the account vanished from the target (removed outside Mayfly)"
	default:
		return "has ended (" + clean(reason) + ")"
	}
}

// expiringMessage warns the requester of l that it expires soon.
func (n *Notifier) expiringMessage(ctx context.Context, l *mayfly.Lease, now time.Time) (*message, error) {
	r, err := n.request(ctx, l.RequestID)
	if err != nil {
		return nil, err
	}
	left := l.ExpiresAt.Sub(now).Round(time.Second)
	m := &message{ID: "expiring." + l.ID + "." + strconv.FormatInt(l.ExpiresAt.Unix(), 10), Type: TypeExpiring,
		Time: now, Actor: "mayfly", Request: r, Lease: l}
	n.link(m)
	m.Recipients = n.users(l.Requester)
	m.Subject = fmt.Sprintf("Expiring in %s: %s", human(left), what(l.Grant, l.Target))
	m.Headline = fmt.Sprintf("Your access to %s expires in %s, at %s. Save your work: the account and its sessions will then be removed.",
		what(l.Grant, l.Target), human(left), clock(l.ExpiresAt))
	m.Fields = leaseFields(l, r)
	m.Commands = []command{
		{"Extend", "mayfly extend " + shellQuote(l.ID) + ` --for 30m --reason "WHY"`},
		{"End it now", "mayfly done " + shellQuote(l.ID)},
	}
	if r != nil {
		m.Commands = append(m.Commands, command{"Ask again", askAgain(r)})
	}
	return m, nil
}

func requestFields(r *mayfly.Request) []field {
	kind, dur := "new access", "Duration"
	switch {
	case r.ExtendsLease != "":
		kind, dur = "extension of lease "+clean(r.ExtendsLease), "Extension"
	case r.BreakGlass:
		kind = "break-glass"
	}
	return []field{
		{"Kind", kind},
		{"Requester", clean(r.Requester)},
		{"Target", clean(r.Target)},
		{"Grant", clean(r.Grant)},
		{dur, human(r.Duration)},
		{"Reason", orNone(r.Reason)},
		{"Request", clean(r.ID)},
	}
}

func leaseFields(l *mayfly.Lease, r *mayfly.Request) []field {
	f := []field{
		{"Requester", clean(l.Requester)},
		{"Target", clean(l.Target)},
		{"Grant", clean(l.Grant)},
		{"Account", clean(l.Username)},
		{"Expires", clock(l.ExpiresAt)},
	}
	if r != nil {
		f = append(f, field{"Reason", orNone(r.Reason)}, field{"Request", clean(r.ID)})
	}
	return append(f, field{"Lease", clean(l.ID)})
}

// users returns the named user as a recipient.
func (n *Notifier) users(name string) []recipient {
	if name == "" {
		return nil
	}
	return []recipient{{User: name, Email: n.dir.Email(name)}}
}

// members returns the members of groups, each once, in order of name,
// leaving out except.
func (n *Notifier) members(groups []string, except string) []recipient {
	seen := map[string]bool{except: true, "": true}
	var names []string
	for _, g := range groups {
		for _, u := range n.dir.Members(g) {
			if !seen[u] {
				seen[u] = true
				names = append(names, u)
			}
		}
	}
	slices.Sort(names)
	out := make([]recipient, 0, len(names))
	for _, u := range names {
		out = append(out, recipient{User: u, Email: n.dir.Email(u)})
	}
	return out
}

func what(grant, target string) string {
	return clean(grant) + " on " + clean(target)
}

// human formats d without zero units: 1h, 1h30m, 45s.
func human(d time.Duration) string {
	d = d.Round(time.Second)
	if d <= 0 {
		return "0s"
	}
	s := d.String()
	s, _ = strings.CutSuffix(s, "m0s")
	if len(s) != len(d.String()) {
		s += "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "(unknown)"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// clean makes a value safe to show on one line: control characters
// (line breaks included) become spaces, and it is cut at 500 characters.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > 500 {
		s = string(r[:500]) + "…"
	}
	return s
}

func orNone(s string) string {
	if s = clean(s); s == "" {
		return "(none)"
	}
	return s
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
