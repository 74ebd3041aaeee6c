package ssh

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// JournalTx is what a store transaction offers for keeping journals in the
// store (the PostgreSQL store's does): numbered lines per journal name.
type JournalTx interface {
	mayfly.Tx
	// PutJournalLines appends lines numbered from first and sets the
	// journal's head setting (headKey) to head, in one write that may be
	// sent with the next statement or the COMMIT (its error then fails
	// the transaction).
	PutJournalLines(name string, first int64, lines []string, headKey, head string) error
	JournalLines(name string, after int64) ([]int64, []string, error)
	// JournalHead reads the head setting headKey, locked, and the lines
	// numbered after after, read once the lock is granted, in one round
	// trip; found is false when the setting does not exist (nothing is
	// locked then).
	JournalHead(headKey, name string, after int64) (head string, found bool, seqs []int64, lines []string, err error)
	TrimJournal(name string, through int64) error
	// SyncCommit makes the commit wait for the log's flush, in a
	// transaction begun under mayfly.SkipIntentSync.
	SyncCommit() error
}

// storeTimeout bounds each transaction on the shared store.
const storeTimeout = 30 * time.Second

// storeJournal is a journal kept in a store that replicas share: its lines
// are rows, and its head is the setting "journal.<name>" ("<epoch>
// <last seq>"), which a write transaction locks as it reads it. A
// compaction trims the rows and starts a new epoch, which tells readers to
// read everything again.
type storeJournal struct {
	st   mayfly.Store
	name string
	// legacy, when set, is a journal file whose lines are copied into the
	// store when the store has none yet (a state directory from before the
	// store kept the state).
	legacy *fileJournal

	// seen is what this process has read: epoch and last line; a negative
	// epoch forces a full read.
	seenEpoch, seenSeq int64
	// Set inside locked.
	tx                 JournalTx
	headEpoch, headSeq int64
	retried, synced    bool
	// read holds the lines read with the head, numbered after readAfter
	// in the epoch seen (nil: since reads them).
	read *journalRead
}

type journalRead struct {
	after int64
	seqs  []int64
	lines []string
}

func newStoreJournal(st mayfly.Store, name string, legacy *fileJournal) *storeJournal {
	return &storeJournal{st: st, name: name, legacy: legacy, seenEpoch: -1}
}

func (j *storeJournal) setting() string { return "journal." + j.name }

func (j *storeJournal) close() error {
	if j.legacy != nil {
		return j.legacy.close()
	}
	return nil
}

func (j *storeJournal) locked(ctx context.Context, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	runs := 0
	// The commit waits for the log's flush only when a durable change was
	// made (add with durable, replace): an issued certificate lost with its
	// record is still revoked by its key ID, as with the file.
	err := j.st.Update(mayfly.SkipIntentSync(ctx), func(tx mayfly.Tx) error {
		runs++
		jt, ok := tx.(JournalTx)
		if !ok {
			return errors.New("this store keeps no journals")
		}
		j.tx, j.retried, j.synced, j.read = jt, runs > 1, false, nil
		defer func() { j.tx, j.read = nil, nil }()
		// The head, locked, and the lines this process has not read, in
		// one round trip: they are what since returns, unless the head
		// says the journal was compacted meanwhile.
		after := j.seenSeq
		if j.retried || j.seenEpoch < 0 {
			after = 0
		}
		v, found, seqs, lines, err := jt.JournalHead(j.setting(), j.name, after)
		if err != nil {
			return err
		}
		if !found {
			// Missing: GetSetting locks the key itself, so that of replicas
			// starting the journal at once one goes first.
			v, err = tx.GetSetting(j.setting())
		}
		switch {
		case mayfly.ErrorCode(err) == mayfly.ENOTFOUND:
			j.headEpoch, j.headSeq = 0, 0
			if err := j.importLegacy(); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			if j.headEpoch, j.headSeq, err = parseHead(v); err != nil {
				return fmt.Errorf("journal %s: head %q: %w", j.name, v, err)
			}
			if found {
				j.read = &journalRead{after: after, seqs: seqs, lines: lines}
			}
		}
		return fn()
	})
	if err != nil {
		// What fn applied may not be committed: read everything next time.
		j.seenEpoch = -1
	}
	return err
}

// unchanged reports whether the journal's head is still what this
// process last read, without locking it: one read-only statement, for a
// follower to skip the locking transaction when nothing changed. A head
// it cannot read or parse counts as changed, for locked to report.
func (j *storeJournal) unchanged(ctx context.Context) (bool, error) {
	if j.seenEpoch < 0 {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	var v string
	err := j.st.View(ctx, func(tx mayfly.Tx) error {
		var err error
		v, err = tx.GetSetting(j.setting())
		return err
	})
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND {
		// Nothing written yet: unchanged if that is what was read.
		return j.seenEpoch == 0 && j.seenSeq == 0, nil
	}
	if err != nil {
		return false, err
	}
	epoch, seq, err := parseHead(v)
	return err == nil && epoch == j.seenEpoch && seq == j.seenSeq, nil
}

func parseHead(v string) (epoch, seq int64, err error) {
	e, s, ok := strings.Cut(v, " ")
	if !ok {
		return 0, 0, errors.New("want two numbers")
	}
	if epoch, err = strconv.ParseInt(e, 10, 64); err != nil {
		return 0, 0, err
	}
	seq, err = strconv.ParseInt(s, 10, 64)
	return epoch, seq, err
}

func (j *storeJournal) head() string {
	return strconv.FormatInt(j.headEpoch, 10) + " " + strconv.FormatInt(j.headSeq, 10)
}

// importLegacy copies the legacy file journal's lines into the store, which
// has none for this journal yet.
func (j *storeJournal) importLegacy() error {
	if j.legacy == nil {
		return nil
	}
	var lines [][]byte
	err := j.legacy.locked(context.Background(), func() error {
		var err error
		lines, _, err = j.legacy.since()
		j.legacy.ino, j.legacy.off = 0, 0
		return err
	})
	if err != nil {
		return fmt.Errorf("journal %s: import %s: %w", j.name, j.legacy.path, err)
	}
	if len(lines) == 0 {
		return nil
	}
	j.headEpoch = 1
	return j.add(lines, true)
}

func (j *storeJournal) since() ([][]byte, bool, error) {
	reset := j.retried || j.seenEpoch != j.headEpoch
	after := j.seenSeq
	if reset {
		after = 0
	}
	var seqs []int64
	var lines []string
	if r := j.read; r != nil && r.after == after {
		// Read with the head.
		seqs, lines = r.seqs, r.lines
	} else {
		var err error
		if seqs, lines, err = j.tx.JournalLines(j.name, after); err != nil {
			return nil, false, err
		}
	}
	j.read = nil
	j.seenEpoch, j.seenSeq = j.headEpoch, after
	if n := len(seqs); n > 0 {
		j.seenSeq = seqs[n-1]
	}
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = []byte(l)
	}
	return out, reset, nil
}

func (j *storeJournal) add(lines [][]byte, durable bool) error {
	if durable && !j.synced {
		if err := j.tx.SyncCommit(); err != nil {
			return err
		}
		j.synced = true
	}
	ls := make([]string, len(lines))
	for i, l := range lines {
		ls[i] = string(l)
	}
	first := j.headSeq + 1
	j.headSeq += int64(len(ls))
	if err := j.tx.PutJournalLines(j.name, first, ls, j.setting(), j.head()); err != nil {
		return err
	}
	if j.seenEpoch == j.headEpoch {
		j.seenSeq = j.headSeq
	}
	return nil
}

func (j *storeJournal) replace(lines [][]byte) error {
	if err := j.tx.TrimJournal(j.name, j.headSeq); err != nil {
		return err
	}
	j.headEpoch++
	j.seenEpoch = j.headEpoch
	return j.add(lines, true)
}
