package broker

// ChangedElsewhere wakes what waits for a committed change — live audit
// streams, the audit sinks and notifications — after another replica
// sharing the store committed one.
func (b *Broker) ChangedElsewhere() { b.committed() }

// Watching records that a live view of the broker's changes (see
// Changed) is open until release is called, so that other replicas'
// changes reach it as they commit (Hooks.Watching).
func (b *Broker) Watching() (release func()) {
	if b.hooks.Watching == nil {
		return func() {}
	}
	return b.hooks.Watching()
}
