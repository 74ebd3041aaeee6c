package broker

import "github.com/mayflyhq/mayfly/internal/policy"

// Catalog lists the grants c may ask for under the policies in force, with
// each covering policy's terms. It shows c only what applies to c.
func (b *Broker) Catalog(c Caller) []policy.Offer {
	return b.cfg.Load().Policies.Catalog(c.User, c.Groups)
}
