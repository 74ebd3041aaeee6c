package main

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/audit"
	"github.com/mayflyhq/mayfly/internal/broker"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// requestJSON is what the CLI prints for a request.
type requestOut struct {
	httpapi.RequestView
	Decision    *policy.Decision   `json:"decision,omitempty"`
	Credentials *httpapi.CredsView `json:"credentials,omitempty"`
}

func cmdRequest(e *env, args []string) error {
	f := newFlags(e, "request", true).outputs("env")
	dur := f.String("for", "", "how long the access should last (90s, 30m, 8h, 1d); default: the policy's default")
	reason := f.String("reason", "", "why you need it (a ticket id, an incident)")
	creds := f.Bool("creds", false, "when approved at once, create the account and print the credential in the same step")
	bg := f.Bool("break-glass", false, "take emergency access without approval (designated groups only; reason required)")
	pub := f.String("public-key", "", "with --creds on an SSH grant: sign this public key file instead of generating a key pair")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(1); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	target, grant, ok := strings.Cut(f.pos[0], "/")
	if !ok || target == "" || grant == "" {
		return usageErr("request: %q: want TARGET/GRANT, e.g. local-pg/readonly", f.pos[0])
	}
	body := httpapi.CreateRequestBody{Target: target, Grant: grant, Duration: *dur, Reason: *reason, BreakGlass: *bg, Activate: *creds}
	if *pub != "" {
		k, err := readFileArg(*pub)
		if err != nil {
			return err
		}
		body.PublicKey = k
	}
	if *dur != "" {
		if _, err := mayfly.ParseDuration(*dur); err != nil {
			return usageErr("--for %q: want %s", *dur, mayfly.DurationSyntax)
		}
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var resp httpapi.CreateRequestResponse
	if err := c.Do(e.ctx, "POST", "/v1/requests", nil, body, &resp); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(requestOut{RequestView: resp.RequestView, Decision: &resp.Decision, Credentials: resp.Credentials})
	}
	r := resp.RequestView
	if *f.output == "env" {
		// For eval in a script: the request, and the credential when issued.
		fmt.Fprintf(e.stdout, "MAYFLY_REQUEST_ID=%s\nMAYFLY_REQUEST_STATE=%s\n", shellQuote(r.ID), shellQuote(string(r.State)))
		if resp.Credentials != nil {
			printCredsEnv(e, resp.Credentials)
		}
		return nil
	}
	fmt.Fprintf(e.stdout, "request %s: %s (policy %s, %s)\n", r.ID, r.State, r.Policy, r.Duration)
	switch {
	case resp.Credentials != nil:
		printCreds(e, resp.Credentials)
	case r.State == mayfly.RequestApproved:
		fmt.Fprintf(e.stdout, "approved; run `mayfly creds %s` when you are ready to use it\n", r.ID)
	default:
		fmt.Fprintf(e.stdout, "waiting for %s\n", waitingFor(r))
	}
	return nil
}

func cmdRequests(e *env, args []string) error {
	f := newFlags(e, "requests", true)
	pending := f.Bool("pending", false, "only requests waiting for a decision")
	pf := addPageFlags(f, true)
	c, err := f.start(e, args, 0)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *pending {
		q.Set("pending", "true")
	}
	rs, err := listPages[httpapi.RequestView](e, c, "requests", "/v1/requests", q, pf)
	if err != nil {
		return err
	}
	if rs == nil {
		rs = []httpapi.RequestView{}
	}
	if f.json() {
		return e.printJSON(rs)
	}
	var rows [][]string
	for _, r := range rs {
		rows = append(rows, []string{r.ID, kindText(r), r.Requester, r.Target + "/" + r.Grant, r.Duration, string(r.State),
			approvalsText(r), fmtTime(r.CreatedAt), r.Reason})
	}
	e.table("ID\tKIND\tREQUESTER\tACCESS\tDURATION\tSTATE\tAPPROVALS\tCREATED\tREASON", rows)
	return nil
}

func decide(e *env, name, action string, args []string, needReason bool) error {
	f := newFlags(e, name, true)
	reason := f.String("reason", "", "why")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(1); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	if needReason && strings.TrimSpace(*reason) == "" {
		return usageErr("%s: --reason is required", name)
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var r httpapi.RequestView
	if err := c.Do(e.ctx, "POST", "/v1/requests/"+url.PathEscape(f.pos[0])+"/"+action, nil, httpapi.DecisionBody{Reason: *reason}, &r); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(r)
	}
	switch {
	case r.State == mayfly.RequestPending:
		fmt.Fprintf(e.stdout, "request %s: approval recorded; waiting for %s\n", r.ID, waitingFor(r))
	case r.State == mayfly.RequestApproved && r.ExtendsLease != "":
		fmt.Fprintf(e.stdout, "request %s: approved; lease %s extended by %s\n", r.ID, r.ExtendsLease, r.Duration)
	default:
		fmt.Fprintf(e.stdout, "request %s: %s\n", r.ID, r.State)
	}
	return nil
}

// kindText labels a request in tables: access, break-glass, or the
// extension of a lease.
func kindText(r httpapi.RequestView) string {
	switch r.Kind {
	case httpapi.KindExtension:
		return "extend " + r.ExtendsLease
	case httpapi.KindBreakGlass:
		return "BREAK-GLASS"
	}
	return r.Kind
}

func cmdApprove(e *env, args []string) error { return decide(e, "approve", "approve", args, false) }
func cmdDeny(e *env, args []string) error    { return decide(e, "deny", "deny", args, true) }
func cmdCancel(e *env, args []string) error  { return decide(e, "cancel", "cancel", args, false) }

func cmdCreds(e *env, args []string) error {
	f := newFlags(e, "creds", true).outputs("env")
	pub := f.String("public-key", "", "SSH grants: sign this public key file instead of generating a key pair")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(1); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	body := httpapi.ActivateBody{}
	if *pub != "" {
		k, err := readFileArg(*pub)
		if err != nil {
			return err
		}
		body.PublicKey = k
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var cr httpapi.CredsView
	if err := c.Do(e.ctx, "POST", "/v1/requests/"+url.PathEscape(f.pos[0])+"/activate", nil, body, &cr); err != nil {
		return err
	}
	switch *f.output {
	case "json":
		return e.printJSON(cr)
	case "env":
		printCredsEnv(e, &cr)
		return nil
	}
	printCreds(e, &cr)
	return nil
}

// printCredsEnv prints the credential as shell variable assignments.
func printCredsEnv(e *env, cr *httpapi.CredsView) {
	for _, kv := range [][2]string{{"MAYFLY_LEASE_ID", cr.LeaseID}, {"MAYFLY_USERNAME", cr.Username}, {"MAYFLY_PASSWORD", cr.Password},
		{"MAYFLY_HOST", cr.Host}, {"MAYFLY_PORT", strconv.Itoa(cr.Port)}, {"MAYFLY_DATABASE", cr.Database},
		{"MAYFLY_EXPIRES_AT", cr.ExpiresAt.Format(time.RFC3339)}} {
		fmt.Fprintf(e.stdout, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
}

// clientCommand is a command line that connects with the credential, the
// password typed when the client asks (never on the command line), or ""
// for a kind without a usual client.
func clientCommand(c *httpapi.CredsView) string {
	host, port, user := shellQuote(c.Host), strconv.Itoa(c.Port), shellQuote(c.Username)
	switch c.Kind {
	case mayfly.KindPostgres:
		s := "psql -h " + host + " -p " + port + " -U " + user
		if c.Database != "" {
			s += " -d " + shellQuote(c.Database)
		}
		return s
	case mayfly.KindMySQL:
		s := "mysql -h " + host + " -P " + port + " -u " + user + " -p"
		if c.Database != "" {
			s += " " + shellQuote(c.Database)
		}
		return s
	case mayfly.KindRedis:
		return "redis-cli -h " + host + " -p " + port + " --user " + user + " --askpass"
	case mayfly.KindSSH:
		if c.PrivateKey != "" {
			return "ssh -i id_mayfly -o CertificateFile=id_mayfly-cert.pub -p " + port + " " + user + "@" + host +
				"   # after saving the private key as id_mayfly (chmod 600) and the certificate as id_mayfly-cert.pub"
		}
		return "ssh -o CertificateFile=YOUR_KEY-cert.pub -p " + port + " " + user + "@" + host + "   # after saving the certificate beside your key"
	}
	return ""
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func printCreds(e *env, c *httpapi.CredsView) {
	w := e.stdout
	fmt.Fprintf(w, "lease:     %s\n", c.LeaseID)
	fmt.Fprintf(w, "username:  %s\n", c.Username)
	if c.Password != "" {
		fmt.Fprintf(w, "password:  %s\n", c.Password)
	}
	if c.Host != "" {
		fmt.Fprintf(w, "host:      %s\nport:      %d\n", c.Host, c.Port)
	}
	if c.Database != "" {
		fmt.Fprintf(w, "database:  %s\n", c.Database)
	}
	if c.Certificate != "" {
		fmt.Fprintf(w, "certificate:\n%s\n", c.Certificate)
	}
	if c.PrivateKey != "" {
		fmt.Fprintf(w, "private key:\n%s\n", c.PrivateKey)
	}
	fmt.Fprintf(w, "expires:   %s (in %s)\n", c.ExpiresAt.Local().Format(time.RFC3339), time.Until(c.ExpiresAt).Round(time.Second))
	if cmd := clientCommand(c); cmd != "" && c.Host != "" {
		fmt.Fprintf(w, "connect:   %s\n", cmd)
		if c.Password != "" {
			fmt.Fprintln(w, "           (paste the password when asked; `mayfly connect` does all of this for you)")
		}
	}
	fmt.Fprintln(w, "This credential is shown once; Mayfly does not keep it.")
}

// notGone is the outcome of done or revoke when the account is not yet
// verified gone: Mayfly keeps retrying, and the command exits with
// exitNotGone so that a script does not take access for removed.
type notGone struct{ l httpapi.LeaseView }

// exitNotGone is the exit status of done and revoke while the lease's
// account is not yet verified gone.
const exitNotGone = 6

func (n *notGone) Error() string {
	msg := fmt.Sprintf("lease %s is %s: its account is not yet verified gone; Mayfly keeps retrying", n.l.ID, n.l.State)
	if n.l.LastError != "" {
		msg += " (last error: " + n.l.LastError + ")"
	}
	return msg + "; `mayfly revoke " + n.l.ID + " --wait` waits until it is"
}

func endLease(e *env, name, path string, args []string) error {
	f := newFlags(e, name, true)
	reason := f.String("reason", "", "why")
	wait := f.Bool("wait", false, "wait until the account is verified gone (exit status 6 if --timeout passes first)")
	timeout := f.Duration("timeout", 5*time.Minute, "how long --wait waits")
	c, err := f.start(e, args, 1)
	if err != nil {
		return err
	}
	if *timeout <= 0 {
		return usageErr("--timeout must be positive")
	}
	id := f.pos[0]
	p := "/v1/leases/" + url.PathEscape(id) + "/" + path
	if strings.HasPrefix(id, "req_") {
		p = "/v1/requests/" + url.PathEscape(id) + "/done"
		if path == "revoke" {
			p = "/v1/leases/" + url.PathEscape(id) + "/revoke"
		}
	}
	var l httpapi.LeaseView
	if err := c.Do(e.ctx, "POST", p, nil, httpapi.DecisionBody{Reason: *reason}, &l); err != nil {
		return err
	}
	if *wait && l.State != mayfly.LeaseRevoked {
		deadline := time.Now().Add(*timeout)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for l.State != mayfly.LeaseRevoked && time.Now().Before(deadline) {
			select {
			case <-e.ctx.Done():
				return e.ctx.Err()
			case <-tick.C:
			}
			var cur httpapi.LeaseView
			if err := c.Do(e.ctx, "GET", "/v1/leases/"+url.PathEscape(l.ID), nil, nil, &cur); err != nil {
				return err
			}
			l = cur
		}
	}
	if f.json() {
		if err := e.printJSON(l); err != nil {
			return err
		}
	} else if l.State == mayfly.LeaseRevoked {
		if l.Login != "" && l.Login != l.Username {
			// An SSH certificate: nothing to remove on the host, the
			// certificate is refused from now on.
			fmt.Fprintf(e.stdout, "lease %s: access as %s ended, its certificate revoked (%s)\n", l.ID, l.Login, l.EndReason)
		} else {
			fmt.Fprintf(e.stdout, "lease %s: account %s removed (%s)\n", l.ID, l.Username, l.EndReason)
		}
	}
	if l.State != mayfly.LeaseRevoked {
		return &notGone{l}
	}
	return nil
}

func cmdDone(e *env, args []string) error   { return endLease(e, "done", "done", args) }
func cmdRevoke(e *env, args []string) error { return endLease(e, "revoke", "revoke", args) }

func cmdLeases(e *env, args []string) error {
	f := newFlags(e, "leases", true)
	active := f.Bool("active", false, "only leases whose account may exist")
	target := f.String("target", "", "only this target")
	user := f.String("user", "", "only this requester (admins)")
	pf := addPageFlags(f, true)
	c, err := f.start(e, args, 0)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *active {
		q.Set("active", "true")
	}
	if *target != "" {
		q.Set("target", *target)
	}
	if *user != "" {
		q.Set("user", *user)
	}
	ls, err := listPages[httpapi.LeaseView](e, c, "leases", "/v1/leases", q, pf)
	if err != nil {
		return err
	}
	if ls == nil {
		ls = []httpapi.LeaseView{}
	}
	if f.json() {
		return e.printJSON(ls)
	}
	var rows [][]string
	for _, l := range ls {
		ended := "-"
		if l.EndedAt != nil {
			ended = fmtTime(*l.EndedAt)
		}
		kind := "access"
		if l.BreakGlass {
			kind = "BREAK-GLASS"
		}
		login := l.Login
		if login == "" {
			login = l.Username
		}
		rows = append(rows, []string{l.ID, l.RequestID, kind, l.Requester, l.Target + "/" + l.Grant, login, string(l.State), fmtTime(l.ExpiresAt), ended, l.EndReason})
	}
	e.table("ID\tREQUEST\tKIND\tREQUESTER\tACCESS\tLOGIN\tSTATE\tEXPIRES\tENDED\tEND REASON", rows)
	return nil
}

func cmdAudit(e *env, args []string) error {
	f := newFlags(e, "audit", true)
	follow := f.Bool("follow", false, "stream new events as they happen (admins)")
	q := url.Values{}
	for _, k := range [][2]string{
		{"actor", "only events by this user"},
		{"action", "only this action, e.g. lease.revoked"},
		{"target", "only events on this target"},
		{"lease", "only events of this lease"},
		{"request", "only events of this request"},
		{"since", "only events at or after this time: RFC 3339, a date (2006-01-02), or an age such as 1h, 7d"},
		{"until", "only events before this time (same forms as --since)"},
		{"after", "only events after this sequence number"},
		{"limit", "at most this many events (one page; at most 10000)"},
	} {
		f.Func(k[0], k[1], func(v string) error { q.Set(k[0], v); return nil })
	}
	pf := addPageFlags(f, false)
	c, err := f.start(e, args, 0, "jsonl", "csv")
	if err != nil {
		return err
	}
	if *follow {
		return followAudit(e, c, q.Get("after"), *f.output)
	}
	evs, err := listPages[mayfly.AuditEvent](e, c, "audit", "/v1/audit", q, pf)
	if err != nil {
		return err
	}
	switch *f.output {
	case "json":
		if evs == nil {
			evs = []mayfly.AuditEvent{}
		}
		return e.printJSON(evs)
	case "jsonl":
		enc := json.NewEncoder(e.stdout)
		for _, ev := range evs {
			if err := enc.Encode(ev); err != nil {
				return err
			}
		}
		return nil
	case "csv":
		w := csv.NewWriter(e.stdout)
		w.Write([]string{"seq", "time", "actor", "action", "subject", "target", "request_id", "lease_id", "reason", "source", "prev_hash", "hash"})
		for _, ev := range evs {
			w.Write([]string{strconv.FormatInt(ev.Seq, 10), ev.Time.UTC().Format(time.RFC3339Nano), ev.Actor, ev.Action, ev.Subject, ev.Target, ev.RequestID, ev.LeaseID, ev.Reason, ev.Source, ev.PrevHash, ev.Hash})
		}
		w.Flush()
		return w.Error()
	}
	var rows [][]string
	for _, ev := range evs {
		rows = append(rows, []string{strconv.FormatInt(ev.Seq, 10), fmtTime(ev.Time), ev.Actor, ev.Action, ev.Subject, oneLine(ev.Reason)})
	}
	e.table("SEQ\tTIME\tACTOR\tACTION\tSUBJECT\tREASON", rows)
	return nil
}

func cmdAuditVerify(e *env, args []string) error {
	f := newFlags(e, "audit verify", true)
	from := f.Int64("from", 0, "first event to check (default: the first retained)")
	to := f.Int64("to", 0, "last event to check (default: the last)")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	q := url.Values{}
	if *from > 0 {
		q.Set("from", strconv.FormatInt(*from, 10))
	}
	if *to > 0 {
		q.Set("to", strconv.FormatInt(*to, 10))
	}
	var res audit.Result
	if err := c.Do(e.ctx, "GET", "/v1/audit/verify", q, nil, &res); err != nil {
		return err
	}
	if f.json() {
		if err := e.printJSON(res); err != nil {
			return err
		}
	} else if res.OK {
		fmt.Fprintf(e.stdout, "audit chain intact: %d events verified (seq %d to %d)\n", res.Checked, res.First, res.Last)
	}
	if !res.OK {
		return &mayfly.Error{Code: mayfly.ECONFLICT, Message: fmt.Sprintf("audit chain broken at event %d: %s", res.Broken, res.Problem)}
	}
	return nil
}

// cmdPolicyReload asks the server to reload its configuration file.
func cmdPolicyReload(e *env, args []string) error {
	f := newFlags(e, "policy reload", true)
	c, err := f.start(e, args, 0)
	if err != nil {
		return err
	}
	var res httpapi.ReloadResult
	if err := c.Do(e.ctx, "POST", "/v1/policy/reload", nil, nil, &res); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(res)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(e.stdout, "warning: %s\n", safeText(w))
	}
	if len(res.NeedsRestart) == 0 {
		fmt.Fprintln(e.stdout, "configuration reloaded")
		return nil
	}
	fmt.Fprintln(e.stdout, "configuration reloaded, except what only a restart applies:")
	for _, s := range res.NeedsRestart {
		fmt.Fprintf(e.stdout, "  %s\n", safeText(s))
	}
	fmt.Fprintln(e.stdout, "restart the server to apply these")
	return nil
}

// cmdPolicyExplain explains the decision policy would make.
func cmdPolicyExplain(e *env, args []string) error {
	f := newFlags(e, "policy explain", true)
	user := f.String("user", "", "explain for this user (admins; default: you)")
	target := f.String("target", "", "target name (required)")
	grant := f.String("grant", "", "grant name (required)")
	dur := f.String("for", "", "the duration asked for, e.g. 30m, 8h or 1d (default: the policy's default)")
	reason := f.String("reason", "", "the reason given")
	bg := f.Bool("break-glass", false, "as a break-glass request")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	if *target == "" || *grant == "" {
		return usageErr("policy explain: --target and --grant are required")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var d policy.Decision
	if err := c.Do(e.ctx, "POST", "/v1/policy/explain", nil, httpapi.ExplainBody{User: *user, Target: *target, Grant: *grant, Duration: *dur, Reason: *reason, BreakGlass: *bg}, &d); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(d)
	}
	pol := "none"
	if d.Policy != nil {
		pol = *d.Policy
	}
	fmt.Fprintf(e.stdout, "decision: %s (policy: %s)\n", d.Decision, pol)
	if d.Reason != "" {
		fmt.Fprintf(e.stdout, "reason:   %s\n", d.Reason)
	}
	for i, s := range d.Steps {
		fmt.Fprintf(e.stdout, "step %d:   %d approval(s) from %s\n", i+1, s.Approvals, strings.Join(s.ApproverGroups, ", "))
	}
	var rows [][]string
	for _, c := range d.Considered {
		rows = append(rows, []string{c.Name, strconv.FormatBool(c.Matched), c.Why})
	}
	e.table("POLICY\tMATCHED\tWHY", rows)
	return nil
}

func cmdWhoami(e *env, args []string) error {
	f := newFlags(e, "whoami", true)
	if err := f.parse(e, args); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var who map[string]any
	if err := c.Do(e.ctx, "GET", "/v1/whoami", nil, nil, &who); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(who)
	}
	fmt.Fprintf(e.stdout, "%v (groups: %v, admin: %v)\n", who["name"], who["groups"], who["admin"])
	if exp, _ := who["expires_at"].(string); exp != "" {
		t, _ := time.Parse(time.RFC3339Nano, exp)
		fmt.Fprintf(e.stdout, "authenticated by %v, until %s\n", who["method"], fmtTime(t))
	} else {
		fmt.Fprintf(e.stdout, "authenticated by %v\n", who["method"])
	}
	return nil
}

func cmdToken(e *env, args []string) error {
	f := newFlags(e, "token", false)
	if err := f.parse(e, args); err != nil {
		return err
	}
	tok, sum := newToken()
	fmt.Fprintf(e.stdout, "token:        %s\ntoken_sha256: %s\n", tok, sum)
	return nil
}

// newToken returns a random bearer token and its hex SHA-256.
func newToken() (string, string) {
	b := make([]byte, 32)
	rand.Read(b)
	tok := "mfy_" + base64.RawURLEncoding.EncodeToString(b)
	s := sha256.Sum256([]byte(tok))
	return tok, hex.EncodeToString(s[:])
}

// approvalsText is "got/needed" for the current step, with the step when
// there are several.
func approvalsText(r httpapi.RequestView) string {
	s := fmt.Sprintf("%d/%d", r.StepApprovals, r.ApprovalsRequired)
	if len(r.Steps) > 1 {
		s += fmt.Sprintf(" (step %d/%d)", r.Step+1, len(r.Steps))
	}
	return s
}

// waitingFor says who must still approve.
func waitingFor(r httpapi.RequestView) string {
	s := fmt.Sprintf("%d more approval(s) from %s", r.ApprovalsRequired-r.StepApprovals, strings.Join(r.ApproverGroups, " or "))
	for i := r.Step + 1; i < len(r.Steps); i++ {
		s += fmt.Sprintf(", then %d from %s", r.Steps[i].Approvals, strings.Join(r.Steps[i].ApproverGroups, " or "))
	}
	return s
}

// followAudit prints events from the live stream until interrupted,
// reconnecting from the last event seen.
func followAudit(e *env, c *httpapi.Client, after, format string) error {
	for {
		q := url.Values{}
		if after != "" {
			q.Set("after", after)
		}
		req, err := http.NewRequestWithContext(e.ctx, "GET", c.Addr+"/v1/audit/stream?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := (&http.Client{Transport: c.HTTP.Transport}).Do(req)
		if err != nil {
			if e.ctx.Err() != nil {
				return nil
			}
			time.Sleep(time.Second)
			continue
		}
		if resp.StatusCode != 200 {
			var eb struct {
				Error struct{ Code, Message string }
			}
			json.NewDecoder(resp.Body).Decode(&eb)
			resp.Body.Close()
			return &mayfly.Error{Code: eb.Error.Code, Message: eb.Error.Message}
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var ev mayfly.AuditEvent
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				continue
			}
			after = strconv.FormatInt(ev.Seq, 10)
			if format == "json" || format == "jsonl" {
				fmt.Fprintln(e.stdout, data)
			} else {
				fmt.Fprintf(e.stdout, "%d\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, fmtTime(ev.Time), safeText(ev.Actor), safeText(ev.Action), safeText(ev.Subject), oneLine(ev.Reason))
			}
			if f, ok := e.stdout.(interface{ Sync() error }); ok {
				f.Sync()
			}
		}
		resp.Body.Close()
		if e.ctx.Err() != nil {
			return nil
		}
	}
}

func cmdAuditHash(e *env, args []string) error {
	f := newFlags(e, "audit hash", true)
	if err := f.parse(e, args); err != nil {
		return err
	}
	if len(f.pos) > 1 {
		return usageErr("audit hash: want at most one value (or none, to read it from standard input)")
	}
	// The value is a secret: read from standard input unless given, so it
	// stays out of shell history.
	var value string
	if len(f.pos) == 1 && f.pos[0] != "-" {
		value = f.pos[0]
	} else {
		line, err := bufio.NewReader(io.LimitReader(e.stdin, 64<<10)).ReadString('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("audit hash: read the value from standard input: %w", err)
		}
		value = strings.TrimRight(line, "\r\n")
		if value == "" {
			return usageErr("audit hash: no value on standard input (echo the leaked secret into it, or give it as an argument)")
		}
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var res httpapi.AuditHashResult
	if err := c.Do(e.ctx, "POST", "/v1/audit/hash", nil, httpapi.AuditHashBody{Value: value}, &res); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "hmac: %s\n", res.HMAC)
	if len(res.Leases) == 0 {
		fmt.Fprintln(e.stdout, "no lease was issued this secret")
	}
	for _, l := range res.Leases {
		fmt.Fprintf(e.stdout, "issued to lease %s\n", l)
	}
	return nil
}

func cmdAuditPrune(e *env, args []string) error {
	f := newFlags(e, "audit prune", true)
	older := f.String("older-than", "", "remove events older than this (at least 24h, e.g. 2160h or 90d), after archiving them")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if *older == "" {
		return usageErr("audit prune: --older-than is required")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var res broker.PruneResult
	if err := c.Do(e.ctx, "POST", "/v1/audit/prune", nil, httpapi.PruneBody{OlderThan: *older}, &res); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "removed %d events; the chain now starts at event %d", res.Removed, res.FirstKept)
	if res.Archive != "" {
		fmt.Fprintf(e.stdout, " (archived in %s on the server)", res.Archive)
	}
	fmt.Fprintln(e.stdout)
	return nil
}
