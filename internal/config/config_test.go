package config

import (
	"strings"
	"testing"
)

const h = "0000000000000000000000000000000000000000000000000000000000000001"

// issueExample is the configuration shape the scripting contract promises.
var issueExample = `listen: 127.0.0.1:8765
store: {sqlite: /var/lib/mayfly/mayfly.db}
users:
  - {name: alice, groups: [eng], token_sha256: "` + h + `"}
  - {name: bob, groups: [dba], token_sha256: "` + strings.Replace(h, "1", "2", 1) + `"}
  - {name: carol, groups: [dba, admin], token_sha256: "` + strings.Replace(h, "1", "3", 1) + `"}
admins: {groups: [admin]}
targets:
  - name: local-pg
    kind: postgres
    dsn: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"   # admin connection
    grants:
      readonly: {roles: [pg_read_all_data]}
policies:
  - {name: eng-read, groups: [eng], targets: [local-pg], grants: [readonly], max_duration: 1h, approvals: 0}
  - {name: eng-read-long, groups: [eng], targets: [local-pg], grants: [readonly], max_duration: 8h, approvals: 1, approver_groups: [dba]}
`

func TestParseContractExample(t *testing.T) {
	c, err := Parse([]byte(issueExample), "mayfly.yaml")
	if err != nil {
		t.Fatalf("Parse(contract example) = %v", err)
	}
	if got, want := len(c.Users), 3; got != want {
		t.Errorf("users = %d; want %d", got, want)
	}
	if !c.IsAdmin("carol", []string{"dba", "admin"}) || c.IsAdmin("bob", []string{"dba"}) {
		t.Errorf("IsAdmin: carol should be, bob should not")
	}
	tg := c.Targets[0]
	if tg.Prefix != "mf_" || tg.Grants["readonly"].Name != "readonly" || tg.Grants["readonly"].Roles[0] != "pg_read_all_data" {
		t.Errorf("target defaults/grants = %+v", tg)
	}
	if c.Policies[1].Line != 16 {
		t.Errorf("policy line = %d; want 16", c.Policies[1].Line)
	}
}

func TestParseErrors(t *testing.T) {
	base := "store: {sqlite: a.db}\n"
	tests := []struct{ name, yaml, want string }{
		{"empty", "", "empty configuration"},
		{"unknown field", base + "bogus: 1\n", `f.yaml:2: unknown key "bogus" in the top level`},
		{"no store", "listen: x\n", "store.sqlite"},
		{"bad user name", base + "users:\n  - {name: \"al ice\", token_sha256: \"" + h + "\"}\n", `f.yaml:3: user name "al ice"`},
		{"dup user", base + "users:\n  - {name: a, token_sha256: \"" + h + "\"}\n  - {name: a, token_sha256: \"" + strings.Replace(h, "1", "2", 1) + "\"}\n", `f.yaml:4: user "a" is defined twice`},
		{"shared token", base + "users:\n  - {name: a, token_sha256: \"" + h + "\"}\n  - {name: b, token_sha256: \"" + h + "\"}\n", "share a token"},
		{"target kind", base + "targets:\n  - {name: t, kind: oracle, grants: {r: {}}}\n", `f.yaml:3: target "t": unknown kind "oracle"`},
		{"target name", base + "targets:\n  - {name: \"T;drop\", kind: postgres, grants: {r: {}}}\n", `target name "T;drop"`},
		{"grant name", base + "targets:\n  - {name: t, kind: postgres, grants: {\"r'x\": {}}}\n", `grant name "r'x"`},
		{"no grants", base + "targets:\n  - {name: t, kind: postgres}\n", "at least one grant"},
		{"dup target", base + "targets:\n  - {name: t, kind: postgres, grants: {r: {}}}\n  - {name: t, kind: postgres, grants: {r: {}}}\n", `f.yaml:4: target "t" is defined twice`},
		{"bad prefix", base + "targets:\n  - {name: t, kind: postgres, prefix: \"x'\", grants: {r: {}}}\n", "prefix"},
		{"prefix without trailing underscore", base + "targets:\n  - {name: t, kind: postgres, prefix: app, grants: {r: {}}}\n", `f.yaml:3: target "t": prefix "app"`},
		{"prefix post", base + "targets:\n  - {name: t, kind: postgres, prefix: post, grants: {r: {}}}\n", `prefix "post"`},
		{"instance key env name", base + "instance_key_env: \"A-B\"\n", `f.yaml:2: instance_key_env "A-B"`},
		{"bad duration", base + "policies:\n  - {name: p, max_duration: forever}\n", "f.yaml:3"},
		{"unknown admin", base + "admins: {users: [zed]}\n", `unknown user "zed"`},
		{"negative per_target", base + "scheduler: {per_target: -1}\n", "f.yaml:2: scheduler settings must be positive"},
		{"short claim", base + "scheduler: {claim_for: 10ms}\n", "f.yaml:2: scheduler.claim_for 10ms: want between 1s and 1h"},
		{"short leader ttl", base + "cluster: {leader_ttl: 500ms}\n", "f.yaml:2: cluster.leader_ttl 500ms: want between 1s and 10m"},
		{"long heartbeat", base + "cluster:\n  heartbeat_every: 1h\n", "f.yaml:2: cluster.heartbeat_every 1h0m0s: want between 100ms and 10m"},
		{"syntax", base + "targets: [\n", "f.yaml"},
		{"slack without bot token", base + "slack: {default_channel: \"#x\"}\n", "f.yaml:2: slack: bot_token_env is required"},
		{"slack without a way in", base + "slack: {bot_token_env: SLACK_BOT}\n", "signing_secret_env (clicks arrive over HTTP) or app_token_env"},
		{"slack env name", base + "slack: {bot_token_env: \"xoxb-123\", signing_secret_env: S}\n", `bot_token_env "xoxb-123" is not an environment variable name`},
		{"slack channel", base + "slack: {bot_token_env: B, signing_secret_env: S, default_channel: \"general chat\"}\n", `default_channel "general chat"`},
		{"slack api url", base + "slack: {bot_token_env: B, app_token_env: A, api_url: \"ftp://x\"}\n", "api_url"},
		{"slack id", base + "users:\n  - {name: a, token_sha256: \"" + h + "\", slack_id: \"bob\"}\n", `f.yaml:3: user "a": slack_id "bob" is not a Slack member id`},
		{"shared slack id", base + "users:\n  - {name: a, token_sha256: \"" + h + "\", slack_id: U0A}\n  - {name: b, token_sha256: \"" + strings.Replace(h, "1", "2", 1) + "\", slack_id: U0A}\n", "share slack_id U0A"},
		{"policy slack channel", base + "policies:\n  - {name: p, slack_channel: \"<!channel>\"}\n", `f.yaml:3: policy "p": slack_channel "<!channel>"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "f.yaml")
			if err == nil {
				t.Fatalf("Parse accepted %q", tt.yaml)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error = %q; want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseSlack(t *testing.T) {
	y := issueExample + `slack:
  bot_token_env: SLACK_BOT_TOKEN
  signing_secret_env: SLACK_SIGNING_SECRET
  default_channel: "#access"
  match_email: true
`
	y = strings.Replace(y, `approver_groups: [dba]}`, `approver_groups: [dba], slack_channel: C0DBA}`, 1)
	y = strings.Replace(y, `{name: bob, groups: [dba],`, `{name: bob, slack_id: U0BOB, groups: [dba],`, 1)
	c, err := Parse([]byte(y), "mayfly.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if !c.Slack.Enabled() || !c.Slack.MatchEmail || c.Slack.DefaultChannel != "#access" {
		t.Errorf("slack = %+v", c.Slack)
	}
	if got := c.SlackChannels(); len(got) != 1 || got["eng-read-long"] != "C0DBA" {
		t.Errorf("SlackChannels() = %v; want eng-read-long: C0DBA", got)
	}
	if c.Users[1].SlackID != "U0BOB" {
		t.Errorf("bob's slack_id = %q", c.Users[1].SlackID)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(issueExample))
	f.Add([]byte("store: {sqlite: a}\ntargets: [{name: x, kind: postgres, grants: {a: {roles: [r]}}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if err == nil && c.Store.SQLite == "" {
			t.Fatalf("accepted a config without a store")
		}
	})
}

// idleBase has one target of each kind that cannot report activity beside
// one that can.
const idleBase = `store: {sqlite: a.db}
users:
  - {name: alice, token_sha256: "` + h + `"}
targets:
  - {name: pg, kind: postgres, dsn: "postgres://x@127.0.0.1/x", labels: {env: prod}, grants: {read: {roles: [r]}}}
  - {name: sw, kind: script, labels: {env: lab}, commands: {provision: [p], revoke: [r], accounts: [a]}, grants: {ops: {}}}
  - name: host
    kind: ssh
    address: 127.0.0.1:22
    grants:
      cert: {principals: [ops]}
      local: {host_user: true}
policies:
`

func TestIdleTimeoutNeedsActivity(t *testing.T) {
	tests := []struct {
		name, policy, want string // want "" accepts
	}{
		{"postgres", "  - {name: p, users: [alice], targets: [pg], grants: [read], idle_timeout: 10m, max_duration: 1h}\n", ""},
		{"ssh host user", "  - {name: p, users: [alice], targets: [host], grants: [local], idle_timeout: 10m, max_duration: 1h}\n", ""},
		{"script without idle", "  - {name: p, users: [alice], targets: [sw], grants: [ops], max_duration: 1h}\n", ""},
		{"script", "  - {name: p, users: [alice], targets: [sw], grants: [ops], idle_timeout: 10m, max_duration: 1h}\n",
			`f.yaml:14: policy "p": idle_timeout cannot apply to target "sw" grant "ops"`},
		{"ssh certificate", "  - {name: p, users: [alice], targets: [host], grants: [\"*\"], idle_timeout: 10m, max_duration: 1h}\n",
			`f.yaml:14: policy "p": idle_timeout cannot apply to target "host" grant "cert"`},
		{"every target", "  - {name: p, users: [alice], targets: [\"*\"], grants: [\"*\"], idle_timeout: 10m, max_duration: 1h}\n", "idle_timeout cannot apply"},
		{"by label", "  - {name: p, users: [alice], target_labels: {env: lab}, grants: [\"*\"], idle_timeout: 1h, max_duration: 1h}\n", `target "sw"`},
		{"label elsewhere", "  - {name: p, users: [alice], target_labels: {env: prod}, grants: [\"*\"], idle_timeout: 1h, max_duration: 1h}\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(idleBase+tt.policy), "f.yaml")
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse = %v; want it accepted", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Parse accepted idle_timeout; want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("Parse error = %q; want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestInstanceKeyEnvReachesTargets(t *testing.T) {
	c, err := Parse([]byte(idleBase+"instance_key_env: MAYFLY_INSTANCE_KEY\n"), "f.yaml")
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	for _, tg := range c.Targets {
		if tg.InstanceKeyEnv != "MAYFLY_INSTANCE_KEY" {
			t.Errorf("target %s InstanceKeyEnv = %q; want MAYFLY_INSTANCE_KEY", tg.Name, tg.InstanceKeyEnv)
		}
	}
}
