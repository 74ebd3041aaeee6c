package broker

// ChangedElsewhere wakes what waits for a committed change — live audit
// streams, the audit sinks and notifications — after another replica
// sharing the store committed one.
func (b *Broker) ChangedElsewhere() { b.committed() }
