package ssh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
)

// ViaGateway is the value of Grant.Via for grants reached only through
// Mayfly's SSH gateway.
const ViaGateway = mayfly.ViaGateway

// gatewayCertTTL bounds the certificate the gateway logs in to a host
// with: it is needed only for the login itself.
const gatewayCertTTL = 2 * time.Minute

// GatewayPrincipal is the only principal of a user certificate issued for a
// grant reached through the gateway. The colon makes it a name no local
// user can have (it separates the fields of /etc/passwd), so sshd on the
// host refuses the certificate: it is good only at the gateway.
func GatewayPrincipal(account string) string { return "mayfly-gateway:" + account }

// Route is where the gateway takes a lease's sessions: the host, its pinned
// key, the user to log in as and what the grant permits.
type Route struct {
	Target  string
	Address string
	HostKey gossh.PublicKey
	// Login is the user on the host, which the user also types at the
	// gateway.
	Login string
	// Extensions are the grant's certificate extensions (permit-pty,
	// permit-agent-forwarding, permit-port-forwarding, ...).
	Extensions map[string]string
	// ForceCommand is the grant's force-command, enforced by the host
	// through the gateway's certificate.
	ForceCommand string
	// SourceAddress is the grant's source-address list, checked against
	// the user's address at the gateway.
	SourceAddress string
}

// Allows reports whether the grant carries extension ext.
func (r Route) Allows(ext string) bool { _, ok := r.Extensions[ext]; return ok }

// SetGateway makes Provision hand out the gateway's address and host key
// (authorized_keys format) for grants via the gateway.
func (c *Connector) SetGateway(host string, port int, hostKey string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gwHost, c.gwPort, c.gwKey = host, port, hostKey
}

func (c *Connector) gateway() (string, int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gwHost, c.gwPort, c.gwKey
}

// Route returns where the gateway takes sessions of the lease whose
// account is username under grant g.
func (c *Connector) Route(account string, g mayfly.Grant) (Route, error) {
	if g.Via != ViaGateway {
		return Route{}, mayfly.Errorf(mayfly.EFORBIDDEN, "grant %q is not reached through the gateway", g.Name)
	}
	spec, err := parseGrant(g)
	if err != nil {
		return Route{}, err
	}
	if c.hostKey == nil {
		return Route{}, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: grants via the gateway need host_key", c.target.Name)
	}
	login := account
	if !spec.hostUser {
		login = spec.principals[0]
	}
	return Route{
		Target: c.target.Name, Address: c.target.Address, HostKey: c.hostKey, Login: login,
		Extensions: spec.extensions, ForceCommand: spec.critical["force-command"], SourceAddress: spec.critical["source-address"],
	}, nil
}

// GatewaySigner returns a fresh key, never written anywhere, with a
// certificate valid for a couple of minutes that logs in to the host as
// r.Login for the lease. Its key ID is the lease ID, so revoking the lease
// revokes it too.
func (c *Connector) GatewaySigner(leaseID string, r Route) (gossh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	now := c.now()
	crit := map[string]string{}
	if r.ForceCommand != "" {
		crit["force-command"] = r.ForceCommand
	}
	cert, err := c.ca.Sign(CertRequest{
		Key: signer.PublicKey(), KeyID: leaseID, Principals: []string{r.Login},
		ValidAfter: now.Add(-backdate), ValidBefore: now.Add(gatewayCertTTL),
		CriticalOptions: crit, Extensions: r.Extensions,
	})
	if err != nil {
		return nil, err
	}
	return gossh.NewCertSigner(cert, signer)
}

// IsAuthority reports whether k is one of the CA's trusted keys.
func (ca *CA) IsAuthority(k gossh.PublicKey) bool {
	line := authorizedLine(k)
	return slices.ContainsFunc(ca.PublicKeys(), func(p string) bool { return keyField(p) == line })
}

// CertRevoked reports whether the certificate is on the revocation list:
// by serial, by key ID or by key.
func (c *Connector) CertRevoked(cert *gossh.Certificate) (bool, error) {
	now := c.now()
	revoked := false
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.reg.locked(context.Background(), func() error {
		if until, ok := c.reg.keyIDs[cert.KeyId]; ok && until.After(now) {
			revoked = true
			return nil
		}
		if rec := c.reg.certs[cert.Serial]; rec != nil && rec.Revoked {
			revoked = true
			return nil
		}
		key := cert.Key.Marshal()
		for _, rec := range c.reg.certs {
			if rec.Revoked && len(rec.Key) > 0 && string(rec.Key) == string(key) {
				revoked = true
				return nil
			}
		}
		return nil
	})
	return revoked, err
}

func validVia(g mayfly.Grant) error {
	switch g.Via {
	case "", "direct", ViaGateway:
		return nil
	}
	return mayfly.Errorf(mayfly.EINVALID, "grant %q: via %q: want direct or gateway", g.Name, strings.TrimSpace(g.Via))
}
