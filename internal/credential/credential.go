// Package credential keeps the admin credentials of targets ("remote
// operation credentials") sealed in the store and rotates them: Mayfly
// changes its own admin account's password on the target to a random one
// nobody has seen, verifies it by logging in with it, and stores it sealed.
//
// A rotation is two-phase, so a crash at any point leaves a credential
// that works: the new password is stored sealed as pending before the
// target is touched (pending), then the target is changed (changed), then
// a login with it is verified and it becomes the current one (committed).
// A pending rotation found later (at start, by the watcher, before the next
// rotation) is resolved by trying the pending credential, then the current
// one. One rotation or resolution runs at a time per target, under a lock
// kept in the store, so replicas sharing a store never race.
//
// Every replica reads the credentials from the store and watches them, so
// a credential set or rotated on one replica reaches the others within the
// watch interval. Credentials never appear in errors, logs or audit events.
package credential

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/seal"
)

// Timing of rotations.
const (
	// LockTTL is how long a rotation's lock lasts: a replica that died
	// mid-rotation holds it no longer, after which another resolves it.
	LockTTL = 30 * time.Second
	// rotateTimeout bounds one rotation; it is shorter than LockTTL, so a
	// rotation never outlives its lock.
	rotateTimeout = 20 * time.Second
)

// Kind is what the manager needs of a target kind whose admin credential
// it keeps. The registry of kinds is built in main.
type Kind struct {
	// New builds a connector for t.
	New func(t mayfly.Target, getenv func(string) string) (mayfly.Connector, error)
	// InConfig reports whether t's configuration gives the credential
	// itself (dsn, dsn_env, admin_password...).
	InConfig func(t mayfly.Target) bool
	// Apply puts cred into t in place of the configuration's own.
	Apply func(t *mayfly.Target, cred string)
	// WithPassword returns cred with the admin password replaced.
	WithPassword func(cred, password string) (string, error)
	// Describe says what the credential is, for messages ("the admin DSN").
	Describe string
	// Full is true when the kind's connectors implement
	// mayfly.PreparedProvisioner, BatchRevoker and Extender.
	Full bool
}

// PasswordChanger is a connector that can change the password of the
// admin account it logs in as.
type PasswordChanger interface {
	ChangeAdminPassword(ctx context.Context, password string) error
}

// Options configure a Manager.
type Options struct {
	Store mayfly.Store
	// Keys seal and open credentials; nil when no master key is
	// configured (then only the configuration's credentials are used).
	Keys   *seal.Keyring
	Kinds  map[string]Kind
	Getenv func(string) string
	Logger *slog.Logger
	Clock  mayfly.Clock
	// Holder identifies this replica in rotation locks.
	Holder string
	// Committed is called after each commit of an audit event.
	Committed func()
	// ReadOnly makes the manager only read the store, as a diagnosis run
	// beside the server does: Connector leaves a pending rotation for the
	// server to resolve and uses the pending credential when it logs in,
	// the current one otherwise.
	ReadOnly bool
	// AfterStep, when set, is called after each step of a rotation (one
	// of Steps). It is there for fault injection: the server's
	// MAYFLY_FAILPOINT=crash-after-rotation:STEP kills the process there.
	AfterStep func(step string)
}

// Manager keeps the sealed admin credentials of the targets and the
// connectors that use them.
type Manager struct {
	o Options

	mu      sync.Mutex
	targets map[string]*managed
	locked  map[string]bool // targets whose rotation lock a call in this process holds
	retired sync.WaitGroup

	// failpoint, when set (tests only), is called after each step of a
	// rotation; an error stops the rotation there as a crash would,
	// leaving its lock held.
	failpoint func(step string) error
}

type managed struct {
	cfg     mayfly.Target
	kind    Kind
	conn    *Conn
	version int64 // of the stored record the connector uses; 0: the configuration's
}

// New returns a manager.
func New(o Options) *Manager {
	if o.Clock == nil {
		o.Clock = mayfly.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Committed == nil {
		o.Committed = func() {}
	}
	return &Manager{o: o, targets: map[string]*managed{}, locked: map[string]bool{}}
}

// Supports reports whether targets of kind can take a sealed credential.
func (m *Manager) Supports(kind string) bool {
	_, ok := m.o.Kinds[kind]
	return ok
}

// Kinds lists the kinds that take a sealed credential, sorted.
func (m *Manager) Kinds() []string {
	var ks []string
	for k := range m.o.Kinds {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// record is what the store keeps per target, under settings key
// "credential/<target>". Current and Pending are sealed.
type record struct {
	Version   int64     `json:"version"`
	Current   string    `json:"current"`
	Pending   string    `json:"pending,omitempty"`
	Phase     string    `json:"phase,omitempty"` // "pending" or "changed" while a rotation runs
	SetAt     time.Time `json:"set_at"`
	RotatedAt time.Time `json:"rotated_at,omitzero"`
}

// Rotation phases.
const (
	phasePending = "pending" // new password stored; the target not yet changed
	phaseChanged = "changed" // the target changed; the new password not yet verified
)

func settingKey(target string) string { return "credential/" + target }
func purpose(target string) string    { return "target-credential/" + target }
func lockName(target string) string   { return "credential/" + target }

func getRecord(tx mayfly.Tx, target string) (*record, error) {
	v, err := tx.GetSetting(settingKey(target))
	if mayfly.ErrorCode(err) == mayfly.ENOTFOUND || (err == nil && v == "") {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return nil, mayfly.Errorf(mayfly.EINTERNAL, "stored credential of target %q is malformed", target)
	}
	return &r, nil
}

func (m *Manager) load(ctx context.Context, target string) (*record, error) {
	var r *record
	err := m.o.Store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		r, err = getRecord(tx, target)
		return err
	})
	return r, err
}

// write stores r in place of the version it was read at (r.Version),
// incrementing it, with the audit event e when not nil.
func (m *Manager) write(ctx context.Context, target string, r *record, e *mayfly.AuditEvent) error {
	err := m.o.Store.Update(ctx, func(tx mayfly.Tx) error {
		cur, err := getRecord(tx, target)
		if err != nil {
			return err
		}
		var v int64
		if cur != nil {
			v = cur.Version
		}
		if v != r.Version {
			return mayfly.Errorf(mayfly.ECONFLICT, "the credential of target %q changed meanwhile", target)
		}
		nr := *r
		nr.Version++
		b, err := json.Marshal(nr)
		if err != nil {
			return err
		}
		if err := tx.PutSetting(settingKey(target), string(b)); err != nil {
			return err
		}
		if e != nil {
			e.Time, e.Subject, e.Target = m.o.Clock.Now().UTC(), "target:"+target, target
			if e.Actor == "" {
				e.Actor = "mayfly"
			}
			return tx.AppendAudit(e)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.Version++
	if e != nil {
		m.o.Committed()
	}
	return nil
}

// lock takes the rotation lock of target for this replica; false when
// another holds it.
//
// The store's lock is held by this replica's id, which another call in
// this process would take again: a rotation and the watcher resolving a
// crashed one (or two rotations asked of this replica at once) are kept
// apart in the process first.
func (m *Manager) lock(ctx context.Context, target string) (bool, error) {
	m.mu.Lock()
	if m.locked[target] {
		m.mu.Unlock()
		return false, nil
	}
	m.locked[target] = true
	m.mu.Unlock()
	var held bool
	err := m.o.Store.Update(ctx, func(tx mayfly.Tx) error {
		var err error
		held, err = tx.AcquireLeader(lockName(target), m.o.Holder, m.o.Clock.Now().UTC(), LockTTL)
		return err
	})
	if err != nil || !held {
		m.mu.Lock()
		delete(m.locked, target)
		m.mu.Unlock()
	}
	return held, err
}

func (m *Manager) unlock(target string) {
	defer func() {
		m.mu.Lock()
		delete(m.locked, target)
		m.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.o.Store.Update(ctx, func(tx mayfly.Tx) error { return tx.ReleaseLeader(lockName(target), m.o.Holder) })
	if err != nil {
		m.o.Logger.Warn("credential: release the rotation lock", "target", target, "err", err)
	}
}

// open opens a sealed credential of target.
func (m *Manager) open(target, sealed string) (string, error) {
	if m.o.Keys == nil {
		return "", noKey(target)
	}
	b, err := m.o.Keys.Open(purpose(target), sealed)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func noKey(target string) error {
	return mayfly.Errorf(mayfly.EINVALID, "target %q: its admin credential is stored sealed, but no master key is configured (seal.key_file or seal.key_env)", target)
}

// build makes a connector for t using cred. Its error never holds cred.
func (m *Manager) build(t mayfly.Target, k Kind, cred string) (mayfly.Connector, error) {
	k.Apply(&t, cred)
	c, err := k.New(t, m.o.Getenv)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "%s", scrub(mayfly.ErrorMessageOrText(err), cred))
	}
	return c, nil
}

// checked builds a connector with cred and checks it logs in.
func (m *Manager) checked(ctx context.Context, t mayfly.Target, k Kind, cred string) (mayfly.Connector, error) {
	c, err := m.build(t, k, cred)
	if err != nil {
		return nil, err
	}
	if err := c.Check(ctx); err != nil {
		c.Close()
		return nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "%s", scrub(mayfly.ErrorMessageOrText(err), cred))
	}
	return c, nil
}

// scrub removes a credential, and the password in it, from text.
func scrub(text, cred string) string {
	if cred == "" {
		return text
	}
	return strings.ReplaceAll(text, cred, "xxxxx")
}

// Connector returns the connector of target t, using its sealed
// credential when one is stored and the configuration's otherwise, and
// keeps it current as the stored credential changes. A pending rotation
// is resolved first when no other replica is busy with it.
func (m *Manager) Connector(ctx context.Context, t mayfly.Target) (mayfly.Connector, error) {
	k, ok := m.o.Kinds[t.Kind]
	if !ok {
		return nil, mayfly.Errorf(mayfly.EINVALID, "target %q: kind %q keeps no sealed credential", t.Name, t.Kind)
	}
	rec, err := m.load(ctx, t.Name)
	if err != nil {
		return nil, fmt.Errorf("read the stored credential of target %q: %w", t.Name, err)
	}
	if rec != nil && m.o.Keys == nil {
		return nil, noKey(t.Name)
	}
	var inner mayfly.Connector
	var version int64
	switch {
	case rec == nil && !k.InConfig(t):
		// The target waits for `set-credential`; until then every use of
		// it fails with this error.
		err := mayfly.Errorf(mayfly.EUNAVAILABLE, "target %q: no admin credential: the configuration gives none (%s) and none is stored sealed; "+
			"store one with `mayfly targets set-credential %s` (it needs seal.key_file or seal.key_env)", t.Name, k.Describe, t.Name)
		if m.o.Keys == nil {
			return nil, mayfly.Errorf(mayfly.EINVALID, "%s", err.Message)
		}
		m.o.Logger.Warn("credential: target has no admin credential yet; it is unusable until one is stored", "target", t.Name)
		inner = mayfly.RefusingConnector{Err: err} // says how to store a credential
	case rec == nil:
		if inner, err = k.New(t, m.o.Getenv); err != nil {
			return nil, err
		}
	default:
		if k.InConfig(t) {
			m.o.Logger.Warn("credential: the configuration's admin credential is ignored: a sealed one is stored; remove it from the configuration", "target", t.Name)
		}
		if rec.Pending != "" && !m.o.ReadOnly {
			if r2, err := m.tryResolve(ctx, t, k); err != nil {
				m.o.Logger.Warn("credential: a pending rotation is not resolved yet", "target", t.Name, "err", mayfly.ErrorMessageOrText(err))
			} else {
				rec = r2
			}
		}
		if inner, err = m.effective(ctx, t, k, rec); err != nil {
			return nil, err
		}
		version = rec.Version
	}
	c := &Conn{}
	c.set(inner)
	m.mu.Lock()
	m.targets[t.Name] = &managed{cfg: t, kind: k, conn: c, version: version}
	m.mu.Unlock()
	if k.Full {
		return FullConn{c}, nil
	}
	return c, nil
}

// effective builds the connector for rec: the pending credential when a
// rotation is pending and it logs in, the current one otherwise.
func (m *Manager) effective(ctx context.Context, t mayfly.Target, k Kind, rec *record) (mayfly.Connector, error) {
	if rec.Pending != "" {
		if p, err := m.open(t.Name, rec.Pending); err == nil {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := m.checked(cctx, t, k, p)
			cancel()
			if err == nil {
				return c, nil
			}
		}
	}
	cur, err := m.open(t.Name, rec.Current)
	if err != nil {
		return nil, err
	}
	return m.build(t, k, cur)
}

// tryResolve resolves a pending rotation of t under its lock; it does
// nothing when another replica holds the lock (its rotation is running).
func (m *Manager) tryResolve(ctx context.Context, t mayfly.Target, k Kind) (*record, error) {
	held, err := m.lock(ctx, t.Name)
	if err != nil {
		return nil, err
	}
	if !held {
		return nil, mayfly.Errorf(mayfly.ECONFLICT, "target %q: another replica is rotating its credential", t.Name)
	}
	defer m.unlock(t.Name)
	// Read again under the lock: what the caller read may be stale.
	rec, err := m.load(ctx, t.Name)
	if err != nil {
		return nil, err
	}
	rec, _, err = m.resolve(ctx, t, k, rec)
	return rec, err
}

// resolve settles a pending rotation (the caller holds the lock): the
// pending credential becomes current when it logs in; otherwise it is
// dropped when the current one logs in; otherwise nothing changes. It
// returns the record and a connector checked with its current credential
// (nil when nothing was pending).
func (m *Manager) resolve(ctx context.Context, t mayfly.Target, k Kind, rec *record) (*record, mayfly.Connector, error) {
	if rec == nil || rec.Pending == "" {
		return rec, nil, nil
	}
	pending, err := m.open(t.Name, rec.Pending)
	if err != nil {
		return nil, nil, err
	}
	if c, perr := m.checked(ctx, t, k, pending); perr == nil {
		r := *rec
		r.Current, r.Pending, r.Phase, r.RotatedAt = r.Pending, "", "", m.o.Clock.Now().UTC()
		if err := m.write(ctx, t.Name, &r, &mayfly.AuditEvent{Action: "target.credential_rotated",
			Data: map[string]string{"resolved": "an interrupted rotation: the new credential logs in"}}); err != nil {
			c.Close()
			return nil, nil, err
		}
		m.o.Logger.Info("credential: an interrupted rotation completed", "target", t.Name)
		return &r, c, nil
	}
	current, err := m.open(t.Name, rec.Current)
	if err != nil {
		return nil, nil, err
	}
	c, cerr := m.checked(ctx, t, k, current)
	if cerr != nil {
		return nil, nil, mayfly.Errorf(mayfly.EUNAVAILABLE, "target %q: neither the pending nor the current admin credential logs in (%s); "+
			"the rotation stays pending and is resolved once one does", t.Name, mayfly.ErrorMessageOrText(cerr))
	}
	r := *rec
	r.Pending, r.Phase = "", ""
	if err := m.write(ctx, t.Name, &r, &mayfly.AuditEvent{Action: "target.credential_rotation_abandoned",
		Data: map[string]string{"resolved": "an interrupted rotation: the target kept the current credential"}}); err != nil {
		c.Close()
		return nil, nil, err
	}
	m.o.Logger.Info("credential: an interrupted rotation was abandoned; the current credential still works", "target", t.Name)
	return &r, c, nil
}

func (m *Manager) target(name string) (*managed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mt, ok := m.targets[name]
	if !ok {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "no target %q that keeps a sealed admin credential (kinds: %s)", name, strings.Join(m.Kinds(), ", "))
	}
	return mt, nil
}

// swap makes the target's connector use c, recording the version of the
// stored record it comes from.
func (m *Manager) swap(name string, c mayfly.Connector, version int64) {
	m.mu.Lock()
	mt := m.targets[name]
	mt.version = version
	m.mu.Unlock()
	if old := mt.conn.set(c); old != nil {
		m.retired.Add(1)
		go func() {
			defer m.retired.Done()
			old.retire()
		}()
	}
}

// Set stores cred sealed as the admin credential of target, after
// checking that it builds a connector and (when check) logs in, and
// switches the target's connector to it. The audit event names the target
// only.
func (m *Manager) Set(ctx context.Context, actor, source, target, cred string, check bool) error {
	if m.o.Keys == nil {
		return mayfly.Errorf(mayfly.EINVALID, "no master key is configured: set seal.key_file or seal.key_env and restart the server before storing credentials")
	}
	mt, err := m.target(target)
	if err != nil {
		return err
	}
	cred = strings.TrimRight(cred, "\r\n")
	if strings.TrimSpace(cred) == "" {
		return mayfly.Errorf(mayfly.EINVALID, "target %q: the credential is empty (give %s on standard input)", target, mt.kind.Describe)
	}
	c, err := m.build(mt.cfg, mt.kind, cred)
	if err != nil {
		return mayfly.Errorf(mayfly.EINVALID, "the credential was not stored: %s", mayfly.ErrorMessageOrText(err))
	}
	if check {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.Check(cctx)
		cancel()
		if err != nil {
			c.Close()
			return mayfly.Errorf(mayfly.EINVALID, "target %q: the credential was not stored: logging in with it failed: %s", target, scrub(mayfly.ErrorMessageOrText(err), cred))
		}
	}
	held, err := m.lock(ctx, target)
	if err == nil && !held {
		err = mayfly.Errorf(mayfly.ECONFLICT, "target %q: its credential is being rotated; try again in a moment", target)
	}
	if err != nil {
		c.Close()
		return err
	}
	defer m.unlock(target)
	rec, err := m.load(ctx, target)
	if err != nil {
		c.Close()
		return err
	}
	r := record{}
	if rec != nil {
		r.Version = rec.Version
	}
	r.Current, r.SetAt = m.o.Keys.Seal(purpose(target), []byte(cred)), m.o.Clock.Now().UTC()
	if err := m.write(ctx, target, &r, &mayfly.AuditEvent{Actor: actor, Source: source, Action: "target.credential_set",
		Data: map[string]string{"result": "credential set"}}); err != nil {
		c.Close()
		return err
	}
	m.swap(target, c, r.Version)
	m.o.Logger.Info("credential set", "target", target, "actor", actor)
	return nil
}

// Rotation steps, after each of which a failpoint may stop a rotation.
const (
	StepPendingStored   = "pending-stored"   // the new password is stored sealed as pending
	StepTargetChanged   = "target-changed"   // the target has the new password
	StepChangedRecorded = "changed-recorded" // the store says the target changed
	StepVerified        = "verified"         // a login with the new password worked
	StepCommitted       = "committed"        // the new password is the current one
)

// Steps lists the rotation steps in order.
var Steps = []string{StepPendingStored, StepTargetChanged, StepChangedRecorded, StepVerified, StepCommitted}

// NewPassword returns a random password: 32 bytes from crypto/rand in
// URL-safe base64 (43 characters, letters, digits, '-' and '_').
func NewPassword() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Rotate changes the password of the admin account Mayfly uses on target
// to a new random one, verifies it and stores it sealed, and returns when
// it was rotated. A failure at any step leaves a credential that works
// (the pending rotation is resolved at once when it can be, later
// otherwise).
func (m *Manager) Rotate(ctx context.Context, actor, source, target string) (time.Time, error) {
	if m.o.Keys == nil {
		return time.Time{}, mayfly.Errorf(mayfly.EINVALID, "no master key is configured: set seal.key_file or seal.key_env; rotation stores the new credential sealed")
	}
	mt, err := m.target(target)
	if err != nil {
		return time.Time{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, rotateTimeout)
	defer cancel()
	held, err := m.lock(ctx, target)
	if err != nil {
		return time.Time{}, err
	}
	if !held {
		return time.Time{}, mayfly.Errorf(mayfly.ECONFLICT, "target %q: its credential is being rotated already, or a rotation cut short by a crash holds its lock until it lapses (within %s); try again then", target, LockTTL)
	}
	crashed := false
	defer func() {
		if !crashed {
			m.unlock(target)
		}
	}()
	step := func(name string) error {
		if m.o.AfterStep != nil {
			m.o.AfterStep(name)
		}
		if m.failpoint == nil {
			return nil
		}
		if err := m.failpoint(name); err != nil {
			crashed = true
			return err
		}
		return nil
	}

	rec, err := m.load(ctx, target)
	if err != nil {
		return time.Time{}, err
	}
	if rec == nil {
		return time.Time{}, mayfly.Errorf(mayfly.EINVALID, "target %q takes its admin credential from the configuration; rotation needs it stored sealed: "+
			"`mayfly targets set-credential %s`, then remove it from the configuration", target, target)
	}
	if rec.Pending != "" {
		var c mayfly.Connector
		if rec, c, err = m.resolve(ctx, mt.cfg, mt.kind, rec); err != nil {
			return time.Time{}, err
		}
		m.swap(target, c, rec.Version)
	}
	cur, err := m.open(target, rec.Current)
	if err != nil {
		return time.Time{}, err
	}
	old, err := m.build(mt.cfg, mt.kind, cur)
	if err != nil {
		return time.Time{}, err
	}
	defer old.Close()
	changer, ok := old.(PasswordChanger)
	if !ok {
		return time.Time{}, mayfly.Errorf(mayfly.EINVALID, "target %q: kind %q cannot change its admin password", target, mt.cfg.Kind)
	}
	password := NewPassword()
	next, err := mt.kind.WithPassword(cur, password)
	if err != nil {
		return time.Time{}, err
	}

	// 1. Intent: the new credential, sealed, before the target changes.
	rec.Pending, rec.Phase = m.o.Keys.Seal(purpose(target), []byte(next)), phasePending
	if err := m.write(ctx, target, rec, nil); err != nil {
		return time.Time{}, err
	}
	if err := step(StepPendingStored); err != nil {
		return time.Time{}, err
	}
	// 2. The target.
	if err := changer.ChangeAdminPassword(ctx, password); err != nil {
		msg := scrub(scrub(mayfly.ErrorMessageOrText(err), next), password)
		outcome := m.settle(ctx, mt, rec)
		return time.Time{}, mayfly.Errorf(mayfly.EUNAVAILABLE, "target %q: the rotation failed: %s; %s", target, msg, outcome)
	}
	if err := step(StepTargetChanged); err != nil {
		return time.Time{}, err
	}
	rec.Phase = phaseChanged
	if err := m.write(ctx, target, rec, nil); err != nil {
		outcome := m.settle(ctx, mt, rec)
		return time.Time{}, fmt.Errorf("%w; %s", err, outcome)
	}
	if err := step(StepChangedRecorded); err != nil {
		return time.Time{}, err
	}
	// 3. Verify by logging in with it.
	c, err := m.checked(ctx, mt.cfg, mt.kind, next)
	if err != nil {
		msg := scrub(mayfly.ErrorMessageOrText(err), password)
		outcome := m.settle(ctx, mt, rec)
		return time.Time{}, mayfly.Errorf(mayfly.EUNAVAILABLE, "target %q: the new credential did not log in: %s; %s", target, msg, outcome)
	}
	if err := step(StepVerified); err != nil {
		c.Close()
		return time.Time{}, err
	}
	// 4. Commit.
	now := m.o.Clock.Now().UTC()
	rec.Current, rec.Pending, rec.Phase, rec.RotatedAt = rec.Pending, "", "", now
	if err := m.write(ctx, target, rec, &mayfly.AuditEvent{Actor: actor, Source: source, Action: "target.credential_rotated",
		Data: map[string]string{"result": "credential rotated"}}); err != nil {
		c.Close()
		return time.Time{}, err
	}
	m.swap(target, c, rec.Version)
	if err := step(StepCommitted); err != nil {
		return time.Time{}, err
	}
	m.o.Logger.Info("credential rotated", "target", target, "actor", actor)
	return now, nil
}

// settle resolves a rotation that failed at the target, so the connector
// keeps a credential that works; what cannot be resolved now is resolved
// by the watcher later. It says which, for the rotation's error.
func (m *Manager) settle(ctx context.Context, mt *managed, rec *record) string {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	pending := rec.Pending
	r, c, err := m.resolve(sctx, mt.cfg, mt.kind, rec)
	if err != nil {
		m.o.Logger.Warn("credential: rotation left pending", "target", mt.cfg.Name, "err", mayfly.ErrorMessageOrText(err))
		return "the rotation stays pending and is settled once the target answers again"
	}
	if c != nil {
		m.swap(mt.cfg.Name, c, r.Version)
	}
	if r != nil && r.Current == pending {
		return "the new credential logs in after all and is now the current one"
	}
	return "the current credential is kept and still logs in"
}

// Sync brings every target's connector up to the stored credential (set
// or rotated on another replica) and resolves rotations left pending by a
// crash once no replica holds their lock.
func (m *Manager) Sync(ctx context.Context) error {
	m.mu.Lock()
	names := make([]string, 0, len(m.targets))
	for n := range m.targets {
		names = append(names, n)
	}
	m.mu.Unlock()
	slices.Sort(names)
	var errs []error
	for _, name := range names {
		if err := m.syncOne(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) syncOne(ctx context.Context, name string) error {
	mt, err := m.target(name)
	if err != nil {
		return err
	}
	rec, err := m.load(ctx, name)
	if err != nil || rec == nil {
		return err
	}
	if m.o.Keys == nil {
		return noKey(name)
	}
	if rec.Pending != "" {
		held, err := m.lock(ctx, name)
		if err != nil {
			return err
		}
		if held {
			r, c, err := func() (*record, mayfly.Connector, error) {
				defer m.unlock(name)
				r, err := m.load(ctx, name)
				if err != nil {
					return nil, nil, err
				}
				return m.resolve(ctx, mt.cfg, mt.kind, r)
			}()
			if err != nil {
				return err
			}
			if c != nil {
				m.swap(name, c, r.Version)
				return nil
			}
			rec = r
		}
	}
	m.mu.Lock()
	same := mt.version == rec.Version
	m.mu.Unlock()
	if same || rec == nil {
		return nil
	}
	c, err := m.effective(ctx, mt.cfg, mt.kind, rec)
	if err != nil {
		return err
	}
	m.swap(name, c, rec.Version)
	m.o.Logger.Info("credential: using the credential stored by another replica", "target", name)
	return nil
}

// Watch runs Sync every interval until ctx ends.
func (m *Manager) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Sync(ctx); err != nil && ctx.Err() == nil {
				m.o.Logger.Warn("credential: sync", "err", mayfly.ErrorMessageOrText(err))
			}
		}
	}
}

// RunRotations rotates, every check interval, the credentials of the
// targets whose rotate_every has passed since they were last set or
// rotated. It is singleton work: run it on the replica leading it.
func (m *Manager) RunRotations(ctx context.Context, check time.Duration) {
	warned := map[string]bool{}
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		m.mu.Lock()
		var due []mayfly.Target
		for _, mt := range m.targets {
			if mt.cfg.RotateEvery > 0 {
				due = append(due, mt.cfg)
			}
		}
		m.mu.Unlock()
		for _, tg := range due {
			rec, err := m.load(ctx, tg.Name)
			if err != nil {
				if ctx.Err() == nil {
					m.o.Logger.Warn("credential: scheduled rotation", "target", tg.Name, "err", mayfly.ErrorMessageOrText(err))
				}
				continue
			}
			if rec == nil {
				if !warned[tg.Name] {
					warned[tg.Name] = true
					m.o.Logger.Warn("credential: rotate_every is set but the credential comes from the configuration; store it with `mayfly targets set-credential`", "target", tg.Name)
				}
				continue
			}
			last := rec.SetAt
			if rec.RotatedAt.After(last) {
				last = rec.RotatedAt
			}
			if m.o.Clock.Now().Sub(last) < tg.RotateEvery {
				continue
			}
			if _, err := m.Rotate(ctx, "mayfly", "", tg.Name); err != nil && ctx.Err() == nil {
				m.o.Logger.Error("credential: scheduled rotation failed", "target", tg.Name, "err", mayfly.ErrorMessageOrText(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close waits for the connectors the manager replaced to close. The
// connectors it returned are closed by their owner.
func (m *Manager) Close() {
	m.retired.Wait()
}

// Sealing reports whether a master key is configured.
func (m *Manager) Sealing() bool { return m.o.Keys != nil }
