package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/internal/credential"
)

// TestRotationServerKilledAtEachStep kills a real server process (SIGKILL,
// from MAYFLY_FAILPOINT=crash-after-rotation:STEP) right after each step
// of a credential rotation, restarts it on the same store, and checks what
// an operator relies on: leases work at once after the restart, with a
// credential that logs in while a wrong password is refused; once the
// dead process's rotation lock lapses the rotation is resolved, so the
// admin password from before it is refused whenever the target had
// changed; and a second rotation leaves only the newest password working.
// (internal/credential's TestRotationCrashAtEachStep stops the rotation
// inside the process on PostgreSQL, MariaDB and Redis; this one kills it.)
func TestRotationServerKilledAtEachStep(t *testing.T) {
	if testing.Short() {
		t.Skip("server processes killed and restarted; skipped with -short")
	}
	requirePG(t)
	buildBinary(t)
	for _, step := range credential.Steps {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			_, dsn0 := sealedAdminRole(t)
			keyFile := filepath.Join(t.TempDir(), "master.key")
			var kb bytes.Buffer
			if err := run(ctx, []string{"seal", "new-key", "--out", keyFile}, os.Getenv, strings.NewReader(""), &kb, &kb); err != nil {
				t.Fatalf("seal new-key: %v: %s", err, kb.String())
			}
			w := newProcessWorld(t, worldOpts{
				targets: `  - name: rot-pg
    kind: postgres
    prefix: mfk_
    grants:
      readonly: {roles: [pg_read_all_data]}
`,
				extraYAML: fmt.Sprintf(`  - {name: rot, groups: [eng], targets: [rot-pg], grants: [readonly], max_duration: 1h, approvals: 0}
seal: {key_file: %q}
`, keyFile),
			})
			// lease proves the broker's admin credential works: the issued
			// password logs in, a wrong one is refused.
			lease := func(when string) {
				t.Helper()
				var r reqOut
				var c credsOut
				w.ok("alice", &r, "request", "rot-pg/readonly", "--for", "10m", "--reason", "INC-9 "+when, "-o", "json")
				w.ok("alice", &c, "creds", r.ID, "-o", "json")
				conn, err := pgLogin(ctx, c, c.Password)
				if err != nil {
					t.Fatalf("%s: login with the issued credential: %v", when, err)
				}
				conn.Close(ctx)
				if conn, err := pgLogin(ctx, c, c.Password+"x"); err == nil {
					conn.Close(ctx)
					t.Fatalf("%s: a wrong password logs in: PostgreSQL does not check passwords", when)
				}
				w.ok("alice", nil, "done", r.ID)
			}

			first := w.startProcess("MAYFLY_FAILPOINT=crash-after-rotation:" + step)
			t.Cleanup(func() { first.Process.Kill() })
			if out, err := w.runWith("carol", dsn0, "targets", "set-credential", "rot-pg"); err != nil {
				t.Fatalf("set-credential: %v: %s", err, out)
			}
			lease("before the rotation")
			if out, err := w.runWith("carol", "", "targets", "rotate-credential", "rot-pg"); err == nil {
				t.Fatalf("rotate-credential answered %s; the failpoint should have killed the server", out)
			}
			w.waitKilled()

			// The restarted server works at once, whichever password the
			// target has now.
			second := w.startProcess()
			t.Cleanup(func() { second.Process.Kill() })
			lease("right after the restart")
			if step != credential.StepPendingStored && pgCanLogin(ctx, dsn0) {
				t.Error("the target changed its admin password, yet the old one still logs in")
			}

			// The restarted server, the SQLite store's only one, freed the
			// dead server's lock as it started: the rotation is resolved at
			// once (not when the lock lapses, credential.LockTTL later) and
			// the store holds one credential, which logs in.
			waitFor(t, "the interrupted rotation to be resolved", 10*time.Second, func() bool {
				out, err := w.try("carol", "targets", "rotate-credential", "rot-pg")
				if err != nil {
					if msg := out + err.Error(); !strings.Contains(msg, "being rotated already") {
						t.Fatalf("rotate-credential after the restart: %v: %s", err, out)
					}
					return false
				}
				return true
			})
			second.Process.Kill()
			<-w.done
			cur := storedCredential(t, filepath.Join(w.dir, "mayfly.db"), keyFile, "rot-pg")
			if !pgCanLogin(ctx, cur) {
				t.Fatal("the stored credential does not log in after the second rotation")
			}
			if pgCanLogin(ctx, dsn0) {
				t.Error("the admin password from before both rotations still logs in")
			}
			u, _ := url.Parse(cur)
			pw, _ := u.User.Password()
			if pw == "" || strings.Contains(w.stderr.String(), pw) {
				t.Error("the server log holds the admin password")
			}
			third := w.startProcess()
			t.Cleanup(func() { third.Process.Kill() })
			lease("after the second rotation")
			// The audit trail tells the first rotation's fate: abandoned
			// when the kill came before the target changed, completed
			// (by the process or, after the kill, by the resolution)
			// otherwise; then the second rotation.
			rotated, abandoned := 2, 0
			if step == credential.StepPendingStored {
				rotated, abandoned = 1, 1
			}
			audit := w.ok("carol", nil, "audit", "--target", "rot-pg", "-o", "json")
			if n := strings.Count(audit, `"target.credential_rotated"`); n != rotated {
				t.Errorf("%d target.credential_rotated events; want %d", n, rotated)
			}
			if n := strings.Count(audit, `"target.credential_rotation_abandoned"`); n != abandoned {
				t.Errorf("%d target.credential_rotation_abandoned events; want %d", n, abandoned)
			}
		})
	}
}
