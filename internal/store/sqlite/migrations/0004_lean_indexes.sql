-- Fewer indexes to update when a lease is issued (each one is a page
-- written per commit):
-- * leases by request and by target: nothing looks leases up by request
--   (the request holds its lease id), and the per-target lookups are of
--   live leases, which the (state, due_at) index finds;
-- * requests by state: replaced by an index of the open requests only
--   (pending, or approved and not yet activated), the ones the lapser and
--   offboarding look for. A request approved and activated at once, the
--   common case, never enters it.
DROP INDEX leases_request;
DROP INDEX leases_target;
DROP INDEX requests_state;
CREATE INDEX requests_open ON requests (created_at, id)
	WHERE state = 'pending' OR (state = 'approved' AND lease_id = '');
