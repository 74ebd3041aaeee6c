package postgres

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// deferJournalWrite sends q with the transaction's next statement, or
// with its COMMIT: nothing the journal does next depends on its result,
// and its error still fails the transaction (what says so: what).
func (t *tx) deferJournalWrite(what, q string, args ...any) error {
	if !t.write {
		return errReadOnly
	}
	t.deferred = append(t.deferred, deferredWrite{q: q, args: args, check: func(_ pgconn.CommandTag, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}})
	return nil
}

// PutJournalLines writes lines to journal name with the sequence numbers
// first, first+1, …, and sets the journal's head setting to head; the
// caller holds the journal's lock (its head setting, read in this write
// transaction) and so knows the numbers free. Both are sent with the
// transaction's next statement or its COMMIT.
func (t *tx) PutJournalLines(name string, first int64, lines []string, headKey, head string) error {
	if len(lines) == 0 {
		return t.deferJournalWrite("journal "+name+": head", `INSERT INTO settings (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, headKey, head)
	}
	return t.deferJournalWrite("append to journal "+name, `WITH lines AS (INSERT INTO journals (name, seq, line)
		SELECT $1, $2 + u.i - 1, u.l FROM unnest($3::text[]) WITH ORDINALITY AS u(l, i))
		INSERT INTO settings (key, value) VALUES ($4, $5) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		name, first, lines, headKey, head)
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
	return t.deferJournalWrite("synchronous commit", `SET LOCAL synchronous_commit = on`)
}

// JournalHead reads, in one round trip, the journal's head setting
// (headKey), locked until the transaction ends in a write transaction, and
// the lines of journal name numbered after after. The lines are read once
// the lock is granted, by a statement of their own, so they include every
// line the holder before committed (READ COMMITTED). found is false when
// the setting does not exist: nothing is locked then, and the caller
// reads it with GetSetting, which locks the missing key.
func (t *tx) JournalHead(headKey, name string, after int64) (head string, found bool, seqs []int64, lines []string, err error) {
	var b pgx.Batch
	n := t.queuePrefix(&b)
	b.Queue("SELECT value FROM settings WHERE key = $1"+t.forUpdate(), headKey)
	b.Queue(`SELECT seq, line FROM journals WHERE name = $1 AND seq > $2 ORDER BY seq`, name, after)
	br := t.q.SendBatch(t.ctx, &b)
	defer br.Close()
	if err := t.prefixResults(br, n); err != nil {
		return "", false, nil, nil, err
	}
	switch err := br.QueryRow().Scan(&head); {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return "", false, nil, nil, fmt.Errorf("journal %s: head: %w", name, err)
	default:
		found = true
	}
	rows, err := br.Query()
	if err != nil {
		return "", false, nil, nil, fmt.Errorf("read journal %s: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var s int64
		var l string
		if err := rows.Scan(&s, &l); err != nil {
			return "", false, nil, nil, fmt.Errorf("read journal %s: %w", name, err)
		}
		seqs, lines = append(seqs, s), append(lines, l)
	}
	if err := rows.Err(); err != nil {
		return "", false, nil, nil, fmt.Errorf("read journal %s: %w", name, err)
	}
	return head, found, seqs, lines, nil
}
