package pggw

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL
// speaks it, without channel binding. Neither pgx nor x/crypto offers it;
// the verifier format and its math are PostgreSQL's (see
// postgres.SCRAMVerifier, which makes them).

const scramMechanism = "SCRAM-SHA-256"

// verifier is a parsed "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>".
type verifier struct {
	iterations int
	salt       []byte
	storedKey  []byte
	serverKey  []byte
}

func parseVerifier(s string) (verifier, error) {
	var v verifier
	rest, ok := strings.CutPrefix(s, scramMechanism+"$")
	if !ok {
		return v, errors.New("not a SCRAM-SHA-256 verifier")
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return v, errors.New("verifier: missing keys")
	}
	iter, salt, ok := strings.Cut(params, ":")
	if !ok {
		return v, errors.New("verifier: missing salt")
	}
	stored, server, ok := strings.Cut(keys, ":")
	if !ok {
		return v, errors.New("verifier: missing server key")
	}
	var err error
	if v.iterations, err = strconv.Atoi(iter); err != nil || v.iterations < 1 {
		return v, errors.New("verifier: bad iteration count")
	}
	dec := base64.StdEncoding.DecodeString
	if v.salt, err = dec(salt); err != nil || len(v.salt) == 0 {
		return v, errors.New("verifier: bad salt")
	}
	if v.storedKey, err = dec(stored); err != nil || len(v.storedKey) != sha256.Size {
		return v, errors.New("verifier: bad stored key")
	}
	if v.serverKey, err = dec(server); err != nil || len(v.serverKey) != sha256.Size {
		return v, errors.New("verifier: bad server key")
	}
	return v, nil
}

// decoyVerifier stands in for a login name that has no verifier, so an
// unknown name takes the same exchange as a wrong secret.
func decoyVerifier() verifier {
	v := verifier{iterations: 4096, salt: make([]byte, 16), storedKey: make([]byte, 32), serverKey: make([]byte, 32)}
	rand.Read(v.salt)
	rand.Read(v.storedKey)
	rand.Read(v.serverKey)
	return v
}

// scramServer is one exchange.
type scramServer struct {
	v               verifier
	gs2Header       string
	clientFirstBare string
	serverFirst     string
	nonce           string
}

// clientFirst reads the client-first-message and returns the
// server-first-message.
func (s *scramServer) clientFirst(msg []byte) (string, error) {
	m := string(msg)
	// gs2-header: "n,," (no channel binding) or "y,," (client could, but
	// thinks the server cannot); "p=..." asks for binding we do not offer.
	var cbflag string
	switch {
	case strings.HasPrefix(m, "n,"), strings.HasPrefix(m, "y,"):
		cbflag = m[:2]
	case strings.HasPrefix(m, "p="):
		return "", errors.New("channel binding is not supported by the gateway; connect with channel_binding=disable or prefer")
	default:
		return "", errors.New("malformed SCRAM client-first-message")
	}
	rest := m[2:]
	authzid, bare, ok := strings.Cut(rest, ",")
	if !ok || (authzid != "" && !strings.HasPrefix(authzid, "a=")) {
		return "", errors.New("malformed SCRAM client-first-message")
	}
	s.gs2Header = cbflag + authzid + ","
	s.clientFirstBare = bare
	attrs := strings.Split(bare, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return "", errors.New("malformed SCRAM client-first-message")
	}
	cnonce := attrs[1][2:]
	if cnonce == "" || strings.ContainsAny(cnonce, ",") {
		return "", errors.New("malformed SCRAM client nonce")
	}
	for _, c := range cnonce {
		if c < 0x21 || c > 0x7e {
			return "", errors.New("malformed SCRAM client nonce")
		}
	}
	snonce := make([]byte, 18)
	rand.Read(snonce)
	s.nonce = cnonce + base64.StdEncoding.EncodeToString(snonce)
	s.serverFirst = fmt.Sprintf("r=%s,s=%s,i=%d", s.nonce, base64.StdEncoding.EncodeToString(s.v.salt), s.v.iterations)
	return s.serverFirst, nil
}

// clientFinal checks the client-final-message's proof and returns the
// server-final-message; errBadProof when the proof is wrong.
func (s *scramServer) clientFinal(msg []byte) (string, error) {
	m := string(msg)
	withoutProof, proofAttr, ok := cutLast(m, ",p=")
	if !ok {
		return "", errors.New("malformed SCRAM client-final-message")
	}
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "c=") || !strings.HasPrefix(attrs[1], "r=") {
		return "", errors.New("malformed SCRAM client-final-message")
	}
	if attrs[0][2:] != base64.StdEncoding.EncodeToString([]byte(s.gs2Header)) {
		return "", errors.New("SCRAM channel binding data does not match")
	}
	if attrs[1][2:] != s.nonce {
		return "", errors.New("SCRAM nonce does not match")
	}
	proof, err := base64.StdEncoding.DecodeString(proofAttr)
	if err != nil || len(proof) != sha256.Size {
		return "", errors.New("malformed SCRAM proof")
	}
	authMessage := s.clientFirstBare + "," + s.serverFirst + "," + withoutProof
	clientSig := hmacSum(s.v.storedKey, authMessage)
	clientKey := make([]byte, sha256.Size)
	for i := range clientKey {
		clientKey[i] = proof[i] ^ clientSig[i]
	}
	stored := sha256.Sum256(clientKey)
	if subtle.ConstantTimeCompare(stored[:], s.v.storedKey) != 1 {
		return "", errBadProof
	}
	return "v=" + base64.StdEncoding.EncodeToString(hmacSum(s.v.serverKey, authMessage)), nil
}

var errBadProof = errors.New("wrong password")

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

func hmacSum(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}
