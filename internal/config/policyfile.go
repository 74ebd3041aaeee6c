package config

import (
	"os"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/policy"
)

// PolicyFile is a file that holds policies (a whole configuration, or just
// targets, users and policies) and optionally test cases for them.
type PolicyFile struct {
	Config *Config
	Set    *policy.Set
	Tests  []PolicyTest
}

// PolicyTest is one expected decision.
type PolicyTest struct {
	Name       string        `yaml:"name"`
	User       string        `yaml:"user"`
	Groups     []string      `yaml:"groups"` // default: the user's configured groups
	Target     string        `yaml:"target"`
	Grant      string        `yaml:"grant"`
	Duration   time.Duration `yaml:"duration"`
	Reason     string        `yaml:"reason"`
	BreakGlass bool          `yaml:"break_glass"`
	At         string        `yaml:"at"` // RFC 3339 time the decision is made at (default now)
	Expect     string        `yaml:"expect"`
	Policy     string        `yaml:"policy"` // the policy expected to decide, optional
	Line       int           `yaml:"-"`
}

// LoadPolicyFile reads a file of policies for `policy check` and `policy
// test`, offline. A file without a store section is accepted: only its
// targets, users and policies are checked.
func LoadPolicyFile(path string) (*PolicyFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, mayfly.Errorf(mayfly.EINVALID, "read %s: %v", path, err)
	}
	c, err := parse(data, path, false)
	if err != nil {
		return nil, err
	}
	set, err := policy.Compile(c.Policies, c.TargetInfos())
	if err != nil {
		return nil, err
	}
	return &PolicyFile{Config: c, Set: set, Tests: c.Tests}, nil
}
