package postgres

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayflyhq/mayfly"
)

// saltLen is the length of the random salt of a SCRAM verifier.
const saltLen = 16

// GeneratePassword returns a password made of 32 bytes from crypto/rand,
// URL-safe base64 encoded without padding (43 characters).
func GeneratePassword() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails; it crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}

// SCRAMVerifier returns the SCRAM-SHA-256 verifier PostgreSQL stores for
// password (RFC 5802, RFC 7677):
// "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>", in standard
// base64. An iteration count below 1 counts as 1. The password is used as
// given (SASLprep leaves the ASCII passwords of GeneratePassword unchanged).
func SCRAMVerifier(password string, salt []byte, iterations int) string {
	iterations = max(iterations, 1)
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		// Only FIPS 140-only mode refuses these parameters (short salt
		// or password); nothing else can fail.
		panic(fmt.Sprintf("postgres: scram verifier: %v", err))
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	enc := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, enc(salt), enc(storedKey[:]), enc(serverKey))
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// leaseComment is the comment Mayfly puts on the role of a lease: "mayfly
// lease <id>", followed by " mark <tag>" when the installation has a key.
// A role that exists with this lease's comment belongs to the same lease.
func (c *Connector) leaseComment(leaseID, name string) string {
	s := "mayfly lease " + leaseID
	if tag := c.key.Tag(name); tag != "" {
		s += " mark " + tag
	}
	return s
}

// sameLease reports whether comment is the comment of lease leaseID.
func sameLease(comment, leaseID string) bool {
	rest, ok := strings.CutPrefix(comment, "mayfly lease "+leaseID)
	return ok && (rest == "" || strings.HasPrefix(rest, " mark "))
}

// commentMark returns the mark in a role's comment, "" when there is none.
func commentMark(comment string) string {
	if !strings.HasPrefix(comment, "mayfly lease ") {
		return ""
	}
	_, tag, ok := strings.Cut(comment, " mark ")
	if !ok {
		return ""
	}
	return tag
}

// creation is everything Provision sends to create the role of a lease,
// built and checked before the target is touched.
type creation struct {
	pool     *pgxpool.Pool
	verifier string // quoted literal
	until    string // quoted literal
	roles    []string
	stmts    segment
	seg      segment // the creation: CREATE ROLE, its comment, the grant
	cred     mayfly.Credential
}

// build checks req and prepares the statements that create its role with
// a fresh password, every identifier and literal quoted.
func (c *Connector) build(req mayfly.ProvisionRequest) (*creation, error) {
	name := req.Username
	if err := c.checkName(name); err != nil {
		return nil, err
	}
	if err := validGrant(req.Grant); err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "grant %q: %s", req.Grant.Name, mayfly.ErrorMessage(err))
	}
	if req.ExpiresAt.IsZero() {
		return nil, mayfly.Errorf(mayfly.EINVALID, "provision %s: expiry is required", name)
	}
	comment, err := quoteLiteral(c.leaseComment(req.LeaseID, name))
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "lease id: %s", mayfly.ErrorMessage(err))
	}
	password := GeneratePassword()
	salt := make([]byte, saltLen)
	rand.Read(salt)
	cr := &creation{}
	if cr.verifier, err = quoteLiteral(SCRAMVerifier(password, salt, c.iterations)); err != nil {
		return nil, err
	}
	if cr.until, err = quoteLiteral(req.ExpiresAt.UTC().Format(time.RFC3339)); err != nil {
		return nil, err
	}
	for _, r := range req.Grant.Roles {
		cr.roles = append(cr.roles, ident(r))
	}
	for _, s := range req.Grant.Statements {
		cr.stmts = append(cr.stmts, query{sql: expandStatement(s, name)})
	}
	db := c.database
	if len(req.Grant.Statements) > 0 && req.Grant.Database != "" {
		db = req.Grant.Database
	}
	if cr.pool, err = c.poolFor(db); err != nil {
		return nil, err
	}
	role := ident(name)
	create := "CREATE ROLE " + role + " LOGIN PASSWORD " + cr.verifier + " VALID UNTIL " + cr.until +
		" CONNECTION LIMIT " + itoa(c.limit)
	if len(cr.roles) > 0 {
		create += " IN ROLE " + strings.Join(cr.roles, ", ")
	}
	// The creation commits without waiting for its WAL to reach disk: if
	// the server crashed before the flush, the role would be lost, which
	// only denies access (fail-safe); it never leaves access behind.
	cr.seg = append(segment{{sql: asyncCommitSelect},
		{sql: create}, {sql: "COMMENT ON ROLE " + role + " IS " + comment}}, cr.stmts...)
	database := req.Grant.Database
	if database == "" {
		database = c.database
	}
	cr.cred = mayfly.Credential{Username: name, Password: password, Host: c.host, Port: c.port, Database: database}
	return cr, nil
}

// Provision creates the role for a lease and returns its credential. The
// role is created with the grant's roles and statements in one transaction
// (one round trip), so a failure leaves nothing behind. A role that already
// exists for the same lease gets a new password instead; a role that exists
// for anything else is a conflict.
func (c *Connector) Provision(ctx context.Context, req mayfly.ProvisionRequest) (_ mayfly.ProvisionResponse, err error) {
	defer func() { err = c.scrub(err) }()
	cr, err := c.build(req)
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	name := req.Username
	conn, err := cr.pool.Acquire(ctx)
	if err != nil {
		return mayfly.ProvisionResponse{}, fmt.Errorf("provision %s: %w", name, err)
	}
	defer conn.Release()
	pg := conn.Conn().PgConn()
	serr, err := create(ctx, pg, cr)
	if err != nil {
		// The outcome is unknown: the role may have been created.
		c.undo(ctx, req)
		return mayfly.ProvisionResponse{}, fmt.Errorf("provision %s: %w", name, err)
	}
	if err := serr; err != nil {
		switch pgCode(err) {
		case sqlDuplicateObject, sqlUniqueViolation:
			if err := c.reprovision(ctx, pg, req, cr.verifier, cr.until, cr.roles, cr.stmts); err != nil {
				return mayfly.ProvisionResponse{}, err
			}
		default:
			return mayfly.ProvisionResponse{}, creationError(name, req.Grant.Name, err)
		}
	}
	return mayfly.ProvisionResponse{Credential: cr.cred}, nil
}

// create runs cr's creation in one transaction and one round trip. serr
// is the server's refusal (nothing was created); err any other failure
// (the outcome is unknown, and the connection closed).
func create(ctx context.Context, pg *pgconn.PgConn, cr *creation) (serr, err error) {
	if q, ok := cr.simple(); ok {
		// The statements of one simple query run as one transaction.
		_, err := pg.Exec(ctx, q).ReadAll()
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return err, nil
		}
		return nil, err
	}
	res, err := pipeline(ctx, pg, cr.seg)
	if err != nil {
		return nil, err
	}
	return res[0].err, nil
}

// creationError is the error of a creation the server refused.
func creationError(name, grant string, err error) error {
	if pgCode(err) == sqlUndefinedObject {
		return mayfly.Errorf(mayfly.EINVALID, "provision %s: grant %q: %s", name, grant, serverMessage(err))
	}
	return fmt.Errorf("provision %s: %w", name, err)
}

// PrepareProvision sends the creation of the role for a lease inside a
// transaction left open, without waiting for the server: until Commit, the
// role is invisible and cannot log in, and if Mayfly dies or calls Abort
// the server rolls it back, so nothing is left on the target. The broker
// records the lease's intent meanwhile and commits only once the intent is
// durable: the creation overlaps the intent's commit without an account
// ever existing before its intent. ctx must stay live until the creation
// is finished.
func (c *Connector) PrepareProvision(ctx context.Context, req mayfly.ProvisionRequest) (_ mayfly.PreparedProvision, err error) {
	defer func() { err = c.scrub(err) }()
	cr, err := c.build(req)
	if err != nil {
		return nil, err
	}
	return c.stage(ctx, req, cr)
}

// stage sends cr's creation in a transaction left open.
func (c *Connector) stage(ctx context.Context, req mayfly.ProvisionRequest, cr *creation) (*prepared, error) {
	conn, err := cr.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("provision %s: %w", req.Username, err)
	}
	p := &prepared{c: c, ctx: ctx, conn: conn, name: req.Username, grant: req.Grant.Name, cred: cr.cred}
	pg := conn.Conn().PgConn()
	if q, ok := cr.simple(); ok {
		// One simple-protocol message: parsed once by the server, without
		// the extended protocol's messages for each statement.
		p.mrr = pg.Exec(ctx, "BEGIN; "+q)
		return p, nil
	}
	// The grant's own statements go as separate extended-protocol
	// statements, which the server refuses to split or nest: one cannot
	// end the transaction early.
	p.pipe = pg.StartPipeline(ctx)
	if err := send(p.pipe, append(segment{{sql: "BEGIN"}}, cr.seg...)); err != nil {
		// The connection is closed, and the transaction with it.
		conn.Release()
		return nil, fmt.Errorf("provision %s: %w", req.Username, err)
	}
	return p, nil
}

// simple returns the creation as one simple-protocol query string, when it
// is made only of statements Mayfly wrote (no grant statements).
func (cr *creation) simple() (string, bool) {
	if len(cr.stmts) > 0 {
		return "", false
	}
	sqls := make([]string, len(cr.seg))
	for i, q := range cr.seg {
		if len(q.args) > 0 || q.name != "" {
			return "", false
		}
		sqls[i] = q.sql
		if q.sql == asyncCommitSelect {
			// Inside the simple query's transaction block, SET LOCAL says
			// the same without a result row (the server answers it about
			// 30 µs sooner).
			sqls[i] = asyncCommitSet
		}
	}
	return strings.Join(sqls, "; "), true
}

// The creation commits without waiting for its WAL to be flushed (see
// build). SET LOCAL only takes effect in a transaction block, which
// extended-protocol statements before a Sync are not: there the function
// form is used.
const (
	asyncCommitSelect = "SELECT pg_catalog.set_config('synchronous_commit', 'off', true)"
	asyncCommitSet    = "SET LOCAL synchronous_commit TO off"
)

// prepared is a role creation sent in a transaction not yet committed.
type prepared struct {
	c     *Connector
	ctx   context.Context
	conn  *pgxpool.Conn // nil once released
	name  string
	grant string
	cred  mayfly.Credential
	read  bool // the creation's outcome has been read

	// The statement whose result is awaited: the creation, sent either
	// as one simple query (mrr) or as a pipeline (pipe); then the end of
	// the transaction (mrr).
	mrr  *pgconn.MultiResultReader
	pipe *pgconn.Pipeline
}

// Wait reads the outcome of the creation. On error the transaction is
// rolled back and the connection released: nothing was created.
func (p *prepared) Wait() (_ mayfly.ProvisionResponse, err error) {
	defer func() { err = p.c.scrub(err) }()
	err = p.readCreation()
	p.read = true
	var pe *pgconn.PgError
	if err != nil && !errors.As(err, &pe) {
		// The connection is closed, and the transaction with it.
		p.release()
		return mayfly.ProvisionResponse{}, fmt.Errorf("provision %s: %w", p.name, err)
	}
	if pg := p.conn.Conn().PgConn(); err == nil && pg.TxStatus() != 'T' {
		// A statement ended the transaction (grant statements are checked
		// for that, so this is defense in depth): the role may already be
		// committed, before its intent. The outcome is unknown, which
		// makes the broker revoke whatever exists.
		pg.Close(context.Background())
		p.release()
		return mayfly.ProvisionResponse{}, fmt.Errorf("provision %s: the creation's transaction ended before its commit", p.name)
	}
	if err != nil {
		p.end("ROLLBACK")
		switch pgCode(err) {
		case sqlDuplicateObject, sqlUniqueViolation:
			return mayfly.ProvisionResponse{}, mayfly.ErrNotStaged
		}
		return mayfly.ProvisionResponse{}, creationError(p.name, p.grant, err)
	}
	return mayfly.ProvisionResponse{Credential: p.cred}, nil
}

// Credential is the credential the role will have once committed (see
// mayfly.PreparedCredential).
func (p *prepared) Credential() mayfly.Credential { return p.cred }

// readCreation reads the creation's outcome. A server error
// (*pgconn.PgError) leaves the transaction open and failed; any other
// error leaves the connection closed.
func (p *prepared) readCreation() error {
	if p.pipe == nil {
		_, err := p.mrr.ReadAll()
		return err
	}
	res, err := readSegments(p.pipe, 1)
	if err == nil {
		err = p.pipe.Close()
	}
	if err != nil {
		return err
	}
	return res[0].err
}

// Commit sends COMMIT without waiting; the function it returns waits for
// the outcome. An error from it means the outcome is unknown.
func (p *prepared) Commit() func() error {
	p.send("COMMIT")
	return func() error {
		if err := p.finish("COMMIT"); err != nil {
			return fmt.Errorf("provision %s: commit: %w", p.name, p.c.scrub(err))
		}
		return nil
	}
}

// Abort rolls the creation back, unless Wait already did.
func (p *prepared) Abort() {
	if p.conn == nil {
		return
	}
	if !p.read {
		p.read = true
		var pe *pgconn.PgError
		if err := p.readCreation(); err != nil && !errors.As(err, &pe) {
			p.release()
			return
		}
	}
	p.end("ROLLBACK")
}

// end ends the transaction with stmt (ROLLBACK) and waits for it.
func (p *prepared) end(stmt string) {
	p.send(stmt)
	p.finish(stmt)
}

// send sends stmt, which ends the transaction, without waiting. A failure
// to send is reported by finish.
func (p *prepared) send(stmt string) {
	p.mrr = p.conn.Conn().PgConn().Exec(p.ctx, stmt)
}

// finish reads the outcome of stmt, sent by send, and releases the
// connection; a connection that did not end its transaction with stmt (a
// COMMIT the server answered with ROLLBACK, say) is closed, not reused.
func (p *prepared) finish(stmt string) error {
	res, err := p.mrr.ReadAll()
	if err == nil && (len(res) != 1 || res[0].CommandTag.String() != stmt) {
		err = fmt.Errorf("the server did not %s the transaction", stmt)
	}
	if err != nil {
		p.conn.Conn().PgConn().Close(context.Background())
	}
	p.release()
	return err
}

func (p *prepared) release() {
	if p.conn != nil {
		p.conn.Release()
		p.conn = nil
	}
}

// reprovision handles a role that already exists: when it carries the
// lease's comment it gets the new password and expiry, and the grant is
// applied again, in one transaction.
func (c *Connector) reprovision(ctx context.Context, pg *pgconn.PgConn, req mayfly.ProvisionRequest, verifier, until string, roles []string, stmts segment) error {
	name := req.Username
	res, err := pipeline(ctx, pg, segment{{
		sql:  "SELECT shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles WHERE rolname = $1",
		args: []string{name},
	}})
	if err != nil {
		return fmt.Errorf("provision %s: %w", name, err)
	}
	if err := res[0].err; err != nil {
		return fmt.Errorf("provision %s: %w", name, err)
	}
	rs := res[0].rows[0]
	if len(rs) == 0 {
		// Dropped since the CREATE failed; the caller may try again.
		return mayfly.Errorf(mayfly.ECONFLICT, "provision %s: the role changed concurrently; try again", name)
	}
	if !sameLease(string(rs[0][0]), req.LeaseID) {
		return mayfly.Errorf(mayfly.ECONFLICT, "provision %s: a role of that name exists and does not belong to lease %s", name, req.LeaseID)
	}
	role := ident(name)
	seg := segment{{sql: "ALTER ROLE " + role + " LOGIN PASSWORD " + verifier + " VALID UNTIL " + until +
		" CONNECTION LIMIT " + itoa(c.limit)}}
	if len(roles) > 0 {
		seg = append(seg, query{sql: "GRANT " + strings.Join(roles, ", ") + " TO " + role})
	}
	seg = append(seg, stmts...)
	res, err = pipeline(ctx, pg, seg)
	if err != nil {
		return fmt.Errorf("provision %s again: %w", name, err)
	}
	if err := res[0].err; err != nil {
		return fmt.Errorf("provision %s again: %w", name, err)
	}
	return nil
}

// undo drops the role of a provision whose outcome is unknown, best effort,
// even when ctx is already done.
func (c *Connector) undo(ctx context.Context, req mayfly.ProvisionRequest) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	c.Revoke(ctx, mayfly.RevokeRequest{LeaseID: req.LeaseID, Username: req.Username, ExpiresAt: req.ExpiresAt})
}

// serverMessage returns the server's message of err, without the SQLSTATE.
func serverMessage(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message
	}
	return err.Error()
}
