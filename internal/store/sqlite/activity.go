package sqlite

import (
	"encoding/json"
	"fmt"
	"time"
)

// TouchLeases records the leases' last activity at a gateway, keeping the
// latest time.
func (t *tx) TouchLeases(at map[string]time.Time) error {
	if len(at) == 0 {
		return nil
	}
	type row struct {
		ID string `json:"id"`
		At int64  `json:"at"`
	}
	rows := make([]row, 0, len(at))
	for id, a := range at {
		if !a.IsZero() {
			rows = append(rows, row{id, a.UnixNano()})
		}
	}
	b, err := json.Marshal(rows)
	if err != nil {
		return err
	}
	if _, err := t.exec(`UPDATE leases SET activity_at = u.at
		FROM (SELECT value ->> 'id' AS id, value ->> 'at' AS at FROM json_each(?)) AS u
		WHERE leases.id = u.id AND (leases.activity_at IS NULL OR leases.activity_at < u.at)`, string(b)); err != nil {
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
	b, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	rows, err := t.query(`SELECT id, activity_at FROM leases WHERE id IN (SELECT value FROM json_each(?)) AND activity_at IS NOT NULL`, string(b))
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
