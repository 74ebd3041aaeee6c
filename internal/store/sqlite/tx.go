package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// tx is a transaction on one connection. It lives for one call of Update
// or View and carries that call's context.
type tx struct {
	ctx   context.Context
	c     *conn
	write bool
	sctx  context.Context // see stmtCtx

	// The last audit event appended: from the store's memory of the last
	// one committed, or read on the first append.
	last auditTail

	// intent: the transaction created a provisioning lease, so its commit
	// must be durable before Update returns (see DB.syncLog).
	intent bool
}

// auditTail is the sequence number and hash of the last audit event, when
// ok.
type auditTail struct {
	ok   bool
	seq  int64
	hash string
}

var _ mayfly.Tx = (*tx)(nil)

var errReadOnly = errors.New("sqlite: write in a read-only transaction")

// stmtCtx returns the context for the next statement, or the caller's
// error once its context has ended. In a write transaction a statement
// runs to its end even when the caller's context ends meanwhile: SQLite
// answers an interrupted write by rolling back the whole transaction,
// which may hold other callers' updates (group commit). The caller's
// context is checked before each statement instead, and before commit.
func (t *tx) stmtCtx() (context.Context, error) {
	if err := t.ctx.Err(); err != nil {
		return nil, err
	}
	if t.sctx == nil {
		t.sctx = t.ctx
		if t.write {
			t.sctx = context.WithoutCancel(t.ctx)
		}
	}
	return t.sctx, nil
}

func (t *tx) exec(q string, args ...any) (sql.Result, error) {
	if !t.write {
		return nil, errReadOnly
	}
	ctx, err := t.stmtCtx()
	if err != nil {
		return nil, err
	}
	s, err := t.c.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return t.c.c.ExecContext(ctx, q, args...)
	}
	return s.ExecContext(ctx, args...)
}

func (t *tx) query(q string, args ...any) (*sql.Rows, error) {
	ctx, err := t.stmtCtx()
	if err != nil {
		return nil, err
	}
	s, err := t.c.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return t.c.c.QueryContext(ctx, q, args...)
	}
	return s.QueryContext(ctx, args...)
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
		return false, rows.Err()
	}
	if err := rows.Scan(dest...); err != nil {
		return false, err
	}
	return true, rows.Close()
}

// Times are stored as integer Unix nanoseconds, NULL for the zero time.
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

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// where accumulates the conditions and arguments of a query.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func addIn[T ~string](w *where, col string, vals []T) {
	if len(vals) == 0 {
		return
	}
	w.conds = append(w.conds, col+" IN ("+placeholders(len(vals))+")")
	for _, v := range vals {
		w.args = append(w.args, string(v))
	}
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// addAfter keeps the rows after c in the (created_at, id) order, as a row
// value comparison that an index on (created_at, id) serves. Rows without
// a creation time (NULL) sort first.
func addAfter(w *where, what string, c mayfly.PageCursor) error {
	if c.IsZero() {
		return nil
	}
	at, err := timeArg(what+" cursor", c.CreatedAt)
	if err != nil {
		return err
	}
	if at == nil {
		w.add("(created_at IS NOT NULL OR id > ?)", c.ID)
		return nil
	}
	w.add("(created_at, id) > (?, ?)", at, c.ID)
	return nil
}

func (w *where) limit(n int) string {
	if n <= 0 {
		return ""
	}
	w.args = append(w.args, n)
	return " LIMIT ?"
}

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

func scanRequest(rows *sql.Rows) (*mayfly.Request, error) {
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

// CreateRequest inserts r; ECONFLICT when its id exists.
func (t *tx) CreateRequest(r *mayfly.Request) error {
	args, err := requestArgs(r)
	if err != nil {
		return err
	}
	res, err := t.exec(`INSERT INTO requests (`+requestCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, args...)
	if err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	} else if n == 0 {
		return mayfly.Errorf(mayfly.ECONFLICT, "request %q already exists", r.ID)
	}
	return nil
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
	res, err := t.exec(`UPDATE requests SET reason = ?, duration_ns = ?, state = ?, policy = ?,
		approvals_required = ?, approver_groups = ?, steps = ?, step = ?, step_approvals = ?, approvers = ?,
		decider = ?, decision_reason = ?, decided_at = ?, lease_id = ?, extends_lease = ?, break_glass = ? WHERE id = ?`, args...)
	if err != nil {
		return fmt.Errorf("update request %s: %w", r.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update request %s: %w", r.ID, err)
	} else if n == 0 {
		return mayfly.Errorf(mayfly.ENOTFOUND, "request %q not found", r.ID)
	}
	return nil
}

// GetRequest returns the request with id; ENOTFOUND when there is none.
func (t *tx) GetRequest(id string) (*mayfly.Request, error) {
	rs, err := t.listRequests("SELECT "+requestCols+" FROM requests WHERE id = ?", id)
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
	q, args, err := requestsQuery(f)
	if err != nil {
		return nil, err
	}
	rs, err := t.listRequests(q, args...)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	return rs, nil
}

// requestsQuery is the query of ListRequests.
func requestsQuery(f mayfly.RequestFilter) (string, []any, error) {
	var w where
	addIn(&w, "id", f.IDs)
	if f.Requester != "" {
		w.add("requester = ?", f.Requester)
	}
	addIn(&w, "state", f.States)
	if f.Open {
		// Literally the condition of the requests_open partial index, so
		// the planner can use it.
		w.conds = append(w.conds, "(state = 'pending' OR (state = 'approved' AND lease_id = ''))")
	}
	if f.Viewer != "" {
		// What a non-admin may see, in the query, so that a limit counts
		// only what the viewer may see.
		cond := "requester = ? OR EXISTS (SELECT 1 FROM json_each(requests.approvers) AS a WHERE a.value = ?)"
		args := []any{f.Viewer, f.Viewer}
		if len(f.ViewerGroups) > 0 {
			in := placeholders(len(f.ViewerGroups))
			cond += " OR EXISTS (SELECT 1 FROM json_each(requests.approver_groups) AS g WHERE g.value IN (" + in + "))" +
				" OR EXISTS (SELECT 1 FROM json_each(requests.steps) AS s, json_each(s.value, '$.approver_groups') AS g WHERE g.value IN (" + in + "))"
			for range 2 {
				for _, g := range f.ViewerGroups {
					args = append(args, g)
				}
			}
		}
		w.add("("+cond+")", args...)
	}
	if err := addAfter(&w, "request", f.After); err != nil {
		return "", nil, err
	}
	q := "SELECT " + requestCols + " FROM requests" + w.String() + " ORDER BY created_at, id" + w.limit(f.Limit)
	return q, w.args, nil
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

func scanLease(rows *sql.Rows) (*mayfly.Lease, error) {
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
	res, err := t.exec(`INSERT INTO leases (`+leaseCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, args...)
	if err != nil {
		return fmt.Errorf("create lease %s: %w", l.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("create lease %s: %w", l.ID, err)
	} else if n == 0 {
		return mayfly.Errorf(mayfly.ECONFLICT, "lease %q already exists", l.ID)
	}
	if l.State == mayfly.LeaseProvisioning && !mayfly.IntentSyncSkipped(t.ctx) {
		t.intent = true
	}
	return nil
}

// UpdateLease writes every field of l but those fixed at creation (ID,
// RequestID, Requester, Target, Grant, Username, CreatedAt); ENOTFOUND when
// there is no such lease. Only the (state, due_at) index changes.
func (t *tx) UpdateLease(l *mayfly.Lease) error {
	args, err := leaseArgs(l)
	if err != nil {
		return err
	}
	args = append(args[leaseFixed:], l.ID)
	res, err := t.exec(`UPDATE leases SET state = ?, expires_at = ?, due_at = ?, ended_at = ?, end_reason = ?,
		revoke_attempts = ?, last_error = ?, secret_hmac = ? WHERE id = ?`, args...)
	if err != nil {
		return fmt.Errorf("update lease %s: %w", l.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update lease %s: %w", l.ID, err)
	} else if n == 0 {
		return mayfly.Errorf(mayfly.ENOTFOUND, "lease %q not found", l.ID)
	}
	return nil
}

// UpdateLeaseFrom writes l as UpdateLease does when the stored lease
// still holds prev's values (see mayfly.Tx).
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
	res, err := t.exec(`UPDATE leases SET state = ?, expires_at = ?, due_at = ?, ended_at = ?, end_reason = ?,
		revoke_attempts = ?, last_error = ?, secret_hmac = ? WHERE id = ? AND username = ? AND state = ?
		AND expires_at IS ? AND due_at IS ? AND ended_at IS ? AND end_reason = ? AND revoke_attempts = ?
		AND last_error = ? AND secret_hmac = ?`, args...)
	if err != nil {
		return fmt.Errorf("update lease %s: %w", l.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update lease %s: %w", l.ID, err)
	} else if n == 0 {
		return fmt.Errorf("update lease %s: %w", l.ID, mayfly.ErrLeaseChanged)
	}
	return nil
}

// SetLeaseUsername records the account a connector created for lease id.
func (t *tx) SetLeaseUsername(id, username string) error {
	res, err := t.exec(`UPDATE leases SET username = ? WHERE id = ?`, username, id)
	if err != nil {
		return fmt.Errorf("set username of lease %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("set username of lease %s: %w", id, err)
	} else if n == 0 {
		return mayfly.Errorf(mayfly.ENOTFOUND, "lease %q not found", id)
	}
	return nil
}

// GetLease returns the lease with id; ENOTFOUND when there is none.
func (t *tx) GetLease(id string) (*mayfly.Lease, error) {
	ls, err := t.listLeases("SELECT "+leaseCols+" FROM leases WHERE id = ?", id)
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
	q, args, err := leasesQuery(f)
	if err != nil {
		return nil, err
	}
	ls, err := t.listLeases(q, args...)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	return ls, nil
}

// leasesQuery is the query of ListLeases.
func leasesQuery(f mayfly.LeaseFilter) (string, []any, error) {
	var w where
	addIn(&w, "id", f.IDs)
	if f.RequestID != "" {
		w.add("request_id = ?", f.RequestID)
	}
	if f.Requester != "" {
		w.add("requester = ?", f.Requester)
	}
	if f.Target != "" {
		w.add("target = ?", f.Target)
	}
	if f.Username != "" {
		w.add("username = ?", f.Username)
	}
	addIn(&w, "state", f.States)
	if err := addAfter(&w, "lease", f.After); err != nil {
		return "", nil, err
	}
	q := "SELECT " + leaseCols + " FROM leases" + w.String() + " ORDER BY created_at, id" + w.limit(f.Limit)
	return q, w.args, nil
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
// state's range of the (state, due_at) index, so its
// cost depends on limit, not on the number of leases. No states, no leases.
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
	lim := limit
	if lim <= 0 {
		lim = -1
	}
	var out []*mayfly.Lease
	for i, s := range states {
		if slices.Contains(states[:i], s) {
			continue
		}
		var ls []*mayfly.Lease
		if afterArg == nil {
			ls, err = t.listLeases("SELECT "+leaseCols+` FROM leases
				WHERE state = ? AND due_at <= ? ORDER BY due_at, id LIMIT ?`, string(s), nowArg, lim)
		} else {
			ls, err = t.listLeases("SELECT "+leaseCols+` FROM leases
				WHERE state = ? AND due_at <= ? AND due_at >= ? AND (due_at > ? OR id > ?)
				ORDER BY due_at, id LIMIT ?`, string(s), nowArg, afterArg, afterArg, after.ID, lim)
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

// NextDue returns the earliest DueAt of leases in the given states, one
// index lookup per state; ok is false when there is none.
func (t *tx) NextDue(states []mayfly.LeaseState) (time.Time, bool, error) {
	var best sql.NullInt64
	for _, s := range states {
		var v int64
		ok, err := t.queryRow(`SELECT due_at FROM leases WHERE state = ? AND due_at IS NOT NULL
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

// countLeasesQuery reads the lease_counts table the triggers of migration
// 6 keep, not the leases.
const countLeasesQuery = "SELECT state, SUM(n) FROM lease_counts GROUP BY state HAVING SUM(n) > 0"

// CountLeases counts leases by state; states without leases are absent.
// It reads the counts kept as leases change, a few rows whatever the
// number of leases.
func (t *tx) CountLeases() (map[mayfly.LeaseState]int, error) {
	rows, err := t.query(countLeasesQuery)
	if err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	defer rows.Close()
	out := map[mayfly.LeaseState]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("count leases: %w", err)
		}
		out[mayfly.LeaseState(s)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	return out, nil
}

// Audit events.

const auditCols = `seq, time, actor, action, subject, target, request_id, lease_id, reason, source,
	data, prev_hash, hash`

// AppendAudit chains e to the last event (read by primary key) and
// inserts it: e.Seq is the last sequence number plus one, e.PrevHash the
// last hash ("" for the first event) and e.Hash e.ComputeHash().
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
	if !t.last.ok {
		ok, err := t.queryRow("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1", nil, &t.last.seq, &t.last.hash)
		if err != nil {
			return fmt.Errorf("append audit: read last event: %w", err)
		}
		if !ok {
			t.last.seq, t.last.hash = 0, ""
		}
		t.last.ok = true
	}
	e.Seq, e.PrevHash = t.last.seq+1, t.last.hash
	e.Hash = e.ComputeHash()
	if _, err := t.exec(`INSERT INTO audit_events (`+auditCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.Seq, at, e.Actor, e.Action, e.Subject, e.Target, e.RequestID, e.LeaseID, e.Reason, e.Source,
		data, e.PrevHash, e.Hash); err != nil {
		t.last = auditTail{}
		return fmt.Errorf("append audit event %d: %w", e.Seq, err)
	}
	t.last.seq, t.last.hash = e.Seq, e.Hash
	return nil
}

// ListAudit returns the events matching f in sequence order (newest first
// with f.Newest). Since is inclusive and Until exclusive.
func (t *tx) ListAudit(f mayfly.AuditFilter) ([]*mayfly.AuditEvent, error) {
	q, args, err := auditQuery(f)
	if err != nil {
		return nil, err
	}
	rows, err := t.query(q, args...)
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

// auditQuery is the query of ListAudit.
func auditQuery(f mayfly.AuditFilter) (string, []any, error) {
	var w where
	if f.AfterSeq > 0 {
		w.add("seq > ?", f.AfterSeq)
	}
	if f.UntilSeq > 0 {
		w.add("seq <= ?", f.UntilSeq)
	}
	if f.Actor != "" {
		w.add("actor = ?", f.Actor)
	}
	if f.Action != "" {
		w.add("action = ?", f.Action)
	}
	if f.Target != "" {
		w.add("target = ?", f.Target)
	}
	if f.LeaseID != "" {
		// The redundant condition lets SQLite use the partial index.
		w.add("lease_id = ? AND lease_id <> ''", f.LeaseID)
	}
	if f.RequestID != "" {
		w.add("request_id = ? AND request_id <> ''", f.RequestID)
	}
	if !f.Since.IsZero() {
		v, err := timeArg("since", f.Since)
		if err != nil {
			return "", nil, err
		}
		w.add("time >= ?", v)
	}
	if !f.Until.IsZero() {
		v, err := timeArg("until", f.Until)
		if err != nil {
			return "", nil, err
		}
		w.add("time < ?", v)
	}
	if f.Involving != "" {
		w.add("(actor = ? OR (request_id <> '' AND request_id IN (SELECT id FROM requests WHERE requester = ?)))", f.Involving, f.Involving)
	}
	order := " ORDER BY seq"
	if f.Newest {
		order += " DESC"
	}
	q := "SELECT " + auditCols + " FROM audit_events" + w.String() + order + w.limit(f.Limit)
	return q, w.args, nil
}

// Users and settings.

// GetUserStatus returns the stored status of a user, "" when none is stored.
func (t *tx) GetUserStatus(name string) (string, error) {
	var s string
	if _, err := t.queryRow("SELECT status FROM users WHERE name = ?", []any{name}, &s); err != nil {
		return "", fmt.Errorf("get user status: %w", err)
	}
	return s, nil
}

// SetUserStatus stores the status of a user.
func (t *tx) SetUserStatus(name, status string) error {
	if _, err := t.exec(`INSERT INTO users (name, status) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET status = excluded.status`, name, status); err != nil {
		return fmt.Errorf("set user status: %w", err)
	}
	return nil
}

// GetSetting returns the value stored under key; ENOTFOUND when there is
// none.
func (t *tx) GetSetting(key string) (string, error) {
	var v string
	ok, err := t.queryRow("SELECT value FROM settings WHERE key = ?", []any{key}, &v)
	if err != nil {
		return "", fmt.Errorf("get setting %s: %w", key, err)
	}
	if !ok {
		return "", mayfly.Errorf(mayfly.ENOTFOUND, "setting %q not found", key)
	}
	return v, nil
}

// PutSetting stores value under key, replacing any previous value.
func (t *tx) PutSetting(key, value string) error {
	if _, err := t.exec(`INSERT INTO settings (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("put setting %s: %w", key, err)
	}
	return nil
}

// UserStatuses returns every stored user status by name.
func (t *tx) UserStatuses() (map[string]string, error) {
	rows, err := t.query("SELECT name, status FROM users")
	if err != nil {
		return nil, fmt.Errorf("list user statuses: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, st string
		if err := rows.Scan(&n, &st); err != nil {
			return nil, fmt.Errorf("list user statuses: %w", err)
		}
		out[n] = st
	}
	return out, rows.Err()
}

// ListSettings returns the settings whose key starts with prefix.
func (t *tx) ListSettings(prefix string) (map[string]string, error) {
	rows, err := t.query("SELECT key, value FROM settings WHERE substr(key, 1, ?) = ?", len(prefix), prefix)
	if err != nil {
		return nil, fmt.Errorf("list settings %s: %w", prefix, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("list settings %s: %w", prefix, err)
		}
		out[k] = v
	}
	return out, rows.Err()
}

// DeleteSetting removes a setting; a missing key is not an error.
func (t *tx) DeleteSetting(key string) error {
	if _, err := t.exec("DELETE FROM settings WHERE key = ?", key); err != nil {
		return fmt.Errorf("delete setting %s: %w", key, err)
	}
	return nil
}

// DeleteAuditBefore removes the events with seq below the given one.
func (t *tx) DeleteAuditBefore(seq int64) (int64, error) {
	res, err := t.exec("DELETE FROM audit_events WHERE seq < ?", seq)
	t.last = auditTail{} // read again on the next append
	if err != nil {
		return 0, fmt.Errorf("delete audit events before %d: %w", seq, err)
	}
	return res.RowsAffected()
}
