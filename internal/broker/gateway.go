package broker

import (
	"time"

	"github.com/mayflyhq/mayfly"
)

// GatewayIssuer issues the credentials of grants reached only through a
// gateway (via: gateway). At activation the broker hands it the target
// account's credential, which the gateway keeps in memory, and returns to
// the user what Issue returns instead.
type GatewayIssuer interface {
	// Issue returns the credential the user receives for lease l (the
	// gateway's address and a secret valid only there, for this lease),
	// and the verifier of that secret, which the activation stores under
	// GatewayVerifierKey(l.ID) in its transaction. target is the account's
	// own credential; it never leaves the broker process.
	Issue(l *mayfly.Lease, target mayfly.Credential) (user mayfly.Credential, verifier string, err error)
}

// GatewayVerifierKey is the setting holding the verifier of the gateway
// secret issued for lease id.
func GatewayVerifierKey(id string) string { return "gateway.verifier." + id }

// SetGateway makes g issue the credentials of grants with via: gateway.
// Without one, activating such a grant is refused.
func (b *Broker) SetGateway(g GatewayIssuer) { b.gateway.Store(&g) }

func (b *Broker) gatewayIssuer() GatewayIssuer {
	if p := b.gateway.Load(); p != nil {
		return *p
	}
	return nil
}

// viaGateway reports whether lease l's grant is reached through the
// PostgreSQL gateway, whose GatewayIssuer issues its credential. (SSH
// grants via the SSH gateway get their certificates from the connector.)
func (b *Broker) viaGateway(l *mayfly.Lease) bool {
	t, ok := b.cfg.Load().Targets[l.Target]
	return ok && t.Kind == mayfly.KindPostgres && t.Grants[l.Grant].Via == mayfly.ViaGateway
}

// Connector returns the connector of target name (nil when none).
func (b *Broker) Connector(name string) mayfly.Connector { return b.connectors[name] }

// TouchActivity records that lease id's account was in use at at, as a
// gateway sees it: the idle check counts a lease reached through a gateway
// idle from the last activity the gateway reported, not from the target's
// own sessions (the gateway keeps one open while its client is connected).
// It is cheap (memory only); RunActivityFlusher writes it to the store.
func (b *Broker) TouchActivity(id string, at time.Time) {
	b.idle.touch(id, at)
	b.idle.mark(id, at)
}
