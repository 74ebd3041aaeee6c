package scim

import (
	"regexp"
	"strings"
)

// nameRE is what a Mayfly user or group name looks like.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)

// UserName maps a SCIM userName to a Mayfly user name: it lowercases it and
// drops an "@" and everything after it, so "Alice.Smith@Example.com"
// becomes "alice.smith". The result must match [a-z][a-z0-9_.-]{0,62};
// ok is false when it does not.
func UserName(userName string) (name string, ok bool) {
	name, _, _ = strings.Cut(strings.ToLower(strings.TrimSpace(userName)), "@")
	return name, nameRE.MatchString(name)
}

// GroupName maps a SCIM group displayName to a Mayfly group name: it
// lowercases it, turns every run of characters other than a-z, 0-9, "_",
// "." and "-" into one "-", trims "-" at both ends, and prefixes "g-" when
// the result does not start with a letter. "Database Admins" becomes
// "database-admins" and "2FA Users" becomes "g-2fa-users". ok is false
// when the result is empty or longer than 63 bytes.
func GroupName(displayName string) (name string, ok bool) {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(displayName) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			b.WriteRune(r)
			dash = r == '-'
			continue
		}
		if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	name = strings.Trim(b.String(), "-")
	if name == "" {
		return "", false
	}
	if name[0] < 'a' || name[0] > 'z' {
		name = "g-" + name
	}
	return name, nameRE.MatchString(name)
}
