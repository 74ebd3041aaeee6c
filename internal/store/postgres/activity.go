package postgres

import (
	"fmt"
	"time"
)

// TouchLeases records the leases' last activity at a gateway, keeping the
// latest time.
func (t *tx) TouchLeases(at map[string]time.Time) error {
	if len(at) == 0 {
		return nil
	}
	ids := make([]string, 0, len(at))
	times := make([]int64, 0, len(at))
	for id, a := range at {
		v, err := timeArg("activity", a)
		if err != nil || v == nil {
			continue // out of range or zero: nothing to record
		}
		ids, times = append(ids, id), append(times, v.(int64))
	}
	if len(ids) == 0 {
		return nil
	}
	// One statement for the batch; sorted ids would not matter here: a
	// lease row is touched by one replica's flusher at a time at most.
	if _, err := t.exec(`UPDATE leases l SET activity_at = u.at
		FROM unnest($1::text[], $2::bigint[]) AS u(id, at)
		WHERE l.id = u.id AND (l.activity_at IS NULL OR l.activity_at < u.at)`, ids, times); err != nil {
		return fmt.Errorf("record lease activity: %w", err)
	}
	return nil
}

// LeaseActivity returns the last activity recorded of the leases ids.
func (t *tx) LeaseActivity(ids []string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := t.query(`SELECT id, activity_at FROM leases WHERE id = ANY($1) AND activity_at IS NOT NULL`, ids)
	if err != nil {
		return nil, fmt.Errorf("read lease activity: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var at int64
		if err := rows.Scan(&id, &at); err != nil {
			return nil, fmt.Errorf("read lease activity: %w", err)
		}
		out[id] = time.Unix(0, at).UTC()
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read lease activity: %w", err)
	}
	return out, nil
}
