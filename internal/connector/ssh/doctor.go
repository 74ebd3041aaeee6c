package ssh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"slices"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
)

// Diagnose checks that the host answers with the pinned key and that it
// trusts Mayfly's CA: it logs in once with a two-minute certificate for
// the first certificate grant's principal whose only possible command is
// `true` (force-command), as a user would with a lease.
func (c *Connector) Diagnose(ctx context.Context, t mayfly.Target) []mayfly.Finding {
	f := func(check, status, detail, fix string) mayfly.Finding {
		return mayfly.Finding{Target: t.Name, Check: check, Status: status, Detail: detail, Fix: fix}
	}
	var out []mayfly.Finding
	if err := c.Check(ctx); err != nil {
		return []mayfly.Finding{f("connect", mayfly.FindingFail, mayfly.ErrorMessageOrText(err), "check the target's address and host_key, and that sshd runs")}
	}
	out = append(out, f("connect", mayfly.FindingOK, "the host answers at "+t.Address, ""))
	if c.hostKey == nil {
		out = append(out, f("host key", mayfly.FindingWarn, "host_key is not set: users' ssh clients must trust the host on first use, and `mayfly connect` cannot pin it",
			"host_key: the output of `ssh-keyscan -t ed25519 HOST | cut -d' ' -f2-`"))
	}
	principal := ""
	for _, name := range sortedGrantNames(t) {
		spec, err := parseGrant(t.Grants[name])
		if err == nil && !spec.hostUser && len(spec.principals) > 0 {
			principal = spec.principals[0]
			break
		}
	}
	if principal == "" {
		return out
	}
	if c.ca == nil {
		return append(out, f("trusts the CA", mayfly.FindingWarn, "not checked: there is no SSH CA yet; the server makes it at its first start",
			"once the server runs, put the keys `mayfly ssh ca` prints in sshd's TrustedUserCAKeys and run `mayfly doctor` again"))
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return append(out, f("trusts the CA", mayfly.FindingFail, err.Error(), ""))
	}
	signer, _ := gossh.NewSignerFromKey(priv)
	now := time.Now()
	cert, err := c.ca.SignProbe(CertRequest{Key: signer.PublicKey(), KeyID: "mayfly-doctor", Principals: []string{principal},
		ValidAfter: now.Add(-backdate), ValidBefore: now.Add(2 * time.Minute), CriticalOptions: map[string]string{"force-command": "true"}})
	if err != nil {
		return append(out, f("trusts the CA", mayfly.FindingFail, "sign a probe certificate: "+err.Error(), ""))
	}
	cs, err := gossh.NewCertSigner(cert, signer)
	if err != nil {
		return append(out, f("trusts the CA", mayfly.FindingFail, err.Error(), ""))
	}
	hostKey := gossh.InsecureIgnoreHostKey() // a probe whose only command is `true`
	if c.hostKey != nil {
		hostKey = gossh.FixedHostKey(c.hostKey)
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", t.Address)
	if err == nil {
		var cc gossh.Conn
		var chans <-chan gossh.NewChannel
		var reqs <-chan *gossh.Request
		cc, chans, reqs, err = gossh.NewClientConn(conn, t.Address, &gossh.ClientConfig{User: principal, Auth: []gossh.AuthMethod{gossh.PublicKeys(cs)}, HostKeyCallback: hostKey, Timeout: 5 * time.Second})
		if err == nil {
			client := gossh.NewClient(cc, chans, reqs)
			var s *gossh.Session
			if s, err = client.NewSession(); err == nil {
				err = s.Run("true")
				s.Close()
			}
			client.Close()
		} else {
			conn.Close()
		}
	}
	var ee *gossh.ExitError
	switch {
	case err == nil || errors.As(err, &ee):
		out = append(out, f("trusts the CA", mayfly.FindingOK, "a certificate for "+principal+" logs in", ""))
	case strings.Contains(err.Error(), "unable to authenticate"):
		out = append(out, f("trusts the CA", mayfly.FindingFail, "the host refused a certificate of Mayfly's CA for "+principal+": no lease of this target can log in",
			"put the keys `mayfly ssh ca` prints in sshd's TrustedUserCAKeys, make sure its RevokedKeys file exists (`mayfly ssh revoked-keys`), and let "+principal+" log in (a user of that name, or AuthorizedPrincipalsFile)"))
	default:
		out = append(out, f("trusts the CA", mayfly.FindingFail, "probe login as "+principal+": "+err.Error(), ""))
	}
	return out
}

// sortedGrantNames returns t's grant names in order.
func sortedGrantNames(t mayfly.Target) []string {
	names := make([]string, 0, len(t.Grants))
	for n := range t.Grants {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
