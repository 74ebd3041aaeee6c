package redis

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

const maxSkew = 2 * time.Second

// Diagnose checks that Mayfly's ACL user may create and delete ACL users
// and kill their connections (asked of the server with ACL DRYRUN), and
// the clock.
func (c *Connector) Diagnose(ctx context.Context, t mayfly.Target) []mayfly.Finding {
	f := func(check, status, detail, fix string) mayfly.Finding {
		return mayfly.Finding{Target: t.Name, Check: check, Status: status, Detail: detail, Fix: fix}
	}
	me, err := c.rdb.Do(ctx, "ACL", "WHOAMI").Text()
	if err != nil {
		return []mayfly.Finding{f("connect", mayfly.FindingFail, "cannot run ACL WHOAMI as the admin: "+err.Error(),
			"check the target's address and admin credential, and that the admin may run ACL commands")}
	}
	out := []mayfly.Finding{f("connect", mayfly.FindingOK, "connected as "+me, "")}
	for _, probe := range []struct {
		check string
		cmd   []any
		why   string
		fix   string
	}{
		{"create users", []any{"ACL", "SETUSER", "mf_doctor_probe"}, "no lease can be issued", "+acl|setuser"},
		{"delete users", []any{"ACL", "DELUSER", "mf_doctor_probe"}, "no lease can be revoked", "+acl|deluser"},
		{"end sessions", []any{"CLIENT", "KILL", "USER", "mf_doctor_probe"}, "connections of a deleted user survive revocation", "+client|kill"},
	} {
		args := append([]any{"ACL", "DRYRUN", me}, probe.cmd...)
		res, err := c.rdb.Do(ctx, args...).Text()
		switch {
		case err != nil && strings.Contains(strings.ToLower(err.Error()), "unknown subcommand"):
			out = append(out, f(probe.check, mayfly.FindingWarn, "cannot check: this Redis has no ACL DRYRUN (before 7.0)", "upgrade to Redis 7, or check the admin's ACL by hand"))
		case err != nil:
			out = append(out, f(probe.check, mayfly.FindingFail, fmt.Sprintf("ACL DRYRUN %s: %v", me, err), ""))
		case res == "OK":
			out = append(out, f(probe.check, mayfly.FindingOK, me+" may run "+fmt.Sprintf("%v %v", probe.cmd[0], probe.cmd[1]), ""))
		default:
			out = append(out, f(probe.check, mayfly.FindingFail, me+": "+res+": "+probe.why,
				fmt.Sprintf("ACL SETUSER %s %s", me, probe.fix)))
		}
	}
	asked := time.Now()
	if tm, err := c.rdb.Time(ctx).Result(); err == nil {
		skew := tm.Sub(asked.Add(time.Since(asked) / 2))
		if skew < 0 {
			skew = -skew
		}
		fd := f("clock", mayfly.FindingOK, fmt.Sprintf("within %s of Mayfly's", skew.Round(time.Millisecond)), "")
		if skew > maxSkew {
			fd.Status, fd.Detail, fd.Fix = mayfly.FindingWarn, fmt.Sprintf("%s away from Mayfly's", skew.Round(time.Millisecond)), "run NTP on both machines"
		}
		out = append(out, fd)
	}
	return out
}
