package postgres

import (
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Replicas on one store: claims of due leases, leader leases and
// heartbeats (migration 2).

// ClaimDue returns the due leases, as DueLeases does, that no other holder
// has a live claim on, and claims them for holder until until. The store
// locks the leases it reads (FOR UPDATE SKIP LOCKED), so replicas claiming
// at once never claim the same lease: one skips what the other is
// claiming, then sees its claim. A claim of
// holder's own that still runs for more than half of its term is not
// written again.
func (t *tx) ClaimDue(now time.Time, states []mayfly.LeaseState, holder string, until time.Time, after mayfly.DueCursor, limit int) ([]*mayfly.Lease, error) {
	if holder == "" {
		return nil, mayfly.Errorf(mayfly.EINVALID, "claim due leases: holder is required")
	}
	if !until.After(now) {
		return nil, mayfly.Errorf(mayfly.EINVALID, "claim due leases: the claim must end after now")
	}
	nowArg, err := timeArg("now", now)
	if err != nil {
		return nil, err
	}
	untilArg, err := timeArg("claim deadline", until)
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
				WHERE state = $1 AND due_at <= $2 AND (claimed_by IS NULL OR claim_until < $2 OR claimed_by = $3)
				ORDER BY due_at, id LIMIT $4 FOR UPDATE SKIP LOCKED`, string(s), nowArg, holder, lim)
		} else {
			ls, err = t.listLeases("SELECT "+leaseCols+` FROM leases
				WHERE state = $1 AND due_at <= $2 AND (due_at, id) > ($3, $4)
					AND (claimed_by IS NULL OR claim_until < $2 OR claimed_by = $5)
				ORDER BY due_at, id LIMIT $6 FOR UPDATE SKIP LOCKED`, string(s), nowArg, afterArg, after.ID, holder, lim)
		}
		if err != nil {
			return nil, fmt.Errorf("claim due leases: %w", err)
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
	if len(out) == 0 {
		return out, nil
	}
	// One statement for all the leases; a claim of holder's own that
	// still runs past half of the new term is left as it is.
	ids := make([]string, len(out))
	for i, l := range out {
		ids[i] = l.ID
	}
	half := now.Add(until.Sub(now) / 2).UnixNano()
	if _, err := t.exec(`UPDATE leases SET claimed_by = $1, claim_until = $2
		WHERE id = ANY($3) AND (claimed_by IS DISTINCT FROM $1 OR claim_until IS NULL OR claim_until < $4)`,
		holder, untilArg, ids, half); err != nil {
		return nil, fmt.Errorf("claim due leases: %w", err)
	}
	return out, nil
}

var (
	_ mayfly.ClaimReleaser = (*tx)(nil)
	_ mayfly.ClaimRenewer  = (*tx)(nil)
)

// RenewClaims extends holder's claims of the leases ids to until, in one
// statement.
func (t *tx) RenewClaims(holder string, ids []string, until time.Time) (int, error) {
	if holder == "" {
		return 0, mayfly.Errorf(mayfly.EINVALID, "renew claims: holder is required")
	}
	untilArg, err := timeArg("claim deadline", until)
	if err != nil {
		return 0, err
	}
	if untilArg == nil {
		return 0, mayfly.Errorf(mayfly.EINVALID, "renew claims: a deadline is required")
	}
	if len(ids) == 0 {
		return 0, nil
	}
	// The rows are locked in id order and those locked now are skipped:
	// the same replica's transaction recording outcomes may hold some of
	// them (it clears their claims anyway), and locking in another order
	// than it would deadlock.
	tag, err := t.exec(`UPDATE leases SET claim_until = $1 WHERE id IN (
		SELECT id FROM leases WHERE id = ANY($2) AND claimed_by = $3 ORDER BY id FOR UPDATE SKIP LOCKED)`, untilArg, ids, holder)
	if err != nil {
		return 0, fmt.Errorf("renew claims of %s: %w", holder, err)
	}
	return int(tag.RowsAffected()), nil
}

// ReleaseClaims removes holder's claims of the leases ids.
func (t *tx) ReleaseClaims(holder string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := t.exec(`UPDATE leases SET claimed_by = NULL, claim_until = NULL WHERE id = ANY($1) AND claimed_by = $2`, ids, holder); err != nil {
		return fmt.Errorf("release claims of %s: %w", holder, err)
	}
	return nil
}

// AcquireLeader takes or renews the leader lease name for holder.
func (t *tx) AcquireLeader(name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	if name == "" || holder == "" {
		return false, mayfly.Errorf(mayfly.EINVALID, "acquire leader: name and holder are required")
	}
	if ttl <= 0 {
		return false, mayfly.Errorf(mayfly.EINVALID, "acquire leader %s: ttl must be positive", name)
	}
	nowArg, err := timeArg("now", now)
	if err != nil {
		return false, err
	}
	untilArg, err := timeArg("leader lease end", now.Add(ttl))
	if err != nil {
		return false, err
	}
	if nowArg == nil {
		return false, mayfly.Errorf(mayfly.EINVALID, "acquire leader %s: now is required", name)
	}
	tag, err := t.exec(`INSERT INTO leaders (name, holder, until) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
		WHERE leaders.holder = excluded.holder OR leaders.until < $4`, name, holder, untilArg, nowArg)
	if err != nil {
		return false, fmt.Errorf("acquire leader %s: %w", name, err)
	}
	return tag.RowsAffected() > 0, nil
}

// ReleaseLeader gives up holder's leader lease name.
func (t *tx) ReleaseLeader(name, holder string) error {
	if _, err := t.exec(`DELETE FROM leaders WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("release leader %s: %w", name, err)
	}
	return nil
}

// ListLeaders returns every leader lease by name.
func (t *tx) ListLeaders() ([]*mayfly.Leader, error) {
	rows, err := t.query(`SELECT name, holder, until FROM leaders ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list leaders: %w", err)
	}
	defer rows.Close()
	var out []*mayfly.Leader
	for rows.Next() {
		var l mayfly.Leader
		var until sql.NullInt64
		if err := rows.Scan(&l.Name, &l.Holder, &until); err != nil {
			return nil, fmt.Errorf("list leaders: %w", err)
		}
		l.Until = timeOf(until)
		out = append(out, &l)
	}
	return out, rows.Err()
}

// Heartbeat records r.
func (t *tx) Heartbeat(r *mayfly.Replica) error {
	if r.ID == "" {
		return mayfly.Errorf(mayfly.EINVALID, "heartbeat: replica id is required")
	}
	started, err := timeArg("started_at", r.StartedAt)
	if err != nil {
		return err
	}
	seen, err := timeArg("last_seen", r.LastSeen)
	if err != nil {
		return err
	}
	if _, err := t.exec(`INSERT INTO replicas (id, address, version, started_at, last_seen) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version,
			started_at = excluded.started_at, last_seen = excluded.last_seen`,
		r.ID, r.Address, r.Version, started, seen); err != nil {
		return fmt.Errorf("heartbeat of %s: %w", r.ID, err)
	}
	return nil
}

// ListReplicas returns the replicas by id.
func (t *tx) ListReplicas() ([]*mayfly.Replica, error) {
	rows, err := t.query(`SELECT id, address, version, started_at, last_seen FROM replicas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	defer rows.Close()
	var out []*mayfly.Replica
	for rows.Next() {
		var r mayfly.Replica
		var started, seen sql.NullInt64
		if err := rows.Scan(&r.ID, &r.Address, &r.Version, &started, &seen); err != nil {
			return nil, fmt.Errorf("list replicas: %w", err)
		}
		r.StartedAt, r.LastSeen = timeOf(started), timeOf(seen)
		out = append(out, &r)
	}
	return out, rows.Err()
}

// DeleteReplica removes the replica id's record.
func (t *tx) DeleteReplica(id string) error {
	if _, err := t.exec(`DELETE FROM replicas WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete replica %s: %w", id, err)
	}
	return nil
}
