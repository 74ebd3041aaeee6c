package httpapi

import (
	"net/http"
	"time"

	"github.com/mayflyhq/mayfly"
)

func (s *server) sshOrErr() (SSHService, error) {
	if s.SSH == nil {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "no SSH targets are configured")
	}
	return s.SSH, nil
}

// CAView is the SSH CA as GET /v1/ssh/ca and its rotation show it.
type CAView struct {
	// PublicKeys are the keys hosts trust (TrustedUserCAKeys): the
	// signing key first, then the next key when one is published, then
	// retired keys whose certificates have not expired.
	PublicKeys []string `json:"public_keys"`
	// SigningKey is the key that signs certificates now.
	SigningKey string `json:"signing_key"`
	// NextKey, when set, is published for the next rotation and signs
	// nothing until activated; NextKeySince is when it was published.
	NextKey      string     `json:"next_key,omitempty"`
	NextKeySince *time.Time `json:"next_key_since,omitempty"`
}

// RotateBody is the body of POST /v1/ssh/ca/rotate.
type RotateBody struct {
	// Step is "prepare" (the default), "activate" or "now".
	Step   string `json:"step"`
	Reason string `json:"reason"`
}

func caView(ssh SSHService) CAView {
	v := CAView{PublicKeys: ssh.CAPublicKeys()}
	if len(v.PublicKeys) > 0 {
		v.SigningKey = v.PublicKeys[0]
	}
	if k, at, ok := ssh.CANextKey(); ok {
		v.NextKey, v.NextKeySince = k, &at
	}
	return v
}

func (s *server) handleSSHCA() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		ssh, err := s.sshOrErr()
		if err != nil {
			return 0, nil, err
		}
		return 200, caView(ssh), nil
	})
}

func (s *server) handleSSHRotate() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		ssh, err := s.sshOrErr()
		if err != nil {
			return 0, nil, err
		}
		var body RotateBody
		if err := decodeOptional(r, &body); err != nil {
			return 0, nil, err
		}
		if body.Step == "" {
			body.Step = "prepare"
		}
		switch body.Step {
		case "prepare", "activate", "now":
		default:
			return 0, nil, mayfly.Errorf(mayfly.EINVALID, "step %q: want prepare, activate or now", body.Step)
		}
		if err := ssh.RotateCA(body.Step); err != nil {
			return 0, nil, err
		}
		v := caView(ssh)
		data := map[string]string{"step": body.Step, "signing_key": v.SigningKey}
		if v.NextKey != "" {
			data["next_key"] = v.NextKey
		}
		if err := s.Broker.RecordAdminAction(r.Context(), callerFrom(r), "ssh_ca.rotate", "ssh_ca", body.Reason, data); err != nil {
			return 0, nil, err
		}
		return 200, v, nil
	})
}

// handleRevokedKeys serves a target's revocation list as bytes for sshd's
// RevokedKeys; hosts fetch it on a timer.
func (s *server) handleRevokedKeys() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ssh, err := s.sshOrErr()
		if err != nil {
			writeError(w, err)
			return
		}
		target := r.URL.Query().Get("target")
		if target == "" {
			writeError(w, mayfly.Errorf(mayfly.EINVALID, "target is required: /v1/ssh/revoked-keys?target=NAME"))
			return
		}
		b, err := ssh.RevokedKeys(target)
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(b)
	})
}
