// Package sink delivers the audit trail to external systems: JSON-lines
// files with size-based rotation, syslog receivers (RFC 5424 over UDP or
// TCP) and HTTPS webhooks.
//
// Each sink keeps a durable cursor in the store, the sequence number of the
// last event it confirmed, and reads the trail from there. Delivery is at
// least once and in sequence order: a sink that is down delays delivery but
// loses nothing, and since sinks read the store in their own goroutines, a
// slow or failing sink never blocks requests or revocations.
package sink

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
)

// Sink types.
const (
	TypeFile    = "file"
	TypeSyslog  = "syslog"
	TypeWebhook = "webhook"
)

// Defaults applied to zero fields of a Config.
const (
	DefaultMaxBytes  = 100 << 20 // 100 MiB per file before rotation
	DefaultMaxFiles  = 10        // rotated files kept besides the live one
	DefaultAppName   = "mayfly"
	DefaultFacility  = 10 // authpriv
	DefaultBatchSize = 100
	DefaultTimeout   = 10 * time.Second

	maxBatchSize = 10000
)

// Config describes one sink. The YAML tags are the configuration keys.
type Config struct {
	// Name identifies the sink; its cursor is stored under
	// "audit_sink_cursor:<name>", so renaming a sink delivers the retained
	// trail again from the start.
	Name string `yaml:"name"`
	// Type is file, syslog or webhook.
	Type string `yaml:"type"`

	// Path is the file a file sink appends to (its directory must exist).
	Path string `yaml:"path"`
	// MaxBytes is the size at which the file is rotated (default 100 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxFiles is how many rotated files (path.1 … path.N) are kept besides
	// the live one (default 10); the oldest is dropped.
	MaxFiles int `yaml:"max_files"`

	// Network is udp or tcp for a syslog sink; tcp uses octet-counting
	// framing (RFC 6587).
	Network string `yaml:"network"`
	// Address is the receiver's host:port.
	Address string `yaml:"address"`
	// AppName is the APP-NAME of each message (default mayfly).
	AppName string `yaml:"app_name"`
	// Facility is a facility name (auth, authpriv, daemon, local0 … local7,
	// …) or number 0–23 (default authpriv).
	Facility string `yaml:"facility"`

	// URL receives a POST of {"events": [...]} for a webhook sink.
	URL string `yaml:"url"`
	// SecretEnv names the environment variable holding the key that signs
	// each webhook body: header X-Mayfly-Signature: sha256=<hex HMAC-SHA256>.
	SecretEnv string `yaml:"secret_env"`

	// BatchSize is the most events sent in one delivery and confirmed by
	// one cursor update (default 100).
	BatchSize int `yaml:"batch_size"`
	// Timeout bounds one delivery to a syslog or webhook sink (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Validate checks a list of sink configurations: names present, well formed
// and unique, a known type, the fields that type requires, and no field
// that belongs to another type. It returns the first problem as an
// EINVALID *mayfly.Error.
func Validate(cfgs []Config) error {
	seen := make(map[string]bool, len(cfgs))
	for i, c := range cfgs {
		if c.Name == "" {
			return mayfly.Errorf(mayfly.EINVALID, "audit sink #%d: name is required", i+1)
		}
		if !nameRE.MatchString(c.Name) {
			return mayfly.Errorf(mayfly.EINVALID, "audit sink %q: name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", c.Name)
		}
		if seen[c.Name] {
			return mayfly.Errorf(mayfly.EINVALID, "audit sink %q: name is used by another sink", c.Name)
		}
		seen[c.Name] = true
		if err := c.validate(); err != nil {
			return mayfly.Errorf(mayfly.EINVALID, "audit sink %q: %s", c.Name, err)
		}
	}
	return nil
}

// validate returns the first problem of one sink as a plain message.
func (c Config) validate() error {
	if c.BatchSize < 0 || c.BatchSize > maxBatchSize {
		return fmt.Errorf("batch_size must be between 1 and %d (0 for the default %d)", maxBatchSize, DefaultBatchSize)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout must not be negative")
	}
	// Fields that belong to another type are most likely a mistake.
	foreign := map[string][]struct {
		key string
		set bool
	}{
		TypeFile:    {{"network", c.Network != ""}, {"address", c.Address != ""}, {"app_name", c.AppName != ""}, {"facility", c.Facility != ""}, {"url", c.URL != ""}, {"secret_env", c.SecretEnv != ""}, {"timeout", c.Timeout != 0}},
		TypeSyslog:  {{"path", c.Path != ""}, {"max_bytes", c.MaxBytes != 0}, {"max_files", c.MaxFiles != 0}, {"url", c.URL != ""}, {"secret_env", c.SecretEnv != ""}},
		TypeWebhook: {{"path", c.Path != ""}, {"max_bytes", c.MaxBytes != 0}, {"max_files", c.MaxFiles != 0}, {"network", c.Network != ""}, {"address", c.Address != ""}, {"app_name", c.AppName != ""}, {"facility", c.Facility != ""}},
	}
	fields, ok := foreign[c.Type]
	if !ok {
		if c.Type == "" {
			return fmt.Errorf("type is required (file, syslog or webhook)")
		}
		return fmt.Errorf("unknown type %q (want file, syslog or webhook)", c.Type)
	}
	for _, f := range fields {
		if f.set {
			return fmt.Errorf("%s does not apply to a %s sink", f.key, c.Type)
		}
	}
	switch c.Type {
	case TypeFile:
		if c.Path == "" {
			return fmt.Errorf("path is required")
		}
		if c.MaxBytes < 0 {
			return fmt.Errorf("max_bytes must not be negative")
		}
		if c.MaxFiles < 0 {
			return fmt.Errorf("max_files must not be negative")
		}
	case TypeSyslog:
		if c.Network != "udp" && c.Network != "tcp" {
			return fmt.Errorf("network must be udp or tcp")
		}
		if c.Address == "" {
			return fmt.Errorf("address is required")
		}
		if _, port, err := net.SplitHostPort(c.Address); err != nil || port == "" {
			return fmt.Errorf("address %q must be host:port", c.Address)
		}
		if len(c.AppName) > 48 || !printASCII(c.AppName) {
			return fmt.Errorf("app_name must be at most 48 printable ASCII characters without spaces")
		}
		if _, err := facility(c.Facility); err != nil {
			return err
		}
	case TypeWebhook:
		if c.URL == "" {
			return fmt.Errorf("url is required")
		}
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL may carry a token: do not echo it.
			return fmt.Errorf("url must be an absolute http or https URL")
		}
	}
	return nil
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxFiles == 0 {
		c.MaxFiles = DefaultMaxFiles
	}
	if c.AppName == "" {
		c.AppName = DefaultAppName
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// facility parses a facility name or number; "" is the default.
func facility(s string) (int, error) {
	if s == "" {
		return DefaultFacility, nil
	}
	if n, ok := facilities[strings.ToLower(s)]; ok {
		return n, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 23 {
		return n, nil
	}
	return 0, fmt.Errorf("facility %q must be a syslog facility name (auth, authpriv, daemon, local0 … local7) or a number from 0 to 23", s)
}

// printASCII reports whether s holds only printable ASCII without spaces
// (RFC 5424 PRINTUSASCII).
func printASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}
