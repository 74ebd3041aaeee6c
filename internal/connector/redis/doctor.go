package redis

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Diagnose checks that Mayfly's ACL user may create and delete ACL users
// and kill their connections (asked of the server with ACL DRYRUN), and
// the clock.
func (c *Connector) Diagnose(ctx context.Context, t mayfly.Target) []mayfly.Finding {
	fs := &mayfly.Findings{Target: t.Name}
	me, err := c.rdb.Do(ctx, "ACL", "WHOAMI").Text()
	if err != nil {
		fs.Add("connect", mayfly.FindingFail, "cannot run ACL WHOAMI as the admin: "+err.Error(),
			"check the target's address and admin credential, and that the admin may run ACL commands")
		return fs.List
	}
	fs.Add("connect", mayfly.FindingOK, "connected as "+me, "")
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
			fs.Add(probe.check, mayfly.FindingWarn, "cannot check: this Redis has no ACL DRYRUN (before 7.0)", "upgrade to Redis 7, or check the admin's ACL by hand")
		case err != nil:
			fs.Add(probe.check, mayfly.FindingFail, fmt.Sprintf("ACL DRYRUN %s: %v", me, err), "")
		case res == "OK":
			fs.Add(probe.check, mayfly.FindingOK, me+" may run "+fmt.Sprintf("%v %v", probe.cmd[0], probe.cmd[1]), "")
		default:
			fs.Add(probe.check, mayfly.FindingFail, me+": "+res+": "+probe.why,
				fmt.Sprintf("ACL SETUSER %s %s", me, probe.fix))
		}
	}
	asked := time.Now()
	if tm, err := c.rdb.Time(ctx).Result(); err == nil {
		skew := tm.Sub(asked.Add(time.Since(asked) / 2))
		fs.List = append(fs.List, mayfly.ClockFinding(t.Name, skew, mayfly.MaxClockSkew))
	}
	return fs.List
}
