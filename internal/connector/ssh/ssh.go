// Package ssh is Mayfly's SSH connector: a user certificate authority that
// signs short-lived certificates for a grant's principals, a revocation list
// (an OpenSSH KRL) that sshd consults through RevokedKeys, and, optionally,
// ephemeral local users created on the host over SSH and removed with their
// processes when the lease ends.
package ssh

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/cluster"
	"github.com/mayflyhq/mayfly/internal/connector/mark"
)

// Limits on what grants and requests may carry.
const (
	maxNameLen         = 32 // Linux user and group names
	maxPrincipals      = 32
	maxForceCommandLen = 1024
	maxSourceAddresses = 32
	maxLeaseIDLen      = 128
	// keyIDHold is how long a lease ID stays on the revocation list when
	// neither the request nor the records say when its certificates expire.
	keyIDHold = 7 * 24 * time.Hour
	// backdate is how far before now a certificate becomes valid, to absorb
	// clock skew between the broker and the hosts.
	backdate    = time.Minute
	dialTimeout = 5 * time.Second
)

var (
	// nameRe is a conservative user or group name: what useradd accepts
	// everywhere and no shell, sshd pattern or path treats specially.
	nameRe    = regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)
	prefixRe  = regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)
	leaseIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)
	targetRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
)

// extensionNames are the certificate extensions sshd knows.
var extensionNames = []string{
	"no-touch-required", "permit-X11-forwarding", "permit-agent-forwarding",
	"permit-port-forwarding", "permit-pty", "permit-user-rc", "verify-required",
}

// Connector issues SSH certificates for one target and, for grants with
// HostUser, manages ephemeral users on its host. It is safe for concurrent
// use.
type Connector struct {
	target  mayfly.Target
	ca      *CA
	host    string
	port    int
	prefix  string
	krlFile string
	admin   *hostAdmin      // nil without AdminUser
	hostKey gossh.PublicKey // pinned host_key, nil without
	now     func() time.Time

	mu         sync.Mutex // guards reg and the KRL cache
	reg        *registry
	krlGen     uint64
	krlVersion uint64
	krlData    []byte
	// gwHost and gwPort are the SSH gateway's address (SetGateway).
	gwHost string
	gwPort int
	gwKey  string
}

// New returns the connector for target t, whose certificates ca signs. The
// connector keeps its records of issued and revoked certificates in
// stateDir (which several targets may share) and writes the revocation list
// to t.KRLFile when set. getenv resolves t.AdminPasswordEnv (nil means the
// process environment).
func New(t mayfly.Target, ca *CA, stateDir string, getenv func(string) string) (*Connector, error) {
	return build(t, ca, stateDir, nil, getenv, false)
}

// NewShared is New for replicas that share the store st: the records of
// issued and revoked certificates are a journal in st, so every replica
// builds the same revocation list, whatever its state directory. A journal
// file of the target found in stateDir (from before the store kept it) is
// copied into st when st has none yet.
func NewShared(t mayfly.Target, ca *CA, stateDir string, st mayfly.Store, getenv func(string) string) (*Connector, error) {
	if st == nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: a store is required", t.Name)
	}
	return build(t, ca, stateDir, st, getenv, false)
}

// Inspect returns a connector of target t for Diagnose only, built without
// changing anything, as `mayfly doctor` must: it opens no records of
// certificates, writes no revocation list, and records no host key seen on
// first contact (in stateDir, or in st, the store replicas share, when it
// is not nil). ca may be nil when there is no CA yet; Diagnose says so.
func Inspect(t mayfly.Target, ca *CA, stateDir string, st mayfly.Store, getenv func(string) string) (*Connector, error) {
	return build(t, ca, stateDir, st, getenv, true)
}

func build(t mayfly.Target, ca *CA, stateDir string, st mayfly.Store, getenv func(string) string, inspect bool) (*Connector, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if ca == nil && !inspect {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: a certificate authority is required", t.Name)
	}
	if err := validateTarget(t); err != nil {
		return nil, err
	}
	if stateDir == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: a state directory is required", t.Name)
	}
	host, port, err := splitAddress(t.Address)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: address: %v", t.Name, err)
	}
	c := &Connector{target: t, ca: ca, host: host, port: port, prefix: t.Prefix, krlFile: t.KRLFile, now: time.Now}
	if c.prefix == "" {
		c.prefix = mayfly.DefaultPrefix
	}
	if t.HostKey != "" {
		if c.hostKey, _, _, _, err = gossh.ParseAuthorizedKey([]byte(t.HostKey)); err != nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "ssh target %q: host_key is not a public key in authorized_keys format", t.Name)
		}
	}
	if t.AdminUser != "" {
		pass := t.AdminPassword
		if t.AdminPasswordEnv != "" {
			pass = getenv(t.AdminPasswordEnv)
		}
		key, err := mark.FromTarget(t, getenv)
		if err != nil {
			return nil, err
		}
		c.admin, err = newHostAdmin(t, key, pass, filepath.Join(stateDir, "ssh-"+t.Name+".host_key"))
		if err != nil {
			return nil, err
		}
		c.admin.known, c.admin.inspect = st, inspect
	}
	if inspect {
		return c, nil
	}
	name := "ssh-" + t.Name
	if st == nil {
		c.reg, err = openRegistry(stateDir, name)
	} else {
		var legacy *fileJournal
		if _, serr := os.Stat(filepath.Join(stateDir, name+".journal")); serr == nil {
			legacy, err = openFileJournal(stateDir, name)
		}
		c.reg = newRegistry(newStoreJournal(st, name, legacy))
	}
	if err != nil {
		return nil, fmt.Errorf("ssh target %q: state: %w", t.Name, err)
	}
	// sshd refuses every key when its RevokedKeys file is missing, so the
	// list exists from the start.
	c.mu.Lock()
	err = c.reg.locked(context.Background(), func() error { return c.writeKRLLocked() })
	c.mu.Unlock()
	if err != nil {
		c.reg.close()
		return nil, fmt.Errorf("ssh target %q: revocation list: %w", t.Name, err)
	}
	return c, nil
}

func validateTarget(t mayfly.Target) error {
	if t.Kind != mayfly.KindSSH {
		return mayfly.Errorf(mayfly.EINVALID, "target %q: kind %q is not ssh", t.Name, t.Kind)
	}
	if !targetRe.MatchString(t.Name) {
		return mayfly.Errorf(mayfly.EINVALID, "ssh target %q: name must be letters, digits, '.', '_' or '-' (at most 64)", t.Name)
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"dsn", t.DSN != ""}, {"dsn_env", t.DSNEnv != ""}, {"scram_iterations", t.SCRAMIterations != 0},
		{"public_host", t.PublicHost != ""}, {"public_port", t.PublicPort != 0}, {"max_conns", t.MaxConns != 0},
		{"connection_limit", t.ConnectionLimit != 0}, {"timeout", t.Timeout != 0},
		{"commands", len(t.Commands.Provision)+len(t.Commands.Revoke)+len(t.Commands.Accounts)+len(t.Commands.Check) > 0},
	} {
		if f.set {
			return mayfly.Errorf(mayfly.EINVALID, "ssh target %q: %s does not apply to ssh targets", t.Name, f.name)
		}
	}
	if t.Prefix != "" && (!prefixRe.MatchString(t.Prefix) || len(t.Prefix) > 16) {
		return mayfly.Errorf(mayfly.EINVALID, "ssh target %q: prefix must match %s and be at most 16 bytes", t.Name, prefixRe)
	}
	if (t.AdminUser == "") != (t.AdminKeyFile == "") {
		return mayfly.Errorf(mayfly.EINVALID, "ssh target %q: admin_user and admin_key_file go together", t.Name)
	}
	viaGateway := false
	for _, g := range t.Grants {
		viaGateway = viaGateway || g.Via == ViaGateway
	}
	if t.AdminUser == "" && (t.AdminPassword != "" || t.AdminPasswordEnv != "") {
		return mayfly.Errorf(mayfly.EINVALID, "ssh target %q: admin_password needs admin_user and admin_key_file", t.Name)
	}
	if viaGateway && t.HostKey == "" {
		return mayfly.Errorf(mayfly.EINVALID, "ssh target %q: grants via the gateway need host_key (the host's public key, which the gateway pins)", t.Name)
	}
	if t.AdminUser != "" && !validName(t.AdminUser) {
		return mayfly.Errorf(mayfly.EINVALID, "ssh target %q: admin_user %q is not a valid user name", t.Name, t.AdminUser)
	}
	if t.KRLFile != "" && !filepath.IsAbs(t.KRLFile) {
		return mayfly.Errorf(mayfly.EINVALID, "ssh target %q: krl_file must be an absolute path", t.Name)
	}
	for name, g := range t.Grants {
		g.Name = name
		if _, err := parseGrant(g); err != nil {
			return err
		}
		if g.HostUser && t.AdminUser == "" {
			return mayfly.Errorf(mayfly.EINVALID, "ssh target %q: grant %q asks for host users but the target has no admin_user", t.Name, name)
		}
	}
	return nil
}

func splitAddress(addr string) (string, int, error) {
	if addr == "" {
		return "", 0, errors.New("host:port is required")
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 || host == "" {
		return "", 0, fmt.Errorf("%q is not host:port", addr)
	}
	return host, port, nil
}

func validName(s string) bool { return len(s) <= maxNameLen && nameRe.MatchString(s) }

// grantSpec is a validated grant in certificate terms.
type grantSpec struct {
	principals []string
	critical   map[string]string
	extensions map[string]string
	hostUser   bool
	groups     []string
}

func parseGrant(g mayfly.Grant) (grantSpec, error) {
	bad := func(format string, args ...any) (grantSpec, error) {
		return grantSpec{}, mayfly.Errorf(mayfly.EINVALID, "grant %q: %s", g.Name, fmt.Sprintf(format, args...))
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"roles", len(g.Roles) > 0}, {"statements", len(g.Statements) > 0}, {"database", g.Database != ""},
		{"acl", g.ACL != ""}, {"params", len(g.Params) > 0},
	} {
		if f.set {
			return bad("%s does not apply to ssh targets", f.name)
		}
	}
	if err := validVia(g); err != nil {
		return grantSpec{}, err
	}
	var s grantSpec
	s.hostUser = g.HostUser
	if len(g.Principals) == 0 && !g.HostUser {
		return bad("principals are required unless host_user is set")
	}
	if len(g.Principals) > maxPrincipals {
		return bad("at most %d principals", maxPrincipals)
	}
	for _, p := range g.Principals {
		if !validName(p) {
			return bad("principal %q must match %s and be at most %d bytes", p, nameRe, maxNameLen)
		}
		if !slices.Contains(s.principals, p) {
			s.principals = append(s.principals, p)
		}
	}
	if len(g.HostGroups) > 0 && !g.HostUser {
		return bad("host_groups need host_user")
	}
	for _, grp := range g.HostGroups {
		if !validName(grp) {
			return bad("host group %q must match %s and be at most %d bytes", grp, nameRe, maxNameLen)
		}
		if !slices.Contains(s.groups, grp) {
			s.groups = append(s.groups, grp)
		}
	}
	s.extensions = map[string]string{}
	exts := g.Extensions
	if len(exts) == 0 {
		exts = []string{"permit-pty"}
	}
	for _, e := range exts {
		if !slices.Contains(extensionNames, e) {
			return bad("unknown extension %q (want one of %s)", e, strings.Join(extensionNames, ", "))
		}
		s.extensions[e] = ""
	}
	s.critical = map[string]string{}
	if g.ForceCommand != "" {
		if strings.ContainsAny(g.ForceCommand, "\x00\r\n") || len(g.ForceCommand) > maxForceCommandLen {
			return bad("force_command must be one line of at most %d bytes", maxForceCommandLen)
		}
		s.critical["force-command"] = g.ForceCommand
	}
	if g.SourceAddress != "" {
		parts := strings.Split(g.SourceAddress, ",")
		if len(parts) > maxSourceAddresses {
			return bad("at most %d source addresses", maxSourceAddresses)
		}
		for _, p := range parts {
			if _, err := netip.ParsePrefix(p); err == nil {
				continue
			}
			if _, err := netip.ParseAddr(p); err == nil && !strings.Contains(p, "%") {
				continue
			}
			return bad("source_address %q is not a comma-separated list of addresses and CIDR blocks", g.SourceAddress)
		}
		s.critical["source-address"] = g.SourceAddress
	}
	return s, nil
}

// Provision signs a certificate for the lease: for req.PublicKey when set,
// otherwise for a fresh ed25519 key returned in Credential.PrivateKey. With a
// HostUser grant it first creates (or refreshes) the local user req.Username
// on the host, expiring the day after the lease.
func (c *Connector) Provision(ctx context.Context, req mayfly.ProvisionRequest) (mayfly.ProvisionResponse, error) {
	if !validName(req.Username) || !strings.HasPrefix(req.Username, c.prefix) {
		return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "account name %q must start with %q, match %s and be at most %d bytes", req.Username, c.prefix, nameRe, maxNameLen)
	}
	if err := validLeaseID(req.LeaseID); err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	g, err := parseGrant(req.Grant)
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	if g.hostUser && c.admin == nil {
		return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "grant %q asks for a host user but target %q has no admin_user", req.Grant.Name, c.target.Name)
	}
	now := c.now()
	if !req.ExpiresAt.After(now) {
		return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "expiry %s is not in the future", req.ExpiresAt.Format(time.RFC3339))
	}

	var cred mayfly.Credential
	var pub gossh.PublicKey
	generated := req.PublicKey == ""
	if generated {
		p, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return mayfly.ProvisionResponse{}, fmt.Errorf("generate key: %w", err)
		}
		block, err := gossh.MarshalPrivateKey(priv, req.LeaseID)
		if err != nil {
			return mayfly.ProvisionResponse{}, fmt.Errorf("encode key: %w", err)
		}
		cred.PrivateKey = string(pem.EncodeToMemory(block))
		if pub, err = gossh.NewPublicKey(p); err != nil {
			return mayfly.ProvisionResponse{}, fmt.Errorf("encode key: %w", err)
		}
	} else if pub, err = parseUserKey(req.PublicKey); err != nil {
		return mayfly.ProvisionResponse{}, err
	}

	principals := g.principals
	if g.hostUser {
		principals = append([]string{req.Username}, slices.DeleteFunc(slices.Clone(principals), func(p string) bool { return p == req.Username })...)
		if err := c.admin.createUser(ctx, req.Username, req.ExpiresAt, g.groups); err != nil {
			return mayfly.ProvisionResponse{}, err
		}
	}
	login := principals[0]
	host, port, hostKey := c.host, c.port, ""
	if c.hostKey != nil {
		// The client pins the host's key: no prompt, no trust on first use.
		hostKey = authorizedLine(c.hostKey)
	}
	if req.Grant.Via == ViaGateway {
		// The certificate is good only at the gateway, which logs in to
		// the host with a certificate of its own.
		principals = []string{GatewayPrincipal(req.Username)}
		host, port, hostKey = c.gateway()
		if host == "" {
			return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EUNAVAILABLE, "grant %q is reached through the SSH gateway, which is not configured (gateway.ssh.listen)", req.Grant.Name)
		}
	}
	cert, err := c.ca.Sign(CertRequest{
		Key: pub, KeyID: req.LeaseID, Principals: principals,
		ValidAfter: now.Add(-backdate), ValidBefore: req.ExpiresAt,
		CriticalOptions: g.critical, Extensions: g.extensions,
	})
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	rec := &certRecord{
		Serial: cert.Serial, KeyID: req.LeaseID, Username: req.Username, Principals: principals,
		HostUser: g.hostUser, CA: cert.SignatureKey.Marshal(), ValidBefore: time.Unix(int64(cert.ValidBefore), 0).UTC(),
	}
	if generated {
		rec.Key = pub.Marshal()
	}
	c.mu.Lock()
	err = c.reg.locked(ctx, func() error {
		// Provisioning the same lease again replaces its credential: the
		// certificates issued before are revoked by serial (not by key ID,
		// which the new certificate shares).
		var old []uint64
		for _, o := range c.reg.certs {
			if o.KeyID == req.LeaseID && !o.Revoked && o.ValidBefore.After(now) {
				old = append(old, o.Serial)
			}
		}
		events := []event{{Issue: rec, At: now}}
		if len(old) > 0 {
			events = append(events, event{Revoke: &revocation{Serials: old}, At: now})
		}
		// Issuing needs no sync: a certificate lost from the records is
		// still revoked by its key ID, the lease ID.
		if err := c.reg.append(events, len(old) > 0, now); err != nil {
			return err
		}
		if len(old) > 0 {
			return c.writeKRLLocked()
		}
		return nil
	})
	c.mu.Unlock()
	if err != nil {
		return mayfly.ProvisionResponse{}, fmt.Errorf("record certificate: %w", err)
	}

	cred.Username = login
	cred.Host, cred.Port, cred.HostKey = host, port, hostKey
	cred.Certificate = authorizedLine(cert)
	return mayfly.ProvisionResponse{Credential: cred}, nil
}

func validLeaseID(id string) error {
	if len(id) > maxLeaseIDLen || !leaseIDRe.MatchString(id) {
		return mayfly.Errorf(mayfly.EINVALID, "lease id %q must be letters, digits, '_', '.', ':' or '-' (at most %d)", id, maxLeaseIDLen)
	}
	return nil
}

// parseUserKey parses a public key in authorized_keys format and refuses
// certificates and weak keys.
func parseUserKey(s string) (gossh.PublicKey, error) {
	pub, _, _, rest, err := gossh.ParseAuthorizedKey([]byte(s))
	if err != nil || len(strings.TrimSpace(string(rest))) > 0 {
		return nil, mayfly.Errorf(mayfly.EINVALID, "public key must be one key in authorized_keys format")
	}
	switch pub.Type() {
	case gossh.KeyAlgoED25519, gossh.KeyAlgoSKED25519, gossh.KeyAlgoECDSA256, gossh.KeyAlgoECDSA384,
		gossh.KeyAlgoECDSA521, gossh.KeyAlgoSKECDSA256:
	case gossh.KeyAlgoRSA:
		ck, ok := pub.(gossh.CryptoPublicKey)
		if !ok {
			return nil, mayfly.Errorf(mayfly.EINVALID, "public key: unreadable RSA key")
		}
		if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); !ok || rk.N.BitLen() < 2048 {
			return nil, mayfly.Errorf(mayfly.EINVALID, "public key: RSA keys must have at least 2048 bits")
		}
	default:
		return nil, mayfly.Errorf(mayfly.EINVALID, "public key type %q is not accepted (use ed25519, ecdsa or RSA of 2048 bits or more)", pub.Type())
	}
	return pub, nil
}

// Revoke puts the lease's certificates on the revocation list: by serial
// and, for keys Mayfly generated, by public key, plus the lease ID as key
// ID until the lease would have expired. It syncs the records and rewrites
// the revocation list before returning. For a host user it then locks the
// account, kills its processes, deletes it with its home directory and
// checks that it is gone. Revoking again, or revoking what was never
// issued, succeeds.
func (c *Connector) Revoke(ctx context.Context, req mayfly.RevokeRequest) error {
	if req.LeaseID == "" && req.Username == "" {
		return mayfly.Errorf(mayfly.EINVALID, "revoke needs a lease id or an account name")
	}
	if req.LeaseID != "" {
		if err := validLeaseID(req.LeaseID); err != nil {
			return err
		}
	}
	if req.Username != "" && !validName(req.Username) {
		return mayfly.Errorf(mayfly.EINVALID, "account name %q must match %s and be at most %d bytes", req.Username, nameRe, maxNameLen)
	}
	now := c.now()
	var hostUsers []string
	c.mu.Lock()
	err := c.reg.locked(ctx, func() error {
		var serials []uint64
		until := req.ExpiresAt
		matched := false
		for _, rec := range c.reg.certs {
			if (req.LeaseID == "" || rec.KeyID != req.LeaseID) && (req.Username == "" || rec.Username != req.Username) {
				continue
			}
			matched = true
			if rec.HostUser && !slices.Contains(hostUsers, rec.Username) {
				hostUsers = append(hostUsers, rec.Username)
			}
			if rec.ValidBefore.After(until) {
				until = rec.ValidBefore
			}
			if !rec.Revoked && rec.ValidBefore.After(now) {
				serials = append(serials, rec.Serial)
			}
		}
		// Without a record the lease may still have a host user (records
		// from before a state loss): removing an absent user is harmless.
		if !matched && c.admin != nil && strings.HasPrefix(req.Username, c.prefix) {
			hostUsers = append(hostUsers, req.Username)
		}
		if until.IsZero() {
			until = now.Add(keyIDHold)
		}
		rv := &revocation{Serials: serials}
		if req.LeaseID != "" && until.After(now) && until.After(c.reg.keyIDs[req.LeaseID]) {
			rv.KeyID, rv.Until = req.LeaseID, until.UTC()
		}
		if len(rv.Serials) > 0 || rv.KeyID != "" {
			if err := c.reg.append([]event{{Revoke: rv, At: now}}, true, now); err != nil {
				return err
			}
		}
		// Rewritten every time, so a list lost after the records were
		// synced is restored by the retry.
		return c.writeKRLLocked()
	})
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("revoke lease %s: %w", req.LeaseID, err)
	}
	for _, u := range hostUsers {
		if err := c.admin.removeUser(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

// writeKRLLocked regenerates the revocation list and writes KRLFile. Call
// it with c.mu and the registry lock held.
func (c *Connector) writeKRLLocked() error {
	now := c.now()
	k := c.reg.krl(now)
	k.Version = max(uint64(max(now.Unix(), 0)), c.krlVersion+1)
	data := k.marshal()
	if c.krlFile != "" {
		if err := writeFileAtomic(c.krlFile, data, 0o644); err != nil {
			return err
		}
	}
	c.krlData, c.krlGen, c.krlVersion = data, c.reg.gen, k.Version
	return nil
}

// RevokedKeys returns the current revocation list, an OpenSSH KRL for
// sshd's RevokedKeys: the same bytes as KRLFile. It reflects revocations
// made through any connector sharing the target's records (the state
// directory, or the store of replicas).
func (c *Connector) RevokedKeys() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refreshKRLLocked(context.Background()); err != nil {
		return nil, err
	}
	return slices.Clone(c.krlData), nil
}

// refreshKRLLocked reads the records and regenerates the revocation list
// (and KRLFile) when they changed since it was last made. Call it with
// c.mu held.
func (c *Connector) refreshKRLLocked(ctx context.Context) error {
	if p, ok := c.reg.j.(peeker); ok && c.krlData != nil && c.krlGen == c.reg.gen {
		// Nothing written since the file was: no locking transaction.
		same, err := p.unchanged(ctx)
		if err != nil {
			return fmt.Errorf("revocation list: %w", err)
		}
		if same {
			return nil
		}
	}
	err := c.reg.locked(ctx, func() error {
		if c.krlData != nil && c.krlGen == c.reg.gen {
			return nil
		}
		return c.writeKRLLocked()
	})
	if err != nil {
		return fmt.Errorf("revocation list: %w", err)
	}
	return nil
}

// FollowRevocations keeps KRLFile current with the changes other replicas
// (or processes sharing the state directory) make to this target's
// records: every interval it reads them and rewrites the file when they
// changed, until ctx ends (see cluster.Follow). A change made through this
// connector rewrites the file at once. Without KRLFile it returns at once.
func (c *Connector) FollowRevocations(ctx context.Context, every time.Duration, onErr func(error)) {
	if c.krlFile == "" {
		return
	}
	cluster.Follow(ctx, every, func(ctx context.Context) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.refreshKRLLocked(ctx)
	}, onErr)
}

// Accounts lists the accounts under prefix. Host users (with an admin) are
// the local users under prefix, with Sessions counting their SSH
// connections and Marked set on those this installation created. Certificate-only leases appear as the account name the
// lease was provisioned with while one of its certificates is issued, not
// revoked and not expired; their sessions are unknown (0).
func (c *Connector) Accounts(ctx context.Context, req mayfly.AccountsRequest) ([]mayfly.Account, error) {
	if req.Prefix != "" && (!prefixRe.MatchString(req.Prefix) || len(req.Prefix) > maxNameLen) {
		return nil, mayfly.Errorf(mayfly.EINVALID, "prefix %q must match %s", req.Prefix, prefixRe)
	}
	now := c.now()
	byName := map[string]*mayfly.Account{}
	c.mu.Lock()
	err := c.reg.locked(ctx, func() error {
		for _, rec := range c.reg.certs {
			if rec.HostUser || rec.Revoked || !rec.ValidBefore.After(now) || !strings.HasPrefix(rec.Username, req.Prefix) {
				continue
			}
			a := byName[rec.Username]
			if a == nil {
				// Certificates come from this installation's own
				// registry: they are its own.
				a = &mayfly.Account{Name: rec.Username, CanLogin: true, Marked: true}
				byName[rec.Username] = a
			}
			for _, p := range rec.Principals {
				if priv := "principal:" + p; !slices.Contains(a.Privileges, priv) {
					a.Privileges = append(a.Privileges, priv)
				}
			}
		}
		return nil
	})
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	if c.admin != nil {
		users, err := c.admin.listUsers(ctx, req.Prefix)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			byName[u.Name] = &u
		}
	}
	out := make([]mayfly.Account, 0, len(byName))
	for _, a := range byName {
		slices.Sort(a.Privileges)
		out = append(out, *a)
	}
	slices.SortFunc(out, func(a, b mayfly.Account) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Check dials the host's SSH port and, with an admin, logs in and runs true.
func (c *Connector) Check(ctx context.Context) error {
	addr := net.JoinHostPort(c.host, strconv.Itoa(c.port))
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "ssh target %q: cannot reach %s: %v", c.target.Name, addr, err)
	}
	conn.Close()
	if c.admin != nil {
		return c.admin.check(ctx)
	}
	return nil
}

// Close releases the admin connection and the state files.
func (c *Connector) Close() error {
	var errs []error
	if c.admin != nil {
		errs = append(errs, c.admin.close())
	}
	c.mu.Lock()
	if c.reg != nil { // nil when built by Inspect
		errs = append(errs, c.reg.close())
	}
	c.mu.Unlock()
	return errors.Join(errs...)
}

// signerFromPEM parses a private key file's content, decrypting it with
// passphrase when it is encrypted.
func signerFromPEM(pemBytes []byte, passphrase string) (gossh.Signer, error) {
	var raw crypto.PrivateKey
	var err error
	if passphrase != "" {
		raw, err = gossh.ParseRawPrivateKeyWithPassphrase(pemBytes, []byte(passphrase))
	} else {
		raw, err = gossh.ParseRawPrivateKey(pemBytes)
	}
	if err != nil {
		return nil, err
	}
	return gossh.NewSignerFromKey(raw)
}
