package redis

import (
	"context"
	"strings"

	"github.com/mayflyhq/mayfly"
)

// ChangeAdminPassword replaces every password of the ACL user the
// connector logs in as with password (ACL SETUSER user resetpass
// >password, each a separate argument), and saves the ACL file when the
// server uses one. It refuses the default user, whose password every
// client without a user name shares.
func (c *Connector) ChangeAdminPassword(ctx context.Context, password string) error {
	if c.adminUser == "" || c.adminUser == "default" {
		return mayfly.Errorf(mayfly.EINVALID, "redis target: rotation needs a dedicated admin_user; Mayfly does not change the default user's password")
	}
	if password == "" || strings.ContainsAny(password, " \r\n") {
		return mayfly.Errorf(mayfly.EINVALID, "redis target: the new password is empty or contains white space")
	}
	if err := c.rdb.Do(ctx, "ACL", "SETUSER", c.adminUser, "resetpass", ">"+password).Err(); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "redis target: change the admin password: %s", safeMessage(err))
	}
	if err := c.saveACL(ctx); err != nil {
		return mayfly.Errorf(mayfly.EUNAVAILABLE, "redis target: the admin password changed but the ACL file was not saved: %s", safeMessage(err))
	}
	return nil
}
