// Package acctname checks the names of the accounts connectors manage:
// lowercase letters, digits and underscores within a target's limit, and
// always under the target's prefix, so no connector ever touches an
// account Mayfly does not manage.
package acctname

import (
	"strings"

	"github.com/mayflyhq/mayfly"
)

// ValidName checks that name has at most maxLen bytes of lowercase letters,
// digits and underscores; an empty name is refused unless allowEmpty.
func ValidName(name string, maxLen int, allowEmpty bool) error {
	if name == "" && !allowEmpty {
		return mayfly.Errorf(mayfly.EINVALID, "account name is empty")
	}
	if len(name) > maxLen {
		return mayfly.Errorf(mayfly.EINVALID, "account name is longer than %d bytes", maxLen)
	}
	for i := 0; i < len(name); i++ {
		if b := name[i]; (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '_' {
			return mayfly.Errorf(mayfly.EINVALID, "account name may contain only lowercase letters, digits and underscores")
		}
	}
	return nil
}

// CheckName validates a requested account name: well formed and under the
// target's prefix.
func CheckName(name, prefix string, maxLen int) error {
	if err := ValidName(name, maxLen, false); err != nil {
		return err
	}
	if !strings.HasPrefix(name, prefix) {
		return mayfly.Errorf(mayfly.EINVALID, "account name must start with the target prefix %q", prefix)
	}
	return nil
}
