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

// leaseComment is the comment Mayfly puts on the role of a lease; a role
// that exists with this comment belongs to the same lease.
func leaseComment(leaseID string) string {
	return "mayfly lease " + leaseID
}

// Provision creates the role for a lease and returns its credential. The
// role is created with the grant's roles and statements in one transaction
// (one round trip), so a failure leaves nothing behind. A role that already
// exists for the same lease gets a new password instead; a role that exists
// for anything else is a conflict.
func (c *Connector) Provision(ctx context.Context, req mayfly.ProvisionRequest) (_ mayfly.ProvisionResponse, err error) {
	defer func() { err = c.scrub(err) }()
	name := req.Username
	if err := c.checkName(name); err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	if err := validGrant(req.Grant); err != nil {
		return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "grant %q: %s", req.Grant.Name, mayfly.ErrorMessage(err))
	}
	if req.ExpiresAt.IsZero() {
		return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "provision %s: expiry is required", name)
	}
	comment, err := quoteLiteral(leaseComment(req.LeaseID))
	if err != nil {
		return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "lease id: %s", mayfly.ErrorMessage(err))
	}
	password := GeneratePassword()
	salt := make([]byte, saltLen)
	rand.Read(salt)
	verifier, err := quoteLiteral(SCRAMVerifier(password, salt, c.iterations))
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	until, err := quoteLiteral(req.ExpiresAt.UTC().Format(time.RFC3339))
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	var roles []string
	for _, r := range req.Grant.Roles {
		roles = append(roles, ident(r))
	}
	var stmts segment
	for _, s := range req.Grant.Statements {
		stmts = append(stmts, query{sql: expandStatement(s, name)})
	}

	db := c.database
	if len(req.Grant.Statements) > 0 && req.Grant.Database != "" {
		db = req.Grant.Database
	}
	pool, err := c.poolFor(db)
	if err != nil {
		return mayfly.ProvisionResponse{}, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return mayfly.ProvisionResponse{}, fmt.Errorf("provision %s: %w", name, err)
	}
	defer conn.Release()
	pg := conn.Conn().PgConn()

	role := ident(name)
	create := "CREATE ROLE " + role + " LOGIN PASSWORD " + verifier + " VALID UNTIL " + until +
		" CONNECTION LIMIT " + itoa(c.limit)
	if len(roles) > 0 {
		create += " IN ROLE " + strings.Join(roles, ", ")
	}
	// The creation commits without waiting for its WAL to reach disk: if
	// the server crashed before the flush, the role would be lost, which
	// only denies access (fail-safe); it never leaves access behind.
	seg := append(segment{{sql: "SELECT pg_catalog.set_config('synchronous_commit', 'off', true)"},
		{sql: create}, {sql: "COMMENT ON ROLE " + role + " IS " + comment}}, stmts...)
	res, err := pipeline(ctx, pg, seg)
	if err != nil {
		// The outcome is unknown: the role may have been created.
		c.undo(ctx, req)
		return mayfly.ProvisionResponse{}, fmt.Errorf("provision %s: %w", name, err)
	}
	if err := res[0].err; err != nil {
		switch pgCode(err) {
		case sqlDuplicateObject, sqlUniqueViolation:
			if err := c.reprovision(ctx, pg, req, verifier, until, roles, stmts); err != nil {
				return mayfly.ProvisionResponse{}, err
			}
		case sqlUndefinedObject:
			return mayfly.ProvisionResponse{}, mayfly.Errorf(mayfly.EINVALID, "provision %s: grant %q: %s", name, req.Grant.Name, serverMessage(err))
		default:
			return mayfly.ProvisionResponse{}, fmt.Errorf("provision %s: %w", name, err)
		}
	}
	database := req.Grant.Database
	if database == "" {
		database = c.database
	}
	return mayfly.ProvisionResponse{Credential: mayfly.Credential{
		Username: name,
		Password: password,
		Host:     c.host,
		Port:     c.port,
		Database: database,
	}}, nil
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
	if string(rs[0][0]) != leaseComment(req.LeaseID) {
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
