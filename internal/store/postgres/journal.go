package postgres

import "fmt"

// PutJournalLines writes lines to journal name with the sequence numbers
// first, first+1, …; the caller holds the journal's lock (its head
// setting, read in this write transaction) and so knows the numbers free.
func (t *tx) PutJournalLines(name string, first int64, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	if _, err := t.exec(`INSERT INTO journals (name, seq, line)
		SELECT $1, $2 + u.i - 1, u.l FROM unnest($3::text[]) WITH ORDINALITY AS u(l, i)`, name, first, lines); err != nil {
		return fmt.Errorf("append to journal %s: %w", name, err)
	}
	return nil
}

// JournalLines returns the lines of journal name numbered after after, in
// order, with their numbers.
func (t *tx) JournalLines(name string, after int64) ([]int64, []string, error) {
	rows, err := t.query(`SELECT seq, line FROM journals WHERE name = $1 AND seq > $2 ORDER BY seq`, name, after)
	if err != nil {
		return nil, nil, fmt.Errorf("read journal %s: %w", name, err)
	}
	defer rows.Close()
	var seqs []int64
	var lines []string
	for rows.Next() {
		var s int64
		var l string
		if err := rows.Scan(&s, &l); err != nil {
			return nil, nil, fmt.Errorf("read journal %s: %w", name, err)
		}
		seqs, lines = append(seqs, s), append(lines, l)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read journal %s: %w", name, err)
	}
	return seqs, lines, nil
}

// TrimJournal deletes the lines of journal name numbered through through.
func (t *tx) TrimJournal(name string, through int64) error {
	if _, err := t.exec(`DELETE FROM journals WHERE name = $1 AND seq <= $2`, name, through); err != nil {
		return fmt.Errorf("trim journal %s: %w", name, err)
	}
	return nil
}

// SyncCommit makes this transaction's commit wait for the flush of the
// log, also when it began under mayfly.SkipIntentSync.
func (t *tx) SyncCommit() error {
	if _, err := t.exec(`SET LOCAL synchronous_commit = on`); err != nil {
		return fmt.Errorf("synchronous commit: %w", err)
	}
	return nil
}
