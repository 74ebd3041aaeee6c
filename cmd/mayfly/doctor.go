package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/config"
	"github.com/mayflyhq/mayfly/internal/connector/ssh"
	"github.com/mayflyhq/mayfly/internal/credential"
	"github.com/mayflyhq/mayfly/internal/policy"
	"github.com/mayflyhq/mayfly/internal/store/postgres"
	"github.com/mayflyhq/mayfly/internal/store/sqlite"
)

// defaultConfigPath is where the packages install the configuration.
const defaultConfigPath = "/etc/mayfly/mayfly.yaml"

// doctorReport is what `mayfly doctor -o json` prints.
type doctorReport struct {
	Config   string           `json:"config"`
	OK       bool             `json:"ok"`
	Findings []mayfly.Finding `json:"findings"`
}

// cmdDoctor checks a configuration against its real targets and says, per
// target, what is missing and how to fix it. It changes nothing on them
// (an SSH host gets one login whose only command is `true`), nor here: it
// makes no store, seal key, SSH CA or state file the server would make at
// its first start, and migrates no store (see openExistingStore).
func cmdDoctor(e *env, args []string) error {
	f := newFlags(e, "doctor", true)
	path := f.String("config", "", "configuration file (default "+defaultConfigPath+")")
	timeout := f.Duration("timeout", 10*time.Second, "how long each target may take to answer")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if *path == "" {
		*path = defaultConfigPath
		if _, err := os.Stat(*path); err != nil {
			return usageErr("doctor: --config FILE is required (%s does not exist)", defaultConfigPath)
		}
	}
	rep := doctorReport{Config: *path, Findings: []mayfly.Finding{}}
	cfg, err := config.Load(*path)
	if err != nil {
		rep.Findings = append(rep.Findings, mayfly.Finding{Check: "configuration", Status: mayfly.FindingFail,
			Detail: mayfly.ErrorMessageOrText(err), Fix: "fix the file; `mayfly policy check FILE` checks it alone"})
		return printDoctor(e, f.json(), rep)
	}
	rep.Findings = append(rep.Findings, mayfly.Finding{Check: "configuration", Status: mayfly.FindingOK,
		Detail: fmt.Sprintf("%d targets, %d policies, %d users", len(cfg.Targets), len(cfg.Policies), len(cfg.Users))})
	rep.Findings = append(rep.Findings, doctorPolicies(cfg)...)
	ctx := e.ctx

	// The store, opened as it is: doctor creates none and migrates none.
	// Sealed admin credentials live in it, under the seal key; so do the
	// SSH CA and certificate records on a PostgreSQL store.
	var creds *credential.Manager
	var shared mayfly.Store
	st, absent, storeFinding := doctorStore(ctx, cfg, e.getenv) // absent: no store yet, nothing kept in it
	rep.Findings = append(rep.Findings, storeFinding)
	if st != nil {
		defer st.Close()
		if cfg.Store.Postgres != nil {
			shared = st
		}
		if cfg.Seal.Enabled() {
			var err error
			if creds, err = openCredentials(ctx, cfg, st, e.getenv, discardLogger(), "doctor", nil, true); err != nil {
				rep.Findings = append(rep.Findings, mayfly.Finding{Check: "sealed credentials", Status: mayfly.FindingFail,
					Detail: mayfly.ErrorMessageOrText(err), Fix: "check seal.key_file / seal.key_env"})
				creds = nil
			}
		}
	}
	kinds := credentialKinds()
	sshCA := doctorSSHCA(cfg, e.getenv, shared)
	defer sshCA.close()
	for _, t := range cfg.Targets {
		var c mayfly.Connector
		var err error
		closeConn := func() {}
		if t.Kind == mayfly.KindSSH && cfg.Store.Postgres != nil && shared == nil && !absent {
			rep.Findings = append(rep.Findings, mayfly.Finding{Target: t.Name, Check: "set up", Status: mayfly.FindingFail,
				Detail: "the SSH CA is kept in the store, which could not be opened (see the store finding)"})
			continue
		}
		if t.Kind == mayfly.KindSSH {
			// Built to change nothing: no CA made, no state written, no
			// host key recorded on first contact.
			var ca *ssh.CA
			if ca, err = sshCA.get(); err == nil {
				var sc *ssh.Connector
				if sc, err = ssh.Inspect(sshTarget(cfg, t), ca, cfg.StateDir, shared, e.getenv); err == nil {
					c, closeConn = sc, func() { sc.Close() }
				}
			}
		} else if k, ok := kinds[t.Kind]; ok && creds == nil {
			// Nothing sealed: the admin credential is in the configuration.
			if c, err = k.New(t, e.getenv); err == nil {
				closeConn = func() { c.Close() }
			}
		} else {
			one := *cfg
			one.Targets = []mayfly.Target{t}
			var conns *connectors
			if conns, err = buildConnectors(ctx, &one, e.getenv, creds, shared); err == nil {
				c, closeConn = conns.all[t.Name], conns.Close
			}
		}
		if err != nil {
			rep.Findings = append(rep.Findings, mayfly.Finding{Target: t.Name, Check: "set up", Status: mayfly.FindingFail, Detail: mayfly.ErrorMessageOrText(err)})
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, *timeout)
		rep.Findings = append(rep.Findings, mayfly.Diagnose(tctx, c, t)...)
		cancel()
		closeConn()
	}
	return printDoctor(e, f.json(), rep)
}

// doctorStore opens the configuration's store as it is (see
// openExistingStore) and says how it stands. st is nil when there is no
// store yet (none; an ok finding when the server can create it) or it
// cannot be opened (a failure).
func doctorStore(ctx context.Context, cfg *config.Config, getenv func(string) string) (st store, none bool, f mayfly.Finding) {
	f = mayfly.Finding{Check: "store", Status: mayfly.FindingOK}
	where := "SQLite store " + cfg.Store.SQLite
	if cfg.Store.Postgres != nil {
		where = "PostgreSQL store"
	}
	st, err := openExistingStore(ctx, cfg.Store, getenv)
	switch {
	case err == nil:
		f.Detail = where + ": reachable, with this build's schema"
		return st, false, f
	case errors.Is(err, postgres.ErrOlderSchema) || errors.Is(err, sqlite.ErrOlderSchema):
		// An upgrade's new build before its server's restart.
		f.Status, f.Detail = mayfly.FindingWarn, mayfly.ErrorMessageOrText(err)+"; what it keeps (sealed credentials, the SSH CA) is not checked until then"
		return nil, false, f
	case mayfly.ErrorCode(err) != mayfly.ENOTFOUND:
		f.Status, f.Detail = mayfly.FindingFail, "cannot open the "+where+": "+mayfly.ErrorMessageOrText(err)
		return nil, false, f
	}
	f.Detail = mayfly.ErrorMessageOrText(err) + "; nothing is kept in it before then (sealed credentials, the SSH CA)"
	if cfg.Store.Postgres == nil {
		return nil, true, f
	}
	// The first server makes the schema: may it?
	dsn, _ := cfg.Store.Postgres.ResolveDSN(getenv) // resolved above
	role, schema, may, err := postgres.SchemaRights(ctx, dsn)
	switch {
	case err != nil:
		f.Status, f.Detail = mayfly.FindingFail, "cannot check the PostgreSQL store's rights: "+mayfly.ErrorMessageOrText(err)
	case schema == "":
		f.Status, f.Detail = mayfly.FindingFail, "the PostgreSQL store's database has no Mayfly schema yet, and no schema of the role "+role+"'s search_path exists to make it in"
		f.Fix = "set the role's search_path to a schema it may create tables in (ALTER ROLE " + role + " SET search_path = ...)"
	case !may:
		f.Status = mayfly.FindingFail
		f.Detail = "the PostgreSQL store's database has no Mayfly schema yet, and its role " + role + " may not create tables in schema " + schema + ", as the server's first start must (PostgreSQL 15 no longer lets every role create in public)"
		f.Fix = "GRANT CREATE ON SCHEMA " + schema + " TO " + role + "; or make " + role + " the owner of the database"
	default:
		f.Detail += "; its role " + role + " may create it in schema " + schema
	}
	return nil, true, f
}

// doctorCA opens the SSH CA for doctor once, as it is: none yet is no
// error (the server makes it at its first start), which the SSH targets'
// findings report.
type doctorCA struct {
	open func() (*ssh.CA, error)
	ca   *ssh.CA
	err  error
	done bool
}

func doctorSSHCA(cfg *config.Config, getenv func(string) string, shared mayfly.Store) *doctorCA {
	return &doctorCA{open: func() (*ssh.CA, error) {
		pass := getenv(cfg.SSHCA.PassphraseEnv)
		if pass == "" {
			return nil, mayfly.Errorf(mayfly.EINVALID, "%s: SSH targets need the CA passphrase in $%s (ssh_ca.passphrase_env)", cfg.Path, cfg.SSHCA.PassphraseEnv)
		}
		var ca *ssh.CA
		var err error
		if shared != nil {
			ca, err = ssh.OpenExistingSharedCA(shared, cfg.SSHCA.Dir, []byte(pass))
		} else {
			ca, err = ssh.OpenExistingCA(cfg.SSHCA.Dir, []byte(pass))
		}
		if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
			return nil, nil
		}
		if err != nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "open the SSH CA: %s", mayfly.ErrorMessageOrText(err))
		}
		return ca, nil
	}}
}

// get returns the CA, nil when there is none yet.
func (d *doctorCA) get() (*ssh.CA, error) {
	if !d.done {
		d.ca, d.err = d.open()
		d.done = true
	}
	return d.ca, d.err
}

func (d *doctorCA) close() {
	if d.ca != nil {
		d.ca.Close()
	}
}

// doctorPolicies finds policies nobody can use: no configured user may
// request under them, or too few can approve. Users who arrive through
// single sign-on or SCIM are not in the file: then only approver groups
// are reported, as warnings.
func doctorPolicies(cfg *config.Config) []mayfly.Finding {
	external := cfg.Auth.OIDC != nil || cfg.SCIM.TokenSHA256 != ""
	members := func(groups, users []string) []string {
		var out []string
		for _, u := range cfg.Users {
			if slices.Contains(users, u.Name) || slices.ContainsFunc(u.Groups, func(g string) bool { return slices.Contains(groups, g) }) {
				out = append(out, u.Name)
			}
		}
		return out
	}
	var out []mayfly.Finding
	for _, p := range cfg.Policies {
		bad := mayfly.FindingFail
		if external {
			bad = mayfly.FindingWarn
		}
		requesters := members(p.Groups, p.Users)
		if len(requesters) == 0 {
			out = append(out, mayfly.Finding{Check: "policy " + p.Name, Status: bad,
				Detail: "no configured user is in its groups or users: nobody can request under it" + externalNote(external),
				Fix:    "add the users, or fix the group names"})
			continue
		}
		steps := p.Steps
		if len(steps) == 0 && p.Approvals > 0 {
			steps = []policy.Step{{Approvals: p.Approvals, ApproverGroups: p.ApproverGroups}}
		}
		ok := true
		for i, st := range steps {
			approvers := members(st.ApproverGroups, nil)
			// The requester never approves their own request.
			if len(approvers) < st.Approvals || (len(approvers) == st.Approvals && len(requesters) == 1 && slices.Contains(approvers, requesters[0])) {
				ok = false
				out = append(out, mayfly.Finding{Check: "policy " + p.Name, Status: bad,
					Detail: fmt.Sprintf("step %d needs %d approvals from %s, which has %d configured member(s) besides the requester: requests can never be approved%s",
						i+1, st.Approvals, strings.Join(st.ApproverGroups, ", "), max(0, len(approvers)-boolInt(len(requesters) == 1 && slices.Contains(approvers, requesters[0]))), externalNote(external)),
					Fix: "add approvers to those groups, or lower approvals"})
			}
		}
		if ok {
			out = append(out, mayfly.Finding{Check: "policy " + p.Name, Status: mayfly.FindingOK,
				Detail: fmt.Sprintf("%d user(s) may request; every approval step can be met", len(requesters))})
		}
	}
	return out
}

func externalNote(external bool) string {
	if external {
		return " (among the users in the file; users from single sign-on or SCIM may be)"
	}
	return ""
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// printDoctor prints the findings and fails unless all is well.
func printDoctor(e *env, asJSON bool, rep doctorReport) error {
	bad := 0
	for _, f := range rep.Findings {
		if f.Status != mayfly.FindingOK {
			bad++
		}
	}
	rep.OK = bad == 0
	if asJSON {
		if err := e.printJSON(rep); err != nil {
			return err
		}
	} else {
		var rows [][]string
		for _, f := range rep.Findings {
			target := f.Target
			if target == "" {
				target = "-"
			}
			rows = append(rows, []string{strings.ToUpper(f.Status), target, f.Check, f.Detail})
			if f.Fix != "" {
				rows = append(rows, []string{"", "", "", "fix: " + f.Fix})
			}
		}
		e.table("STATUS\tTARGET\tCHECK\tDETAIL", rows)
		if bad == 0 {
			fmt.Fprintf(e.stdout, "\nAll is well (%s).\n", rep.Config)
		} else {
			fmt.Fprintf(e.stdout, "\n%d problem(s) in %s.\n", bad, rep.Config)
		}
	}
	if bad > 0 {
		return &doctorProblems{n: bad}
	}
	return nil
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// doctorProblems makes doctor exit 1 once it printed what is wrong.
type doctorProblems struct{ n int }

func (d *doctorProblems) Error() string { return fmt.Sprintf("doctor found %d problem(s)", d.n) }
