package mayfly

import (
	"time"
)

// Target kinds.
const (
	KindPostgres = "postgres"
	KindMySQL    = "mysql"
	KindRedis    = "redis"
	KindSSH      = "ssh"
	KindScript   = "script"
)

// DefaultPrefix starts the name of every account Mayfly manages.
const DefaultPrefix = "mf_"

// Target is a system Mayfly creates accounts on, as configured. Fields that
// belong to one kind say so; a connector rejects settings it does not use.
type Target struct {
	Name   string            `yaml:"name" json:"name"`
	Kind   string            `yaml:"kind" json:"kind"`
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
	// Prefix starts every managed account name (default "mf_").
	Prefix string `yaml:"prefix" json:"prefix"`
	// NameTemplate builds account names: {prefix}, {user}, {random}
	// (default "{prefix}{user}_{random}").
	NameTemplate string `yaml:"name_template" json:"name_template,omitempty"`
	// ConnectionLimit caps concurrent sessions of one ephemeral account
	// (postgres, mysql; default 10).
	ConnectionLimit int `yaml:"connection_limit" json:"connection_limit,omitempty"`
	// Grants by name.
	Grants map[string]Grant `yaml:"grants" json:"grants"`
	// RemoveUnmarked lets the reconciler remove accounts under the prefix
	// that carry no mark of this installation and that no lease of this
	// store ever named. Off by default: such accounts are only reported,
	// since Mayfly cannot tell them from accounts it did not make.
	// Superusers are never removed.
	RemoveUnmarked bool `yaml:"remove_unmarked" json:"remove_unmarked,omitempty"`
	// InstanceKeyEnv names the environment variable holding this broker
	// installation's key, from which connectors derive the mark they put on
	// every account they create; set from the top-level instance_key_env.
	InstanceKeyEnv string `yaml:"-" json:"-"`

	// DSN is the admin connection (postgres, mysql). Never returned by
	// any API.
	DSN string `yaml:"dsn" json:"-"`
	// DSNEnv names an environment variable holding the DSN instead.
	DSNEnv string `yaml:"dsn_env" json:"-"`
	// SCRAMIterations is the PBKDF2 iteration count of the SCRAM-SHA-256
	// verifier Mayfly computes for generated passwords (postgres; default 1).
	SCRAMIterations int `yaml:"scram_iterations" json:"scram_iterations,omitempty"`
	// PublicHost and PublicPort override what users are told to connect to
	// (postgres, mysql, redis), when it differs from the admin address.
	PublicHost string `yaml:"public_host" json:"public_host,omitempty"`
	PublicPort int    `yaml:"public_port" json:"public_port,omitempty"`
	// MaxConns caps the admin connection pool (default 16).
	MaxConns int `yaml:"max_conns" json:"max_conns,omitempty"`
	// RotateEvery, when set, makes Mayfly change the password of its own
	// admin account on the target this often, to a random one it stores
	// sealed (postgres, mysql, redis; the credential must be stored with
	// `mayfly targets set-credential`).
	RotateEvery time.Duration `yaml:"rotate_every" json:"rotate_every,omitempty"`

	// Address is host:port (redis, ssh).
	Address string `yaml:"address" json:"address,omitempty"`
	// AdminUser, AdminPassword(Env) authenticate the admin (redis ACL user;
	// ssh host admin).
	AdminUser        string `yaml:"admin_user" json:"-"`
	AdminPassword    string `yaml:"admin_password" json:"-"`
	AdminPasswordEnv string `yaml:"admin_password_env" json:"-"`
	// AdminKeyFile is the private key Mayfly uses to reach an SSH host as
	// AdminUser for ephemeral host users (ssh).
	AdminKeyFile string `yaml:"admin_key_file" json:"-"`
	// HostKey pins the SSH host's public key (authorized_keys format) (ssh).
	HostKey string `yaml:"host_key" json:"-"`
	// KRLFile is where the list of revoked certificates is written (ssh).
	KRLFile string `yaml:"krl_file" json:"krl_file,omitempty"`

	// Commands of a scripted target (script): executables with arguments.
	Commands ScriptCommands `yaml:"commands" json:"-"`
	// Timeout bounds one scripted command (script; default 30s).
	Timeout time.Duration `yaml:"timeout" json:"timeout,omitempty"`
}

// ScriptCommands are the executables of a scripted target.
type ScriptCommands struct {
	Provision []string `yaml:"provision"`
	Revoke    []string `yaml:"revoke"`
	Accounts  []string `yaml:"accounts"`
	Check     []string `yaml:"check"`
}

// Grant is a named, tightly scoped permission set on a target, in the
// target's own terms. Fields that belong to one kind say so.
type Grant struct {
	Name string `yaml:"-" json:"name"`
	// Roles to join (postgres).
	Roles []string `yaml:"roles" json:"roles,omitempty"`
	// Statements run after the account is created (postgres, mysql);
	// {{name}} expands to the quoted account.
	Statements []string `yaml:"statements" json:"statements,omitempty"`
	// Database users are told to connect to (postgres, mysql).
	Database string `yaml:"database" json:"database,omitempty"`
	// ACL rules (redis), e.g. "~app:* +@read".
	ACL string `yaml:"acl" json:"acl,omitempty"`
	// Principals of the certificate (ssh).
	Principals []string `yaml:"principals" json:"principals,omitempty"`
	// Extensions of the certificate (ssh; default permit-pty).
	Extensions []string `yaml:"extensions" json:"extensions,omitempty"`
	// ForceCommand and SourceAddress are certificate critical options (ssh).
	ForceCommand  string `yaml:"force_command" json:"force_command,omitempty"`
	SourceAddress string `yaml:"source_address" json:"source_address,omitempty"`
	// HostUser asks for an ephemeral local user on the host (ssh).
	HostUser bool `yaml:"host_user" json:"host_user,omitempty"`
	// HostGroups the ephemeral host user joins (ssh).
	HostGroups []string `yaml:"host_groups" json:"host_groups,omitempty"`
	// Via is how users reach the target: "direct" (the default) or
	// "gateway", only through Mayfly's gateway, which records the session.
	Via string `yaml:"via" json:"via,omitempty"`
	// Params are passed to scripted targets (script).
	Params map[string]string `yaml:"params" json:"params,omitempty"`
	// RecordParams says how the gateway records bind parameters: "hmac"
	// (the default: a keyed hash of each) or "clear".
	RecordParams string `yaml:"record_params" json:"record_params,omitempty"`
}

// ViaGateway is the Via of a grant reached only through a gateway.
const ViaGateway = "gateway"

// GatewayActivityEvery is how often at most a gateway reports a lease's
// activity to the idle check: the last report is at most this old when
// the user was busy, so the idle check allows it on top of idle_timeout
// (never ending a busy lease early).
const GatewayActivityEvery = time.Second
