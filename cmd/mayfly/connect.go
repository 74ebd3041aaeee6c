package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/httpapi"
)

// childExit carries the exit status of the command `mayfly connect` ran.
type childExit struct{ code int }

func (c *childExit) Error() string { return fmt.Sprintf("command exited with status %d", c.code) }

// cmdConnect requests access, waits for approval with a live status line,
// activates a session-bound lease, runs the client with the credential in
// its environment (or a 0600 file), and revokes the lease when it exits.
func cmdConnect(e *env, args []string) error {
	f := newFlags(e, "connect", false)
	dur := f.String("for", "", "how long at most (default: the policy's default)")
	reason := f.String("reason", "", "why")
	hb := f.Duration("heartbeat", 60*time.Second, "revoke the lease when this client is silent for this long (5s to 1h)")
	wait := f.Duration("wait", 30*time.Minute, "how long to wait for approval")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if len(f.pos) < 1 {
		return usageErr("connect: want TARGET/GRANT (usage: mayfly %s)", commands["connect"].usage)
	}
	target, grant, ok := strings.Cut(f.pos[0], "/")
	if !ok || target == "" || grant == "" {
		return usageErr("connect: %q: want TARGET/GRANT", f.pos[0])
	}
	command := f.pos[1:]
	if *hb < 5*time.Second || *hb > time.Hour {
		return usageErr("connect: --heartbeat %s: want between 5s and 1h", *hb)
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	hbText := hb.String()
	var resp httpapi.CreateRequestResponse
	if err := c.Do(e.ctx, "POST", "/v1/requests", nil, httpapi.CreateRequestBody{
		Target: target, Grant: grant, Duration: *dur, Reason: *reason, Activate: true, HeartbeatTimeout: hbText,
	}, &resp); err != nil {
		return err
	}
	creds := resp.Credentials
	if creds == nil {
		creds, err = waitAndActivate(e, c, resp.RequestView, hbText, *wait)
		if err != nil {
			return err
		}
	}
	return runSession(e, c, creds, command, *hb)
}

// waitAndActivate shows what a pending request waits for until it is
// decided, then activates it.
func waitAndActivate(e *env, c *httpapi.Client, r httpapi.RequestView, hb string, wait time.Duration) (*httpapi.CredsView, error) {
	start := time.Now()
	tty := isTerminal(e.stderr)
	last := ""
	for r.State == mayfly.RequestPending {
		line := fmt.Sprintf("request %s: waiting for %s (%s)", r.ID, waitingFor(r), time.Since(start).Round(time.Second))
		if tty {
			fmt.Fprintf(e.stderr, "\r\033[K%s", line)
		} else if s := waitingFor(r); s != last {
			fmt.Fprintln(e.stderr, line)
			last = s
		}
		select {
		case <-e.ctx.Done():
			c.Do(context.Background(), "POST", "/v1/requests/"+url.PathEscape(r.ID)+"/cancel", nil, httpapi.DecisionBody{Reason: "connect interrupted"}, nil)
			return nil, mayfly.Errorf(mayfly.ECONFLICT, "interrupted; request %s cancelled", r.ID)
		case <-time.After(time.Second):
		}
		if time.Since(start) > wait {
			c.Do(context.Background(), "POST", "/v1/requests/"+url.PathEscape(r.ID)+"/cancel", nil, httpapi.DecisionBody{Reason: "no decision in time"}, nil)
			return nil, mayfly.Errorf(mayfly.ECONFLICT, "no decision within %s; request %s cancelled", wait, r.ID)
		}
		if err := c.Do(e.ctx, "GET", "/v1/requests/"+url.PathEscape(r.ID), nil, nil, &r); err != nil {
			return nil, err
		}
	}
	if tty {
		fmt.Fprint(e.stderr, "\r\033[K")
	}
	if r.State != mayfly.RequestApproved {
		why := r.DecisionReason
		if r.Decider != "" {
			why = r.Decider + ": " + why
		}
		return nil, mayfly.Errorf(mayfly.EFORBIDDEN, "request %s was %s (%s)", r.ID, r.State, why)
	}
	fmt.Fprintf(e.stderr, "request %s approved by %s\n", r.ID, strings.Join(r.Approvers, ", "))
	var creds httpapi.CredsView
	if err := c.Do(e.ctx, "POST", "/v1/requests/"+url.PathEscape(r.ID)+"/activate", nil, httpapi.ActivateBody{HeartbeatTimeout: hb}, &creds); err != nil {
		return nil, err
	}
	return &creds, nil
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// runSession runs the command with the credential and ends the lease when
// it exits, whatever happens.
func runSession(e *env, c *httpapi.Client, cr *httpapi.CredsView, command []string, hb time.Duration) (err error) {
	dir, err := connectDir(e.getenv)
	if err != nil {
		return err
	}
	done := func() {
		os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var l httpapi.LeaseView
		if derr := c.Do(ctx, "POST", "/v1/leases/"+url.PathEscape(cr.LeaseID)+"/done", nil, httpapi.DecisionBody{Reason: "connect: command exited"}, &l); derr != nil {
			fmt.Fprintf(e.stderr, "mayfly: ending lease %s: %s (it ends by heartbeat timeout anyway)\n", cr.LeaseID, mayfly.ErrorMessageOrText(derr))
		}
	}
	defer done()
	envv, defCmd, sshOpts, err := sessionEnv(cr, dir)
	if err != nil {
		return err
	}
	if len(command) == 0 {
		command = defCmd
	} else {
		command = withSSHOptions(command, sshOpts)
	}
	if len(command) == 0 {
		return usageErr("connect: no default client for target kind %q; give a command after --", cr.Kind)
	}
	hctx, stopHB := context.WithCancel(context.Background())
	defer stopHB()
	go func() {
		t := time.NewTicker(hb / 3)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				c.Do(hctx, "POST", "/v1/leases/"+url.PathEscape(cr.LeaseID)+"/heartbeat", nil, httpapi.HeartbeatBody{Timeout: hb.String()}, nil)
			}
		}
	}()
	fmt.Fprintf(e.stderr, "mayfly: connected as %s on %s until %s; the account is removed when the command exits\n",
		cr.Username, cr.Target, cr.ExpiresAt.Local().Format("2006-01-02 15:04:05 MST"))
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(), envv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return &childExit{code: ee.ExitCode()}
		}
		return usageErr("connect: run %s: %v", command[0], err)
	}
	return nil
}

// sessionEnv returns the environment that hands the credential to the
// target's client, never on its command line, the default client, and for
// SSH the options that give ssh the lease's identity and pinned host key.
func sessionEnv(cr *httpapi.CredsView, dir string) (env, defCmd, sshOpts []string, err error) {
	return sessionEnvOf(cr, dir)
}

func sessionEnvOf(cr *httpapi.CredsView, dir string) ([]string, []string, []string, error) {
	port := strconv.Itoa(cr.Port)
	env := []string{"MAYFLY_LEASE_ID=" + cr.LeaseID, "MAYFLY_USERNAME=" + cr.Username, "MAYFLY_HOST=" + cr.Host,
		"MAYFLY_PORT=" + port, "MAYFLY_DATABASE=" + cr.Database, "MAYFLY_EXPIRES_AT=" + cr.ExpiresAt.Format(time.RFC3339)}
	write := func(name, content string) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, []byte(content), 0o600)
	}
	switch cr.Kind {
	case mayfly.KindPostgres:
		env = append(env, "PGHOST="+cr.Host, "PGPORT="+port, "PGUSER="+cr.Username, "PGPASSWORD="+cr.Password, "PGDATABASE="+cr.Database)
		return env, []string{"psql"}, nil, nil
	case mayfly.KindMySQL:
		opt := fmt.Sprintf("[client]\nuser=%s\npassword=%s\nhost=%s\nport=%s\n", cr.Username, cr.Password, cr.Host, port)
		if cr.Database != "" {
			opt += "database=" + cr.Database + "\n"
		}
		p, err := write("my.cnf", opt)
		if err != nil {
			return nil, nil, nil, err
		}
		env = append(env, "MAYFLY_MYSQL_DEFAULTS_FILE="+p)
		return env, []string{"mysql", "--defaults-extra-file=" + p}, nil, nil
	case mayfly.KindRedis:
		env = append(env, "REDISCLI_AUTH="+cr.Password, "MAYFLY_REDIS_ADDR="+cr.Host+":"+port)
		return env, []string{"redis-cli", "-h", cr.Host, "-p", port, "--user", cr.Username}, nil, nil
	case mayfly.KindSSH:
		var opts []string
		// `ssh -F $MAYFLY_SSH_CONFIG mayfly` reaches the lease's host;
		// any other host name gets the identity and pinned keys too.
		conf := "Host mayfly\n  HostName " + cr.Host + "\n  Port " + port + "\n\nHost *\n  User " + cr.Username + "\n"
		if cr.PrivateKey != "" {
			k, err := write("id_mayfly", cr.PrivateKey)
			if err != nil {
				return nil, nil, nil, err
			}
			c, err := write("id_mayfly-cert.pub", cr.Certificate)
			if err != nil {
				return nil, nil, nil, err
			}
			env = append(env, "MAYFLY_SSH_KEY="+k, "MAYFLY_SSH_CERT="+c)
			opts = append(opts, "-i", k, "-o", "CertificateFile="+c, "-o", "IdentitiesOnly=yes")
			conf += "  IdentityFile " + k + "\n  CertificateFile " + c + "\n  IdentitiesOnly yes\n"
		}
		if cr.HostKey != "" {
			// Pin the server's key (the SSH gateway's) for this session.
			name := cr.Host
			if cr.Port != 22 {
				name = "[" + cr.Host + "]:" + port
			}
			kh, err := write("known_hosts", name+" "+cr.HostKey+"\n")
			if err != nil {
				return nil, nil, nil, err
			}
			env = append(env, "MAYFLY_SSH_KNOWN_HOSTS="+kh)
			opts = append(opts, "-o", "UserKnownHostsFile="+kh, "-o", "StrictHostKeyChecking=yes")
			conf += "  UserKnownHostsFile " + kh + "\n  StrictHostKeyChecking yes\n"
		}
		cf, err := write("ssh_config", conf)
		if err != nil {
			return nil, nil, nil, err
		}
		env = append(env, "MAYFLY_SSH_CONFIG="+cf)
		args := append([]string{"ssh", "-p", port}, opts...)
		return env, append(args, cr.Username+"@"+cr.Host), opts, nil
	}
	env = append(env, "MAYFLY_PASSWORD="+cr.Password)
	return env, nil, nil, nil
}
