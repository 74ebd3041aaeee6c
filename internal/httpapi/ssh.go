package httpapi

import (
	"net/http"

	"github.com/mayflyhq/mayfly"
)

func (s *server) sshOrErr() (SSHService, error) {
	if s.SSH == nil {
		return nil, mayfly.Errorf(mayfly.ENOTFOUND, "no SSH targets are configured")
	}
	return s.SSH, nil
}

func (s *server) handleSSHCA() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		ssh, err := s.sshOrErr()
		if err != nil {
			return 0, nil, err
		}
		return 200, map[string]any{"public_keys": ssh.CAPublicKeys()}, nil
	})
}

func (s *server) handleSSHRotate() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		ssh, err := s.sshOrErr()
		if err != nil {
			return 0, nil, err
		}
		if err := ssh.RotateCA(); err != nil {
			return 0, nil, err
		}
		return 200, map[string]any{"public_keys": ssh.CAPublicKeys()}, nil
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
