package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayflyhq/mayfly"
)

// tx is a transaction; it lives for one call of Update or View.
type tx struct {
	ctx   context.Context
	q     querier
	write bool
	// begin holds the statements that begin the transaction until they
	// are sent with its first statement; begun is set then.
	begin []string
	begun bool
	// Writes waiting for the next statement (DeferNextWrite), and the
	// first of them that failed.
	deferNext   bool
	deferred    []deferredWrite
	deferFailed error

	// The head of the audit chain, once locked and read in this
	// transaction.
	head struct {
		ok   bool
		seq  int64
		hash string
	}
	// Audit events appended and not yet written (see AppendAudit).
	pending []pendingEvent
	// notifySeq is the sequence number of the newest audit event written
	// by this transaction (0 if none), notified on AuditChannel at commit.
	notifySeq int64

	// db is the handle the transaction runs on (nil in some tests).
	db *DB
}

// querier runs statements on the transaction's connection.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// pendingEvent is an audit event appended in this transaction, with its
// time and data already encoded.
type pendingEvent struct {
	e        *mayfly.AuditEvent
	at, data any
}

var _ mayfly.Tx = (*tx)(nil)

var errReadOnly = errors.New("postgres store: write in a read-only transaction")

func (t *tx) exec(q string, args ...any) (pgconn.CommandTag, error) {
	if !t.write {
		return pgconn.CommandTag{}, errReadOnly
	}
	if !t.hasPrefix() {
		return t.q.Exec(t.ctx, q, args...)
	}
	br, n := t.sendWithPrefix(q, args)
	defer br.Close()
	if err := t.prefixResults(br, n); err != nil {
		return pgconn.CommandTag{}, err
	}
	return br.Exec()
}

func (t *tx) query(q string, args ...any) (pgx.Rows, error) {
	if !t.hasPrefix() {
		return t.q.Query(t.ctx, q, args...)
	}
	br, n := t.sendWithPrefix(q, args)
	if err := t.prefixResults(br, n); err != nil {
		br.Close()
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// deferredWrite is a write sent with the transaction's next statement
// (see DeferNextWrite, and AppendSessionEvents, which defers its own
// writes); check judges its result.
type deferredWrite struct {
	q     string
	args  []any
	check func(pgconn.CommandTag, error) error
	// counted: check fails the write on its count of rows (a row missing
	// or taken), not only on an error of PostgreSQL's, so its result must
	// be read before the COMMIT is sent.
	counted bool
}

// DeferNextWrite makes the next creation of a request, or creation or
// update of a lease, in this transaction wait to be sent with its next
// statement, in that round trip, or at its end before the COMMIT (see
// commit); an error of the write is returned by that later call (and so
// by Update). See mayfly.WriteDeferrer.
func (t *tx) DeferNextWrite() { t.deferNext = t.write }

var _ mayfly.WriteDeferrer = (*tx)(nil)

// execMaybeDeferred runs q now, or defers it when DeferNextWrite was
// asked for; check judges its result either way.
func (t *tx) execMaybeDeferred(q string, args []any, check func(pgconn.CommandTag, error) error) error {
	if !t.write {
		return errReadOnly
	}
	if t.deferNext {
		t.deferNext = false
		t.deferred = append(t.deferred, deferredWrite{q: q, args: args, check: check, counted: true})
		return nil
	}
	return check(t.exec(q, args...))
}

// hasPrefix says statements wait to be sent before the next one: those
// that begin the transaction, or deferred writes.
func (t *tx) hasPrefix() bool { return len(t.begin) > 0 || len(t.deferred) > 0 }

// prefixN counts what sendWithPrefix queued before the caller's
// statements.
type prefixN struct {
	begin    int
	deferred []deferredWrite
	// mustCount: the counted writes were queued as mustCount makes them.
	mustCount bool
}

// queuePrefix queues the statements that begin the transaction (a
// transaction begins with its first statement, in its round trip) and the
// deferred writes.
func (t *tx) queuePrefix(b *pgx.Batch) prefixN {
	return t.queuePrefixAs(b, false)
}

// queuePrefixAs is queuePrefix, with the counted writes in the form that
// fails when they write nothing (mustCount) if asked.
func (t *tx) queuePrefixAs(b *pgx.Batch, counted bool) prefixN {
	n := prefixN{begin: len(t.begin), deferred: t.deferred, mustCount: counted}
	for _, s := range t.begin {
		b.Queue(s)
	}
	for _, d := range t.deferred {
		if counted && d.counted {
			b.Queue(mustCount(d.q), d.args...)
			continue
		}
		b.Queue(d.q, d.args...)
	}
	if len(t.begin) > 0 {
		t.begin = nil
		t.begun = true
	}
	t.deferred = nil
	return n
}

// sendWithPrefix sends the waiting statements and q in one round trip.
func (t *tx) sendWithPrefix(q string, args []any) (pgx.BatchResults, prefixN) {
	var b pgx.Batch
	n := t.queuePrefix(&b)
	b.Queue(q, args...)
	return t.q.SendBatch(t.ctx, &b), n
}

// sendPrefix sends the waiting statements alone and reads their results.
func (t *tx) sendPrefix() error {
	var b pgx.Batch
	n := t.queuePrefix(&b)
	br := t.q.SendBatch(t.ctx, &b)
	err := t.prefixResults(br, n)
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("postgres store: %w", cerr)
	}
	return err
}

// prefixResults reads the results of what queuePrefix queued.
func (t *tx) prefixResults(br pgx.BatchResults, n prefixN) error {
	for range n.begin {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("postgres store: begin: %w", err)
		}
	}
	for _, d := range n.deferred {
		tag, err := br.Exec()
		if n.mustCount && d.counted && noRow(err) {
			// Written as mustCount makes it: no row written. The checks
			// read only the count.
			tag, err = pgconn.NewCommandTag("UPDATE 0"), nil
		}
		if err := d.check(tag, err); err != nil {
			// Kept so the transaction cannot commit even if the caller
			// of the call that sent it takes its error for its own (a
			// lease not found for a user not found, say).
			if t.deferFailed == nil {
				t.deferFailed = err
			}
			return &deferredError{err}
		}
	}
	return nil
}

// deferredError is the failure of a deferred write, returned by the call
// that sent it.
type deferredError struct{ err error }

func (e *deferredError) Error() string { return e.err.Error() }
func (e *deferredError) Unwrap() error { return e.err }

// batchRows are the rows of the last statement of a batch; closing them
// closes the batch.
type batchRows struct {
	pgx.Rows
	br pgx.BatchResults
}

func (r *batchRows) Close() {
	r.Rows.Close()
	r.br.Close()
}

// queryRow scans the first row of q into dest and reports whether there
// was one.
func (t *tx) queryRow(q string, args []any, dest ...any) (bool, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	if !rows.Next() {
		rows.Close()
		return false, rows.Err()
	}
	if err := rows.Scan(dest...); err != nil {
		return false, err
	}
	rows.Close()
	return true, rows.Err()
}

// forUpdate is the locking clause of a read in a write transaction: the
// SQLite store has one writer, so what a write transaction reads stays as
// it read it until it commits; here the rows it reads by key are locked,
// so that read-modify-write sequences of replicas (two approvals of one
// request, say) apply one after the other instead of one overwriting the
// other.
func (t *tx) forUpdate() string {
	if t.write {
		return " FOR UPDATE"
	}
	return ""
}

// settingLockSpace is the first key of the advisory locks GetSetting takes
// on missing keys.
const settingLockSpace = 0x6d66_7374 // "mfst"

// Times are stored as Unix nanoseconds, NULL for the zero time, as in the
// SQLite store.
var (
	minTime = time.Unix(0, -1<<63)
	maxTime = time.Unix(0, 1<<63-1)
)

func timeArg(name string, t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return nil, mayfly.Errorf(mayfly.EINVALID, "%s %s is out of the supported range (years 1678 to 2262)", name, t.UTC().Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

func timeOf(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64).UTC()
}

// jsonArg encodes a list or map, NULL when it is nil.
func jsonArg[T any](v T, isNil bool) (any, error) {
	if isNil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

func jsonOf[T any](s sql.NullString, v *T) error {
	if !s.Valid {
		return nil
	}
	return json.Unmarshal([]byte(s.String), v)
}

// where accumulates the conditions and arguments of a query, numbering
// the placeholders.
type where struct {
	conds []string
	args  []any
}

// arg adds an argument and returns its placeholder.
func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return "$" + strconv.Itoa(len(w.args))
}

func (w *where) add(cond string) { w.conds = append(w.conds, cond) }

func addIn[T ~string](w *where, col string, vals []T) {
	if len(vals) == 0 {
		return
	}
	ss := make([]string, len(vals))
	for i, v := range vals {
		ss[i] = string(v)
	}
	w.add(col + " = ANY(" + w.arg(ss) + ")")
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// addAfter keeps the rows after c in the (created_at, id) order. Rows
// without a creation time (NULL) sort first.
func addAfter(w *where, what string, c mayfly.PageCursor) error {
	if c.IsZero() {
		return nil
	}
	at, err := timeArg(what+" cursor", c.CreatedAt)
	if err != nil {
		return err
	}
	if at == nil {
		w.add("(created_at IS NOT NULL OR id > " + w.arg(c.ID) + ")")
		return nil
	}
	w.add("(created_at, id) > (" + w.arg(at) + ", " + w.arg(c.ID) + ")")
	return nil
}

func (w *where) limit(n int) string {
	if n <= 0 {
		return ""
	}
	return " LIMIT " + w.arg(n)
}

// The order of lists: NULL creation times first, as on SQLite.
const createdOrder = " ORDER BY created_at NULLS FIRST, id"

// Requests.

const requestCols = `id, requester, target, grant_name, created_at, reason, duration_ns, state, policy,
	approvals_required, approver_groups, steps, step, step_approvals, approvers, decider, decision_reason,
	decided_at, lease_id, extends_lease, break_glass`

// requestFixed is how many leading columns of requestCols never change
// after creation.
const requestFixed = 5

func requestArgs(r *mayfly.Request) ([]any, error) {
	created, err := timeArg("created_at", r.CreatedAt)
	if err != nil {
		return nil, err
	}
	decided, err := timeArg("decided_at", r.DecidedAt)
	if err != nil {
		return nil, err
	}
	groups, err := jsonArg(r.ApproverGroups, r.ApproverGroups == nil)
	if err != nil {
		return nil, err
	}
	steps, err := jsonArg(r.Steps, r.Steps == nil)
	if err != nil {
		return nil, err
	}
	approvers, err := jsonArg(r.Approvers, r.Approvers == nil)
	if err != nil {
		return nil, err
	}
	return []any{r.ID, r.Requester, r.Target, r.Grant, created, r.Reason, int64(r.Duration), string(r.State), r.Policy,
		r.ApprovalsRequired, groups, steps, r.Step, r.StepApprovals, approvers, r.Decider, r.DecisionReason,
		decided, r.LeaseID, r.ExtendsLease, r.BreakGlass}, nil
}

func scanRequest(rows pgx.Rows) (*mayfly.Request, error) {
	var (
		r                        mayfly.Request
		dur                      int64
		state                    string
		groups, steps, approvers sql.NullString
		created, decided         sql.NullInt64
	)
	if err := rows.Scan(&r.ID, &r.Requester, &r.Target, &r.Grant, &created, &r.Reason, &dur, &state, &r.Policy,
		&r.ApprovalsRequired, &groups, &steps, &r.Step, &r.StepApprovals, &approvers, &r.Decider, &r.DecisionReason,
		&decided, &r.LeaseID, &r.ExtendsLease, &r.BreakGlass); err != nil {
		return nil, err
	}
	r.Duration, r.State = time.Duration(dur), mayfly.RequestState(state)
	r.CreatedAt, r.DecidedAt = timeOf(created), timeOf(decided)
	if err := jsonOf(groups, &r.ApproverGroups); err != nil {
		return nil, fmt.Errorf("request %s: approver groups: %w", r.ID, err)
	}
	if err := jsonOf(steps, &r.Steps); err != nil {
		return nil, fmt.Errorf("request %s: steps: %w", r.ID, err)
	}
	if err := jsonOf(approvers, &r.Approvers); err != nil {
		return nil, fmt.Errorf("request %s: approvers: %w", r.ID, err)
	}
	return &r, nil
}

func placeholders(from, n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = "$" + strconv.Itoa(from+i)
	}
	return strings.Join(ps, ", ")
}

// CreateRequest inserts r; ECONFLICT when its id exists.
func (t *tx) CreateRequest(r *mayfly.Request) error {
	args, err := requestArgs(r)
	if err != nil {
		return err
	}
	return t.execMaybeDeferred(`INSERT INTO requests (`+requestCols+`) VALUES (`+placeholders(1, len(args))+`)
		ON CONFLICT (id) DO NOTHING`, args, oneRow("create request", r.ID, mayfly.ECONFLICT, "request %q already exists"))
}

// oneRow judges a write of one row by id: an error of the statement is
// wrapped with what and id; no row written is code, with message (given
// id).
func oneRow(what, id, code, message string) func(pgconn.CommandTag, error) error {
	return func(tag pgconn.CommandTag, err error) error {
		if err != nil {
			return fmt.Errorf("%s %s: %w", what, id, err)
		}
		if tag.RowsAffected() == 0 {
			return mayfly.Errorf(code, message, id)
		}
		return nil
	}
}

// UpdateRequest writes every field of r but those fixed at creation (ID,
// Requester, Target, Grant, CreatedAt); ENOTFOUND when there is no such
// request.
func (t *tx) UpdateRequest(r *mayfly.Request) error {
	args, err := requestArgs(r)
	if err != nil {
		return err
	}
	args = append(args[requestFixed:], r.ID)
	tag, err := t.exec(`UPDATE requests SET reason = $1, duration_ns = $2, state = $3, policy = $4,
		approvals_required = $5, approver_groups = $6, steps = $7, step = $8, step_approvals = $9, approvers = $10,
		decider = $11, decision_reason = $12, decided_at = $13, lease_id = $14, extends_lease = $15, break_glass = $16
		WHERE id = $17`, args...)
	if err != nil {
		return fmt.Errorf("update request %s: %w", r.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", r.ID)
	}
	return nil
}

// GetRequest returns the request with id; ENOTFOUND when there is none.
func (t *tx) GetRequest(id string) (*mayfly.Request, error) {
	rs, err := t.listRequests("SELECT "+requestCols+" FROM requests WHERE id = $1"+t.forUpdate(), id)
	if err != nil {
		return nil, fmt.Errorf("get request %s: %w", id, err)
	}
	if len(rs) == 0 {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", id)
	}
	return rs[0], nil
}

// ListRequests returns the requests matching f, oldest first (by creation
// time, then id); with a Limit, the first Limit of them.
func (t *tx) ListRequests(f mayfly.RequestFilter) ([]*mayfly.Request, error) {
	var w where
	addIn(&w, "id", f.IDs)
	if f.Requester != "" {
		w.add("requester = " + w.arg(f.Requester))
	}
	addIn(&w, "state", f.States)
	if f.Open {
		// Literally the condition of the requests_open partial index.
		w.add("(state = 'pending' OR (state = 'approved' AND lease_id = ''))")
	}
	if f.Viewer != "" {
		v := w.arg(f.Viewer)
		cond := "requester = " + v + " OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(requests.approvers::jsonb) AS a WHERE a = " + v + ")"
		if len(f.ViewerGroups) > 0 {
			gs := w.arg(f.ViewerGroups)
			cond += " OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(requests.approver_groups::jsonb) AS g WHERE g = ANY(" + gs + "))" +
				" OR EXISTS (SELECT 1 FROM jsonb_array_elements(requests.steps::jsonb) AS s," +
				" jsonb_array_elements_text(CASE WHEN jsonb_typeof(s->'approver_groups') = 'array' THEN s->'approver_groups' END) AS g" +
				" WHERE g = ANY(" + gs + "))"
		}
		w.add("(" + cond + ")")
	}
	if err := addAfter(&w, "request", f.After); err != nil {
		return nil, err
	}
	q := "SELECT " + requestCols + " FROM requests" + w.String() + createdOrder + w.limit(f.Limit)
	rs, err := t.listRequests(q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	return rs, nil
}

func (t *tx) listRequests(q string, args ...any) ([]*mayfly.Request, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*mayfly.Request
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Leases.

const leaseCols = `id, request_id, requester, target, grant_name, username, created_at,
	state, expires_at, due_at, ended_at, end_reason, revoke_attempts, last_error, secret_hmac`

// leaseFixed is how many leading columns of leaseCols never change after
// creation.
const leaseFixed = 7

func leaseArgs(l *mayfly.Lease) ([]any, error) {
	var ts [4]any
	for i, x := range []struct {
		name string
		t    time.Time
	}{{"created_at", l.CreatedAt}, {"expires_at", l.ExpiresAt}, {"due_at", l.DueAt}, {"ended_at", l.EndedAt}} {
		v, err := timeArg(x.name, x.t)
		if err != nil {
			return nil, err
		}
		ts[i] = v
	}
	return []any{l.ID, l.RequestID, l.Requester, l.Target, l.Grant, l.Username, ts[0], string(l.State),
		ts[1], ts[2], ts[3], l.EndReason, l.RevokeAttempts, l.LastError, l.SecretHMAC}, nil
}

func scanLease(rows pgx.Rows) (*mayfly.Lease, error) {
	var (
		l                           mayfly.Lease
		state                       string
		created, expires, due, ende sql.NullInt64
	)
	if err := rows.Scan(&l.ID, &l.RequestID, &l.Requester, &l.Target, &l.Grant, &l.Username, &created, &state,
		&expires, &due, &ende, &l.EndReason, &l.RevokeAttempts, &l.LastError, &l.SecretHMAC); err != nil {
		return nil, err
	}
	l.State = mayfly.LeaseState(state)
	l.CreatedAt, l.ExpiresAt, l.DueAt, l.EndedAt = timeOf(created), timeOf(expires), timeOf(due), timeOf(ende)
	return &l, nil
}

// CreateLease inserts l; ECONFLICT when its id exists.
func (t *tx) CreateLease(l *mayfly.Lease) error {
	args, err := leaseArgs(l)
	if err != nil {
		return err
	}
	return t.execMaybeDeferred(createLeaseSQL, args, createLeaseCheck(l.ID))
}

// createLeaseSQL inserts a lease from leaseArgs; createLeaseCheck judges
// its result.
var createLeaseSQL = `INSERT INTO leases (` + leaseCols + `) VALUES (` + placeholders(1, strings.Count(leaseCols, ",")+1) + `)
	ON CONFLICT (id) DO NOTHING`

func createLeaseCheck(id string) func(pgconn.CommandTag, error) error {
	return oneRow("create lease", id, mayfly.ECONFLICT, "lease %q already exists")
}

// UpdateLease writes every field of l but those fixed at creation (ID,
// RequestID, Requester, Target, Grant, Username, CreatedAt); ENOTFOUND when
// there is no such lease.
func (t *tx) UpdateLease(l *mayfly.Lease) error {
	args, err := leaseArgs(l)
	if err != nil {
		return err
	}
	args = append(args[leaseFixed:], l.ID)
	return t.execMaybeDeferred(`UPDATE leases SET state = $1, expires_at = $2, due_at = $3, ended_at = $4, end_reason = $5,
		revoke_attempts = $6, last_error = $7, secret_hmac = $8 WHERE id = $9`, args, oneRow("update lease", l.ID, mayfly.ENOTFOUND, "lease %q not found"))
}

// UpdateLeaseFrom writes l as UpdateLease does when the stored lease
// still holds prev's values (see mayfly.Tx), in one statement.
func (t *tx) UpdateLeaseFrom(prev, l *mayfly.Lease) error {
	if prev.ID != l.ID {
		return fmt.Errorf("update lease %s: compared with lease %s", l.ID, prev.ID)
	}
	args, err := leaseArgs(l)
	if err != nil {
		return err
	}
	was, err := leaseArgs(prev)
	if err != nil {
		return err
	}
	args = append(append(args[leaseFixed:], l.ID, prev.Username), was[leaseFixed:]...)
	return t.execMaybeDeferred(`UPDATE leases SET state = $1, expires_at = $2, due_at = $3, ended_at = $4, end_reason = $5,
		revoke_attempts = $6, last_error = $7, secret_hmac = $8 WHERE id = $9 AND username = $10 AND state = $11
		AND expires_at IS NOT DISTINCT FROM $12 AND due_at IS NOT DISTINCT FROM $13 AND ended_at IS NOT DISTINCT FROM $14
		AND end_reason = $15 AND revoke_attempts = $16 AND last_error = $17 AND secret_hmac = $18`, args,
		func(tag pgconn.CommandTag, err error) error {
			if err != nil {
				return fmt.Errorf("update lease %s: %w", l.ID, err)
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("update lease %s: %w", l.ID, mayfly.ErrLeaseChanged)
			}
			return nil
		})
}

var _ mayfly.LeaseBatcher = (*tx)(nil)

// LockLeases reads the leases ids in one statement, locked in id order
// in a write transaction (the order in which every batch of outcomes and
// the claims' renewal lock them, so they wait for each other rather than
// deadlock).
func (t *tx) LockLeases(ids []string) ([]*mayfly.Lease, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	ls, err := t.listLeases("SELECT "+leaseCols+" FROM leases WHERE id = ANY($1) ORDER BY id"+t.forUpdate(), ids)
	if err != nil {
		return nil, fmt.Errorf("lock %d leases: %w", len(ids), err)
	}
	return ls, nil
}

// UpdateLeases writes what UpdateLease writes of each of ls, in one
// statement.
func (t *tx) UpdateLeases(ls []*mayfly.Lease) error {
	if len(ls) == 0 {
		return nil
	}
	var (
		ids, states, reasons, errs, hmacs []string
		expires, due, ended               []*int64
		attempts                          []int32
	)
	nullable := func(v any) *int64 {
		if n, ok := v.(int64); ok {
			return &n
		}
		return nil
	}
	for _, l := range ls {
		args, err := leaseArgs(l)
		if err != nil {
			return err
		}
		ids = append(ids, l.ID)
		states = append(states, string(l.State))
		expires, due, ended = append(expires, nullable(args[8])), append(due, nullable(args[9])), append(ended, nullable(args[10]))
		reasons, attempts, errs, hmacs = append(reasons, l.EndReason), append(attempts, int32(l.RevokeAttempts)), append(errs, l.LastError), append(hmacs, l.SecretHMAC)
	}
	tag, err := t.exec(`UPDATE leases AS l SET state = v.state, expires_at = v.expires_at, due_at = v.due_at, ended_at = v.ended_at,
		end_reason = v.end_reason, revoke_attempts = v.revoke_attempts, last_error = v.last_error, secret_hmac = v.secret_hmac
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::int[], $8::text[], $9::text[])
			AS v(id, state, expires_at, due_at, ended_at, end_reason, revoke_attempts, last_error, secret_hmac)
		WHERE l.id = v.id`, ids, states, expires, due, ended, reasons, attempts, errs, hmacs)
	if err != nil {
		return fmt.Errorf("update %d leases: %w", len(ls), err)
	}
	if n := tag.RowsAffected(); n != int64(len(ls)) {
		return mayfly.Errorf(mayfly.ENOTFOUND, "update %d leases: %d of them not found", len(ls), int64(len(ls))-n)
	}
	return nil
}

// SetLeaseUsername records the account a connector created for lease id.
func (t *tx) SetLeaseUsername(id, username string) error {
	tag, err := t.exec(`UPDATE leases SET username = $1 WHERE id = $2`, username, id)
	if err != nil {
		return fmt.Errorf("set username of lease %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return mayfly.Errorf(mayfly.ENOTFOUND, "lease %q not found", id)
	}
	return nil
}

// GetLease returns the lease with id; ENOTFOUND when there is none.
func (t *tx) GetLease(id string) (*mayfly.Lease, error) {
	ls, err := t.listLeases("SELECT "+leaseCols+" FROM leases WHERE id = $1"+t.forUpdate(), id)
	if err != nil {
		return nil, fmt.Errorf("get lease %s: %w", id, err)
	}
	if len(ls) == 0 {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "lease %q not found", id)
	}
	return ls[0], nil
}

// ListLeases returns the leases matching f, oldest first (by creation
// time, then id); with a Limit, the first Limit of them.
func (t *tx) ListLeases(f mayfly.LeaseFilter) ([]*mayfly.Lease, error) {
	var w where
	addIn(&w, "id", f.IDs)
	if f.RequestID != "" {
		w.add("request_id = " + w.arg(f.RequestID))
	}
	if f.Requester != "" {
		w.add("requester = " + w.arg(f.Requester))
	}
	if f.Target != "" {
		w.add("target = " + w.arg(f.Target))
	}
	if f.Username != "" {
		w.add("username = " + w.arg(f.Username))
	}
	addIn(&w, "state", f.States)
	if err := addAfter(&w, "lease", f.After); err != nil {
		return nil, err
	}
	q := "SELECT " + leaseCols + " FROM leases" + w.String() + createdOrder + w.limit(f.Limit)
	ls, err := t.listLeases(q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	return ls, nil
}

func (t *tx) listLeases(q string, args ...any) ([]*mayfly.Lease, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*mayfly.Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// DueLeases returns up to limit leases (no bound when limit <= 0) in the
// given states whose DueAt is at or before now, earliest DueAt first, ties
// by id, starting after the cursor after unless it is zero. It reads each
// state's range of the (state, due_at, id) index.
func (t *tx) DueLeases(now time.Time, states []mayfly.LeaseState, after mayfly.DueCursor, limit int) ([]*mayfly.Lease, error) {
	nowArg, err := timeArg("now", now)
	if err != nil {
		return nil, err
	}
	if nowArg == nil {
		return nil, nil
	}
	afterArg, err := timeArg("cursor", after.DueAt)
	if err != nil {
		return nil, err
	}
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	var out []*mayfly.Lease
	for i, s := range states {
		if slices.Contains(states[:i], s) {
			continue
		}
		var ls []*mayfly.Lease
		if afterArg == nil {
			ls, err = t.listLeases("SELECT "+leaseCols+` FROM leases
				WHERE state = $1 AND due_at <= $2 ORDER BY due_at, id LIMIT $3`, string(s), nowArg, lim)
		} else {
			ls, err = t.listLeases("SELECT "+leaseCols+` FROM leases
				WHERE state = $1 AND due_at <= $2 AND (due_at, id) > ($3, $4)
				ORDER BY due_at, id LIMIT $5`, string(s), nowArg, afterArg, after.ID, lim)
		}
		if err != nil {
			return nil, fmt.Errorf("due leases: %w", err)
		}
		out = append(out, ls...)
	}
	if len(states) > 1 {
		slices.SortFunc(out, func(a, b *mayfly.Lease) int {
			if c := a.DueAt.Compare(b.DueAt); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// NextDue returns the earliest DueAt of leases in the given states; ok is
// false when there is none.
func (t *tx) NextDue(states []mayfly.LeaseState) (time.Time, bool, error) {
	var best sql.NullInt64
	for _, s := range states {
		var v int64
		ok, err := t.queryRow(`SELECT due_at FROM leases WHERE state = $1 AND due_at IS NOT NULL
			ORDER BY due_at LIMIT 1`, []any{string(s)}, &v)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("next due: %w", err)
		}
		if ok && (!best.Valid || v < best.Int64) {
			best = sql.NullInt64{Int64: v, Valid: true}
		}
	}
	if !best.Valid {
		return time.Time{}, false, nil
	}
	return timeOf(best), true, nil
}

// CountLeases counts leases by state from the lease_counts table the
// triggers keep; states without leases are absent.
func (t *tx) CountLeases() (map[mayfly.LeaseState]int, error) {
	rows, err := t.query("SELECT state, SUM(n)::bigint FROM lease_counts GROUP BY state HAVING SUM(n) > 0")
	if err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	defer rows.Close()
	out := map[mayfly.LeaseState]int{}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("count leases: %w", err)
		}
		out[mayfly.LeaseState(s)] = int(n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	return out, nil
}

// Audit events.

const auditCols = `seq, time, actor, action, subject, target, request_id, lease_id, reason, source,
	data, prev_hash, hash`

// AppendAudit appends e to the chain: e.Seq is the sequence number of
// the event before it plus one, e.PrevHash that event's hash ("" for the
// first event) and e.Hash e.ComputeHash().
//
// The events of a transaction are written when it commits, in the round
// trip of the commit: PostgreSQL locks the head of the chain (a one-row
// table) and chains them to it (see chainSQL), so the lock is held only
// while the transaction commits, and appends from every connection and
// replica form one chain in commit order. e's Seq, PrevHash and Hash are
// set then, before Update returns. A ListAudit or DeleteAuditBefore in
// the same transaction locks and reads the head, and writes them first,
// so the transaction reads its own events.
func (t *tx) AppendAudit(e *mayfly.AuditEvent) error {
	if !t.write {
		return errReadOnly
	}
	at, err := timeArg("audit time", e.Time)
	if err != nil {
		return err
	}
	data, err := jsonArg(e.Data, e.Data == nil)
	if err != nil {
		return err
	}
	t.pending = append(t.pending, pendingEvent{e: e, at: at, data: data})
	return nil
}

// countLocked counts a lock and read of the head in the handle's stats.
func (t *tx) countLocked() {
	if t.db != nil {
		t.db.stats.locked.Add(1)
	}
}

// chainPending locks and reads the head of the chain (once per
// transaction), chains the pending events to it, and returns the
// statement that inserts them and moves the head, and its arguments.
func (t *tx) chainPending() (string, []any, error) {
	if !t.head.ok {
		t.countLocked()
		ok, err := t.queryRow("SELECT seq, hash FROM audit_head FOR UPDATE", nil, &t.head.seq, &t.head.hash)
		var de *deferredError
		if errors.As(err, &de) {
			return "", nil, de.err // a lease write sent with it failed
		}
		if err != nil {
			return "", nil, fmt.Errorf("append audit: lock the head of the chain: %w", err)
		}
		if !ok {
			return "", nil, errMissingHead
		}
		t.head.ok = true
	}
	q, args := t.chainFrom(t.head.seq, t.head.hash)
	n := len(args)
	return q + " UPDATE audit_head SET seq = " + placeholders(n-1, 1) + ", hash = " + placeholders(n, 1), args, nil
}

var errMissingHead = errors.New("append audit: the audit_head row is missing")

// chainFrom chains the pending events to the event seq with hash, and
// returns a WITH clause that inserts them and, as its two last
// arguments, the sequence number and hash of the last of them, for the
// statement that moves the head.
func (t *tx) chainFrom(seq int64, hash string) (string, []any) {
	var b strings.Builder
	b.WriteString("WITH ins AS (INSERT INTO audit_events (" + auditCols + ") VALUES ")
	args := make([]any, 0, 13*len(t.pending)+4)
	for i, p := range t.pending {
		e := p.e
		e.Seq, e.PrevHash = seq+1, hash
		e.Hash = e.ComputeHash()
		seq, hash = e.Seq, e.Hash
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(" + placeholders(len(args)+1, 13) + ")")
		args = append(args, e.Seq, p.at, e.Actor, e.Action, e.Subject, e.Target, e.RequestID, e.LeaseID, e.Reason, e.Source,
			p.data, e.PrevHash, e.Hash)
	}
	b.WriteString(")")
	return b.String(), append(args, seq, hash)
}

// flushAudit writes the pending audit events now.
func (t *tx) flushAudit() error {
	if len(t.pending) == 0 {
		return nil
	}
	q, args, err := t.chainPending()
	if err != nil {
		return err
	}
	if _, err := t.exec(q, args...); err != nil {
		return fmt.Errorf("append audit events %d to %d: %w", t.pending[0].e.Seq, t.pending[len(t.pending)-1].e.Seq, err)
	}
	last := t.pending[len(t.pending)-1].e
	t.head.seq, t.head.hash = last.Seq, last.Hash
	t.notifySeq = last.Seq
	t.pending = t.pending[:0]
	return nil
}

// notifyStmt is queued before the COMMIT of a transaction that wrote
// audit events: PostgreSQL delivers the notification to the listeners of
// every replica when, and only if, the transaction commits.
const notifyStmt = "SELECT pg_notify('" + AuditChannel + "', $1)"

// notifyHeadStmt is notifyStmt for the head of the chain as the
// transaction left it, read in the database (see commitChained).
const notifyHeadStmt = "SELECT pg_notify('" + AuditChannel + "', seq::text) FROM audit_head"

// commit commits the transaction; the pending audit events are written
// in the same round trip as the COMMIT. Once sent, the commit is waited
// for whatever the caller's context does, so that Update returns nil
// exactly when it committed.
func (t *tx) commit() error {
	if t.deferFailed != nil {
		return t.deferFailed
	}
	wctx := context.WithoutCancel(t.ctx)
	if len(t.pending) == 0 && t.notifySeq == 0 && len(t.deferred) == 0 {
		if !t.begun {
			return nil // no statement ran: nothing to commit
		}
		tag, err := t.q.Exec(wctx, "COMMIT")
		return commitResult(tag, err)
	}
	if len(t.pending) > 0 && !t.head.ok {
		return t.commitChained(wctx)
	}
	if slices.ContainsFunc(t.deferred, func(d deferredWrite) bool { return d.counted }) {
		// A deferred write that finds its row missing, or taken, fails
		// only when its count is read; sent with the COMMIT, it would be
		// read after the rest of the transaction had committed. It goes
		// in a round trip of its own. (With audit events not chained
		// yet, it goes in the form that fails; see commitChained.)
		// One that can fail only with an error of PostgreSQL's aborts
		// the transaction, so the COMMIT after it commits nothing: it
		// goes with the COMMIT.
		if err := t.sendPrefix(); err != nil {
			return err
		}
	}
	var batch pgx.Batch
	var audit string
	var auditArgs []any
	if len(t.pending) > 0 {
		// Chains them to the head this transaction locked and read.
		var err error
		if audit, auditArgs, err = t.chainPending(); err != nil {
			return err
		}
	}
	n := t.queuePrefix(&batch)
	if audit != "" {
		batch.Queue(audit, auditArgs...)
		last := t.pending[len(t.pending)-1].e
		t.notifySeq, t.head.seq, t.head.hash = last.Seq, last.Seq, last.Hash
	}
	if t.notifySeq != 0 {
		batch.Queue(notifyStmt, strconv.FormatInt(t.notifySeq, 10))
	}
	batch.Queue("COMMIT")
	br := t.q.SendBatch(wctx, &batch)
	if err := t.prefixResults(br, n); err != nil {
		br.Close()
		return err
	}
	if audit != "" {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("append audit events %d to %d: %w", t.pending[0].e.Seq, t.pending[len(t.pending)-1].e.Seq, err)
		}
	}
	if t.notifySeq != 0 {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("postgres store: notify %s: %w", AuditChannel, err)
		}
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return commitResult(tag, err)
}

// genericPlanStmt goes before chainSQL in its round trip: PostgreSQL would
// otherwise plan that statement afresh at each of its first five
// executions on a connection (custom plans, before it settles on one),
// although no argument changes its plan, and planning it costs about as
// much as running it (more than a millisecond after an idle spell). The
// setting ends with the transaction. See TestChainIsNotReplanned.
const genericPlanStmt = "SET LOCAL plan_cache_mode = force_generic_plan"

// chainSQL is the statement that appends n audit events in the database
// (see commitChained). Its arguments are those of chainArgs.
//
// It locks the head of the chain (h); once the lock is granted, READ
// COMMITTED reads the row as the transaction that held it left it, so
// appends from every connection and replica form one chain in commit
// order. Event i is chained to event i-1 (event 0 being the head) with
// ChainHash, computed by PostgreSQL from the event's HashSuffix, which the
// broker sent. A missing head row makes seq NULL, which the INSERT
// refuses. The statement returns each event's seq, prev_hash and hash, in
// order. Up to chainUnrolled events it names each link (one single-row
// CTE each, which PostgreSQL runs faster for a few events than the other
// form); more take a recursive CTE over arrays, one per column, whose
// step reads its event's suffix by index, so that its time grows with n,
// not n².
func chainSQL(n int) string {
	var b strings.Builder
	b.WriteString("WITH RECURSIVE h AS (SELECT seq, hash FROM audit_head FOR UPDATE),\n")
	if n <= chainUnrolled {
		b.WriteString("e0 (seq, hash) AS (SELECT (SELECT seq FROM h), (SELECT hash FROM h)),\n")
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, "e%d (seq, prev_hash, hash) AS (SELECT seq + 1, hash, %s FROM e%d),\n",
				i, chainHashSQL("hash", "seq + 1", fmt.Sprintf("$%d::bytea", 11*i)), i-1)
		}
		b.WriteString("ins AS (INSERT INTO audit_events (" + auditCols + ") VALUES ")
		for i := 1; i <= n; i++ {
			if i > 1 {
				b.WriteString(", ")
			}
			p := 11*(i-1) + 1
			fmt.Fprintf(&b, "((SELECT seq FROM e%d), $%d::bigint, $%d::text, $%d::text, $%d::text, $%d::text, $%d::text, $%d::text, $%d::text, $%d::text, $%d::text, (SELECT prev_hash FROM e%d), (SELECT hash FROM e%d))",
				i, p, p+1, p+2, p+3, p+4, p+5, p+6, p+7, p+8, p+9, i, i)
		}
		fmt.Fprintf(&b, "),\nup AS (UPDATE audit_head SET seq = e%d.seq, hash = e%d.hash FROM e%d)\n", n, n, n)
		for i := 1; i <= n; i++ {
			if i > 1 {
				b.WriteString(" UNION ALL ")
			}
			fmt.Fprintf(&b, "SELECT seq, prev_hash, hash FROM e%d", i)
		}
		b.WriteString(" ORDER BY seq")
		return b.String()
	}
	b.WriteString(`c (i, seq, prev_hash, hash) AS (
	SELECT 0, (SELECT seq FROM h), ''::text, (SELECT hash FROM h)
	UNION ALL
	SELECT i + 1, seq + 1, hash, ` + chainHashSQL("hash", "seq + 1", "($11::bytea[])[i + 1]") + `
	FROM c WHERE i < cardinality($11::bytea[])
),
ins AS (INSERT INTO audit_events (` + auditCols + `)
	SELECT c.seq, e.time, e.actor, e.action, e.subject, e.target, e.request_id, e.lease_id, e.reason, e.source, e.data, c.prev_hash, c.hash
	FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
		WITH ORDINALITY AS e (time, actor, action, subject, target, request_id, lease_id, reason, source, data, i)
	JOIN c ON c.i = e.i),
up AS (UPDATE audit_head SET seq = l.seq, hash = l.hash FROM (SELECT seq, hash FROM c ORDER BY i DESC LIMIT 1) l)
SELECT seq, prev_hash, hash FROM c WHERE i > 0 ORDER BY i`)
	return b.String()
}

// chainUnrolled is the most events chainSQL chains without recursion: a
// one-call issue appends three, and past about a dozen the recursive form
// is as fast (BenchmarkAuditChain).
const chainUnrolled = 8

// chainHashSQL is mayfly.ChainHash in SQL: the hex SHA-256 of prev, a
// newline, {"seq": and seq in decimal, then suffix (bytea).
func chainHashSQL(prev, seq, suffix string) string {
	return "encode(sha256(convert_to(" + prev + ` || E'\n{"seq":' || (` + seq + "), 'UTF8') || " + suffix + "), 'hex')"
}

// chainArgs are the arguments of chainSQL for the pending events: 11 for
// each up to chainUnrolled, 11 arrays of one element for each past it.
func (t *tx) chainArgs() []any {
	if len(t.pending) > chainUnrolled {
		n := len(t.pending)
		at, data := make([]*int64, n), make([]*string, n)
		cols := make([][]string, 8)
		for i := range cols {
			cols[i] = make([]string, n)
		}
		suffix := make([][]byte, n)
		for i, p := range t.pending {
			e := p.e
			if v, ok := p.at.(int64); ok {
				at[i] = &v
			}
			if v, ok := p.data.(string); ok {
				data[i] = &v
			}
			for k, v := range []string{e.Actor, e.Action, e.Subject, e.Target, e.RequestID, e.LeaseID, e.Reason, e.Source} {
				cols[k][i] = v
			}
			suffix[i] = []byte(e.HashSuffix())
		}
		return []any{at, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], data, suffix}
	}
	args := make([]any, 0, 11*len(t.pending))
	for _, p := range t.pending {
		e := p.e
		args = append(args, p.at, e.Actor, e.Action, e.Subject, e.Target, e.RequestID, e.LeaseID, e.Reason, e.Source,
			p.data, []byte(e.HashSuffix()))
	}
	return args
}

// commitChained commits, in one round trip, a transaction with audit
// events that has not locked the head of the chain: what waits to be sent
// (the counted writes in the form that fails when they write nothing, so
// that their failure aborts the transaction), the events appended by
// PostgreSQL to the head it locks (chainSQL), the notification and the
// COMMIT. Which replica appended last does not matter: there is nothing
// to read first. The events' Seq, PrevHash and Hash are set from what the
// database computed.
func (t *tx) commitChained(ctx context.Context) error {
	if t.db != nil {
		t.db.stats.chained.Add(1)
	}
	var batch pgx.Batch
	n := t.queuePrefixAs(&batch, true)
	batch.Queue(genericPlanStmt)
	batch.Queue(chainSQL(len(t.pending)), t.chainArgs()...)
	batch.Queue(notifyHeadStmt)
	batch.Queue("COMMIT")
	br := t.q.SendBatch(ctx, &batch)
	defer br.Close()
	if err := t.prefixResults(br, n); err != nil {
		var de *deferredError
		if errors.As(err, &de) {
			return de.err
		}
		return err
	}
	if _, err := br.Exec(); err != nil {
		return fmt.Errorf("postgres store: plan the audit chain once: %w", err)
	}
	if err := t.readChained(br); err != nil {
		return err
	}
	if _, err := br.Exec(); err != nil {
		return fmt.Errorf("postgres store: notify %s: %w", AuditChannel, err)
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return commitResult(tag, err)
}

// readChained reads the result of chainSQL into the pending events.
func (t *tx) readChained(br pgx.BatchResults) error {
	fail := func(err error) error {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23502" && pe.ColumnName == "seq" {
			return errMissingHead // see chainSQL
		}
		return fmt.Errorf("append %d audit events: %w", len(t.pending), err)
	}
	rows, err := br.Query()
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		if i == len(t.pending) {
			return fmt.Errorf("append %d audit events: the database returned more", len(t.pending))
		}
		e := t.pending[i].e
		if err := rows.Scan(&e.Seq, &e.PrevHash, &e.Hash); err != nil {
			return fail(err)
		}
		i++
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	if i != len(t.pending) {
		return fmt.Errorf("append %d audit events: the database appended %d", len(t.pending), i)
	}
	return nil
}

func commitResult(tag pgconn.CommandTag, err error) error {
	if err != nil {
		return fmt.Errorf("postgres store: commit: %w", err)
	}
	if tag.String() != "COMMIT" {
		return fmt.Errorf("postgres store: commit: the transaction was rolled back (%s)", tag.String())
	}
	return nil
}

// ListAudit returns the events matching f in sequence order (newest first
// with f.Newest). Since is inclusive and Until exclusive.
func (t *tx) ListAudit(f mayfly.AuditFilter) ([]*mayfly.AuditEvent, error) {
	if err := t.flushAudit(); err != nil {
		return nil, err
	}
	var w where
	if f.AfterSeq > 0 {
		w.add("seq > " + w.arg(f.AfterSeq))
	}
	if f.UntilSeq > 0 {
		w.add("seq <= " + w.arg(f.UntilSeq))
	}
	if f.Actor != "" {
		w.add("actor = " + w.arg(f.Actor))
	}
	if f.Action != "" {
		w.add("action = " + w.arg(f.Action))
	}
	if f.Target != "" {
		w.add("target = " + w.arg(f.Target))
	}
	if f.LeaseID != "" {
		// The redundant condition lets the planner use the partial index.
		w.add("lease_id = " + w.arg(f.LeaseID) + " AND lease_id <> ''")
	}
	if f.RequestID != "" {
		w.add("request_id = " + w.arg(f.RequestID) + " AND request_id <> ''")
	}
	if !f.Since.IsZero() {
		v, err := timeArg("since", f.Since)
		if err != nil {
			return nil, err
		}
		w.add("time >= " + w.arg(v))
	}
	if !f.Until.IsZero() {
		v, err := timeArg("until", f.Until)
		if err != nil {
			return nil, err
		}
		w.add("time < " + w.arg(v))
	}
	if f.Involving != "" {
		p := w.arg(f.Involving)
		w.add("(actor = " + p + " OR (request_id <> '' AND request_id IN (SELECT id FROM requests WHERE requester = " + p + ")))")
	}
	order := " ORDER BY seq"
	if f.Newest {
		order += " DESC"
	}
	rows, err := t.query("SELECT "+auditCols+" FROM audit_events"+w.String()+order+w.limit(f.Limit), w.args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []*mayfly.AuditEvent
	for rows.Next() {
		var (
			e    mayfly.AuditEvent
			at   sql.NullInt64
			data sql.NullString
		)
		if err := rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Subject, &e.Target, &e.RequestID, &e.LeaseID,
			&e.Reason, &e.Source, &data, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time = timeOf(at)
		if err := jsonOf(data, &e.Data); err != nil {
			return nil, fmt.Errorf("list audit: event %d: data: %w", e.Seq, err)
		}
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

// DeleteAuditBefore removes the events with seq below the given one. The
// head of the chain stays where it is.
func (t *tx) DeleteAuditBefore(seq int64) (int64, error) {
	if err := t.flushAudit(); err != nil {
		return 0, err
	}
	tag, err := t.exec("DELETE FROM audit_events WHERE seq < $1", seq)
	if err != nil {
		return 0, fmt.Errorf("delete audit events before %d: %w", seq, err)
	}
	return tag.RowsAffected(), nil
}

// Users and settings.

// GetUserStatus returns the stored status of a user, "" when none is stored.
func (t *tx) GetUserStatus(name string) (string, error) {
	var s string
	if _, err := t.queryRow("SELECT status FROM users WHERE name = $1"+t.forUpdate(), []any{name}, &s); err != nil {
		return "", fmt.Errorf("get user status: %w", err)
	}
	return s, nil
}

// WriteIntent reads the status of l.Requester (locked) and creates l in
// one round trip, with what waits to be sent before them (see
// mayfly.WriteIntent).
func (t *tx) WriteIntent(l *mayfly.Lease) (string, error) {
	if !t.write {
		return "", errReadOnly
	}
	args, err := leaseArgs(l)
	if err != nil {
		return "", err
	}
	var b pgx.Batch
	n := t.queuePrefix(&b)
	b.Queue("SELECT status FROM users WHERE name = $1 FOR UPDATE", l.Requester)
	b.Queue(createLeaseSQL, args...)
	br := t.q.SendBatch(t.ctx, &b)
	defer br.Close()
	if err := t.prefixResults(br, n); err != nil {
		var de *deferredError
		if errors.As(err, &de) {
			return "", de.err
		}
		return "", err
	}
	var status string
	if err := br.QueryRow().Scan(&status); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("get user status: %w", err)
	}
	if err := createLeaseCheck(l.ID)(br.Exec()); err != nil {
		return "", err
	}
	if err := br.Close(); err != nil {
		return "", fmt.Errorf("postgres store: %w", err)
	}
	return status, nil
}

var _ mayfly.IntentWriter = (*tx)(nil)

// DeferIntent defers, to be sent with the transaction's next statement or
// its commit, the lock of l.Requester's status and a check of it against
// each of refused (a statement that divides by zero when the status is
// that one), then the creation of l (see mayfly.WriteIntentUnless).
func (t *tx) DeferIntent(l *mayfly.Lease, refused []string) error {
	if !t.write {
		return errReadOnly
	}
	args, err := leaseArgs(l)
	if err != nil {
		return err
	}
	user := l.Requester
	if len(refused) == 0 {
		// Locked all the same: a change of the status waits for the intent.
		t.deferred = append(t.deferred, deferredWrite{q: "SELECT 1 FROM users WHERE name = $1 FOR UPDATE", args: []any{user},
			check: func(_ pgconn.CommandTag, err error) error {
				if err != nil {
					return fmt.Errorf("get user status: %w", err)
				}
				return nil
			}})
	}
	for i, status := range refused {
		q := "SELECT 1 / (CASE WHEN status = $2 THEN 0 ELSE 1 END) FROM users WHERE name = $1"
		if i == 0 {
			q += " FOR UPDATE"
		}
		t.deferred = append(t.deferred, deferredWrite{q: q, args: []any{user, status},
			check: func(_ pgconn.CommandTag, err error) error {
				if noRow(err) {
					return mayfly.StatusRefused(user, status)
				}
				if err != nil {
					return fmt.Errorf("get user status: %w", err)
				}
				return nil
			}})
	}
	t.deferred = append(t.deferred, deferredWrite{q: createLeaseSQL, args: args, check: createLeaseCheck(l.ID), counted: true})
	return nil
}

var _ mayfly.GuardedIntentWriter = (*tx)(nil)

// SetUserStatus stores the status of a user.
func (t *tx) SetUserStatus(name, status string) error {
	if _, err := t.exec(`INSERT INTO users (name, status) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET status = excluded.status`, name, status); err != nil {
		return fmt.Errorf("set user status: %w", err)
	}
	return nil
}

// UserStatuses returns every stored user status by name.
func (t *tx) UserStatuses() (map[string]string, error) {
	return t.pairs("list user statuses", "SELECT name, status FROM users")
}

// GetSetting returns the value stored under key; ENOTFOUND when there is
// none.
func (t *tx) GetSetting(key string) (string, error) {
	var v string
	ok, err := t.queryRow("SELECT value FROM settings WHERE key = $1"+t.forUpdate(), []any{key}, &v)
	if err != nil {
		return "", fmt.Errorf("get setting %s: %w", key, err)
	}
	if !ok && t.write {
		// No row to lock: lock the key itself until the transaction ends,
		// and read again, so that of replicas setting a missing key at
		// once (such as a key generated at first start) the later one
		// finds the earlier one's value instead of replacing it.
		if _, err := t.exec("SELECT pg_advisory_xact_lock($1, hashtext($2))", settingLockSpace, key); err != nil {
			return "", fmt.Errorf("get setting %s: lock: %w", key, err)
		}
		if ok, err = t.queryRow("SELECT value FROM settings WHERE key = $1 FOR UPDATE", []any{key}, &v); err != nil {
			return "", fmt.Errorf("get setting %s: %w", key, err)
		}
	}
	if !ok {
		return "", mayfly.Errorf(mayfly.ENOTFOUND, "setting %q not found", key)
	}
	return v, nil
}

// PutSetting stores value under key, replacing any previous value.
func (t *tx) PutSetting(key, value string) error {
	if _, err := t.exec(`INSERT INTO settings (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("put setting %s: %w", key, err)
	}
	return nil
}

// ListSettings returns the settings whose key starts with prefix.
func (t *tx) ListSettings(prefix string) (map[string]string, error) {
	return t.pairs("list settings "+prefix, "SELECT key, value FROM settings WHERE left(key, $1) = $2", len([]rune(prefix)), prefix)
}

func (t *tx) pairs(what, q string, args ...any) (map[string]string, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// DeleteSetting removes a setting; a missing key is not an error.
func (t *tx) DeleteSetting(key string) error {
	if _, err := t.exec("DELETE FROM settings WHERE key = $1", key); err != nil {
		return fmt.Errorf("delete setting %s: %w", key, err)
	}
	return nil
}
