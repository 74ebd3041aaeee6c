package ssh

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// registry is the connector's record of the certificates it issued and
// revoked, kept as an append-only journal of JSON lines and compacted now
// and then. The journal is a file in the state directory (fileJournal) or,
// on a store replicas share, rows of the store (storeJournal). Every
// change holds the journal's lock and first reads what other processes (or
// other connectors for the same target) appended, so revocations are never
// lost between them.
type registry struct {
	j journal

	// The fields below are guarded by the journal's lock, taken only while
	// the connector's mutex is held.
	certs  map[uint64]*certRecord
	keyIDs map[string]time.Time // revoked key IDs → until
	lines  int
	// gen counts applied events, so readers can tell the content changed.
	gen uint64
}

// journal keeps a registry's lines.
type journal interface {
	// locked runs fn holding the journal's lock across processes; fn
	// calls the methods below. ctx bounds the wait for a store.
	locked(ctx context.Context, fn func() error) error
	// since returns the lines written since the last call; with reset,
	// they are the whole journal (the first call, or the journal was
	// replaced meanwhile).
	since() (lines [][]byte, reset bool, err error)
	// add appends lines, synced first when durable.
	add(lines [][]byte, durable bool) error
	// replace makes lines the whole journal.
	replace(lines [][]byte) error
	close() error
}

// peeker is a journal that can tell, cheaply and without its lock,
// whether anything was written since this process last read it.
type peeker interface {
	unchanged(ctx context.Context) (bool, error)
}

// certRecord is one issued certificate.
type certRecord struct {
	Serial     uint64   `json:"serial"`
	KeyID      string   `json:"key_id"`
	Username   string   `json:"username"`
	Principals []string `json:"principals"`
	HostUser   bool     `json:"host_user,omitempty"`
	// CA is the signing CA key, wire format.
	CA []byte `json:"ca"`
	// Key is the certified public key, wire format, recorded only for keys
	// Mayfly generated: those are used once, so revoking the key itself is
	// safe. A key the user brought may be certified again for a later lease.
	Key         []byte    `json:"key,omitempty"`
	ValidBefore time.Time `json:"valid_before"`
	Revoked     bool      `json:"revoked,omitempty"`
}

// event is one journal line.
type event struct {
	Issue  *certRecord `json:"issue,omitempty"`
	Revoke *revocation `json:"revoke,omitempty"`
	At     time.Time   `json:"at"`
}

// revocation revokes certificates by serial number and, optionally, every
// certificate with a key ID until a time.
type revocation struct {
	Serials []uint64  `json:"serials,omitempty"`
	KeyID   string    `json:"key_id,omitempty"`
	Until   time.Time `json:"until,omitzero"`
}

// compactSlack is how many journal lines beyond twice the live records
// trigger a compaction.
const compactSlack = 1024

func newRegistry(j journal) *registry {
	r := &registry{j: j}
	r.reset()
	return r
}

// openRegistry opens the registry kept in the file name.journal of dir.
func openRegistry(dir, name string) (*registry, error) {
	j, err := openFileJournal(dir, name)
	if err != nil {
		return nil, err
	}
	return newRegistry(j), nil
}

func (r *registry) close() error { return r.j.close() }

func (r *registry) reset() {
	r.certs = map[uint64]*certRecord{}
	r.keyIDs = map[string]time.Time{}
	r.lines = 0
	r.gen++
}

// locked runs fn holding the journal's lock, after catching up with it.
func (r *registry) locked(ctx context.Context, fn func() error) error {
	return r.j.locked(ctx, func() error {
		if err := r.catchUp(); err != nil {
			return fmt.Errorf("read state: %w", err)
		}
		return fn()
	})
}

// catchUp applies the journal lines written since the last look.
func (r *registry) catchUp() error {
	lines, reset, err := r.j.since()
	if err != nil {
		return err
	}
	if reset {
		r.reset()
	}
	for _, line := range lines {
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("journal line %d: %w", r.lines+1, err)
		}
		r.apply(e)
		r.lines++
	}
	return nil
}

func (r *registry) apply(e event) {
	r.gen++
	if c := e.Issue; c != nil {
		r.certs[c.Serial] = c
	}
	if v := e.Revoke; v != nil {
		for _, s := range v.Serials {
			if c, ok := r.certs[s]; ok {
				c.Revoked = true
			}
		}
		if v.KeyID != "" {
			if v.Until.After(r.keyIDs[v.KeyID]) {
				r.keyIDs[v.KeyID] = v.Until
			}
			for _, c := range r.certs {
				if c.KeyID == v.KeyID {
					c.Revoked = true
				}
			}
		}
	}
}

func marshalEvents(events []event) ([][]byte, error) {
	lines := make([][]byte, 0, len(events))
	for _, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		lines = append(lines, b)
	}
	return lines, nil
}

// append writes events to the journal and applies them; with durable it
// syncs them first. Call it inside locked.
func (r *registry) append(events []event, durable bool, now time.Time) error {
	if len(events) == 0 {
		return nil
	}
	lines, err := marshalEvents(events)
	if err != nil {
		return err
	}
	if err := r.j.add(lines, durable); err != nil {
		return err
	}
	for _, e := range events {
		r.apply(e)
	}
	r.lines += len(events)
	if r.lines > 2*(len(r.certs)+len(r.keyIDs))+compactSlack {
		return r.compact(now)
	}
	return nil
}

// compact drops expired records and rewrites the journal as a snapshot.
func (r *registry) compact(now time.Time) error {
	var events []event
	for s, c := range r.certs {
		if !c.ValidBefore.After(now) {
			delete(r.certs, s)
			continue
		}
		events = append(events, event{Issue: c, At: now})
	}
	for id, until := range r.keyIDs {
		if !until.After(now) {
			delete(r.keyIDs, id)
			continue
		}
		events = append(events, event{Revoke: &revocation{KeyID: id, Until: until}, At: now})
	}
	lines, err := marshalEvents(events)
	if err != nil {
		return err
	}
	if err := r.j.replace(lines); err != nil {
		return err
	}
	r.lines = len(lines)
	r.gen++
	return nil
}

// fileJournal is a journal kept in a file of the state directory, locked
// with flock on a lock file beside it.
type fileJournal struct {
	path     string
	lockFile *os.File
	ino      uint64
	off      int64
}

func openFileJournal(dir, name string) (*fileJournal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &fileJournal{path: filepath.Join(dir, name+".journal"), lockFile: lf}, nil
}

func (j *fileJournal) close() error { return j.lockFile.Close() }

func (j *fileJournal) locked(_ context.Context, fn func() error) error {
	if err := flock(j.lockFile, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock state: %w", err)
	}
	defer flock(j.lockFile, syscall.LOCK_UN)
	return fn()
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// since reads the lines appended since the last look. A compaction by
// another writer replaces the file, which shows as a new inode.
func (j *fileJournal) since() ([][]byte, bool, error) {
	f, err := os.OpenFile(j.path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if j.ino != 0 {
			j.ino, j.off = 0, 0
			return nil, true, nil
		}
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	reset := false
	ino := fi.Sys().(*syscall.Stat_t).Ino
	if ino != j.ino || fi.Size() < j.off {
		reset = j.ino != 0 || j.off != 0
		j.ino, j.off = ino, 0
	}
	if fi.Size() == j.off {
		return nil, reset, nil
	}
	if _, err := f.Seek(j.off, io.SeekStart); err != nil {
		return nil, false, err
	}
	var lines [][]byte
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				// A writer died mid-line while holding the lock: drop the
				// torn tail so the next append starts on a fresh line.
				if err := f.Truncate(j.off); err != nil {
					return nil, false, err
				}
			}
			return lines, reset, nil
		}
		if err != nil {
			return nil, false, err
		}
		j.off += int64(len(line))
		lines = append(lines, line[:len(line)-1])
	}
}

func (j *fileJournal) add(lines [][]byte, durable bool) error {
	var buf bytes.Buffer
	for _, l := range lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	created := j.ino == 0
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	fi, err := f.Stat()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if created {
		j.ino = fi.Sys().(*syscall.Stat_t).Ino
		if durable {
			syncDir(filepath.Dir(j.path))
		}
	}
	j.off = fi.Size()
	return nil
}

func (j *fileJournal) replace(lines [][]byte) error {
	var buf bytes.Buffer
	for _, l := range lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	if err := writeFileAtomic(j.path, buf.Bytes(), 0o600); err != nil {
		return err
	}
	fi, err := os.Stat(j.path)
	if err != nil {
		return err
	}
	j.ino = fi.Sys().(*syscall.Stat_t).Ino
	j.off = fi.Size()
	return nil
}

// krl builds the revocation list of what is revoked and not yet expired.
func (r *registry) krl(now time.Time) *krl {
	k := &krl{Generated: now, Comment: "mayfly"}
	byCA := map[string]*krlCerts{}
	for _, c := range r.certs {
		if !c.Revoked || !c.ValidBefore.After(now) {
			continue
		}
		cc := byCA[string(c.CA)]
		if cc == nil {
			cc = &krlCerts{CA: c.CA}
			byCA[string(c.CA)] = cc
		}
		cc.Serials = append(cc.Serials, c.Serial)
		if len(c.Key) > 0 {
			k.Keys = append(k.Keys, c.Key)
		}
	}
	// Key IDs are lease IDs, unique across CAs: revoke them under any CA,
	// which also covers a certificate this registry never recorded.
	anyCA := &krlCerts{}
	for id, until := range r.keyIDs {
		if until.After(now) {
			anyCA.KeyIDs = append(anyCA.KeyIDs, id)
		}
	}
	for _, cc := range byCA {
		k.Certs = append(k.Certs, *cc)
	}
	if len(anyCA.KeyIDs) > 0 {
		k.Certs = append(k.Certs, *anyCA)
	}
	return k
}

// writeFileAtomic replaces path with data: it writes a temporary file in
// the same directory, syncs it, renames it over path and syncs the
// directory, so readers see the old or the new content, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename or creation in dir durable; file systems that
// cannot sync a directory are left to their own guarantees.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}
