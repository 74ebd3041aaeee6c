package sink

import (
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly"
)

func TestValidate(t *testing.T) {
	file := Config{Name: "local", Type: "file", Path: "/var/log/mayfly/audit.log"}
	udp := Config{Name: "siem", Type: "syslog", Network: "udp", Address: "10.0.0.5:514", Facility: "local4"}
	hook := Config{Name: "hook", Type: "webhook", URL: "https://siem.example.com/ingest?token=abc", SecretEnv: "HOOK_KEY", Timeout: 5 * time.Second}
	with := func(c Config, f func(*Config)) Config { f(&c); return c }
	tests := []struct {
		name string
		cfgs []Config
		want string // substring of the error; "" for valid
	}{
		{"none", nil, ""},
		{"all types", []Config{file, udp, hook}, ""},
		{"tcp numeric facility", []Config{with(udp, func(c *Config) { c.Network = "tcp"; c.Facility = "4" })}, ""},
		{"missing name", []Config{with(file, func(c *Config) { c.Name = "" })}, "audit sink #1: name is required"},
		{"bad name", []Config{with(file, func(c *Config) { c.Name = "a b" })}, `audit sink "a b": name must be`},
		{"duplicate name", []Config{file, with(udp, func(c *Config) { c.Name = "local" })}, `audit sink "local": name is used by another sink`},
		{"missing type", []Config{with(file, func(c *Config) { c.Type = "" })}, "type is required"},
		{"unknown type", []Config{with(file, func(c *Config) { c.Type = "kafka" })}, `unknown type "kafka"`},
		{"file without path", []Config{with(file, func(c *Config) { c.Path = "" })}, "path is required"},
		{"negative max_bytes", []Config{with(file, func(c *Config) { c.MaxBytes = -1 })}, "max_bytes must not be negative"},
		{"negative max_files", []Config{with(file, func(c *Config) { c.MaxFiles = -1 })}, "max_files must not be negative"},
		{"file with url", []Config{with(file, func(c *Config) { c.URL = "https://x" })}, "url does not apply to a file sink"},
		{"syslog bad network", []Config{with(udp, func(c *Config) { c.Network = "unix" })}, "network must be udp or tcp"},
		{"syslog no network", []Config{with(udp, func(c *Config) { c.Network = "" })}, "network must be udp or tcp"},
		{"syslog no address", []Config{with(udp, func(c *Config) { c.Address = "" })}, "address is required"},
		{"syslog no port", []Config{with(udp, func(c *Config) { c.Address = "10.0.0.5" })}, "must be host:port"},
		{"syslog bad facility", []Config{with(udp, func(c *Config) { c.Facility = "24" })}, `facility "24"`},
		{"syslog bad app_name", []Config{with(udp, func(c *Config) { c.AppName = "my app" })}, "app_name must be"},
		{"syslog with path", []Config{with(udp, func(c *Config) { c.Path = "/tmp/x" })}, "path does not apply to a syslog sink"},
		{"webhook no url", []Config{with(hook, func(c *Config) { c.URL = "" })}, "url is required"},
		{"webhook relative url", []Config{with(hook, func(c *Config) { c.URL = "/ingest" })}, "url must be an absolute http or https URL"},
		{"webhook ftp url", []Config{with(hook, func(c *Config) { c.URL = "ftp://x/y" })}, "url must be an absolute http or https URL"},
		{"webhook with address", []Config{with(hook, func(c *Config) { c.Address = "x:1" })}, "address does not apply to a webhook sink"},
		{"batch too large", []Config{with(hook, func(c *Config) { c.BatchSize = 10001 })}, "batch_size must be between 1 and 10000"},
		{"negative timeout", []Config{with(hook, func(c *Config) { c.Timeout = -time.Second })}, "timeout must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.cfgs)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v; want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v; want an error containing %q", err, tt.want)
			}
			if got := mayfly.ErrorCode(err); got != mayfly.EINVALID {
				t.Errorf("ErrorCode = %q; want %q", got, mayfly.EINVALID)
			}
		})
	}
}

func TestValidateDoesNotEchoURL(t *testing.T) {
	err := Validate([]Config{{Name: "h", Type: "webhook", URL: "ftp://user:hunter2@x/?token=s3cret"}})
	if err == nil {
		t.Fatal("Validate = nil; want an error")
	}
	for _, secret := range []string{"hunter2", "s3cret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains %q", err, secret)
		}
	}
}

func TestFacility(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{{"", 10}, {"auth", 4}, {"AUTHPRIV", 10}, {"local7", 23}, {"0", 0}, {"23", 23}}
	for _, tt := range tests {
		got, err := facility(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("facility(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestNewSecretEnv(t *testing.T) {
	db := openStore(t)
	cfg := Config{Name: "h", Type: "webhook", URL: "https://example.com/", SecretEnv: "MAYFLY_TEST_HOOK_KEY"}
	_, err := New(db, []Config{cfg}, func(string) string { return "" }, nil)
	if err == nil || !strings.Contains(err.Error(), "MAYFLY_TEST_HOOK_KEY") {
		t.Fatalf("New with the secret unset = %v; want an error naming the variable", err)
	}
	if got := mayfly.ErrorCode(err); got != mayfly.EINVALID {
		t.Errorf("ErrorCode = %q; want %q", got, mayfly.EINVALID)
	}
	if _, err := New(db, []Config{cfg}, func(string) string { return "k" }, nil); err != nil {
		t.Fatalf("New with the secret set = %v; want nil", err)
	}
	if _, err := New(db, []Config{{Name: "x"}}, nil, nil); err == nil {
		t.Fatal("New with an invalid config = nil; want an error")
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {7, time.Minute}, {100, time.Minute}}
	for _, tt := range tests {
		if got := backoff(time.Second, time.Minute, tt.n); got != tt.want {
			t.Errorf("backoff(1s, 1m, %d) = %v; want %v", tt.n, got, tt.want)
		}
	}
}
