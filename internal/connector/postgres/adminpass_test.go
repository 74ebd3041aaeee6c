package postgres

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestWithPassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://admin:old@db.example.com:5432/app?sslmode=disable",
		"postgresql://admin@db.example.com/app",
		"postgres://admin@db.example.com/app?password=old&sslmode=disable",
		"host=db.example.com user=admin password=old dbname=app",
		"host=db.example.com user=admin dbname=app",
	} {
		for _, pw := range []string{"n3w-Pass_word", `it's\odd`} {
			got, err := WithPassword(dsn, pw)
			if err != nil {
				t.Fatalf("WithPassword(%q) = %v", dsn, err)
			}
			cfg, err := pgconn.ParseConfig(got)
			if err != nil {
				t.Fatalf("WithPassword(%q) = %q, which does not parse: %v", dsn, got, err)
			}
			if cfg.Password != pw || cfg.User != "admin" || cfg.Host != "db.example.com" || cfg.Database != "app" {
				t.Errorf("WithPassword(%q, %q) parses as user %q password %q host %q db %q", dsn, pw, cfg.User, cfg.Password, cfg.Host, cfg.Database)
			}
		}
	}
	if _, err := WithPassword("postgres://u:SECRET@h:notaport/x", "p"); err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("WithPassword of a bad DSN = %v; want an error without the DSN", err)
	}
}

func FuzzWithPassword(f *testing.F) {
	f.Add("postgres://admin:old@db/app", "new")
	f.Add("host=db user=admin password='o\\'ld'", "n'ew\\")
	f.Add("postgres://admin@db/app?password=x", "p w")
	f.Fuzz(func(t *testing.T, dsn, pw string) {
		if strings.ContainsRune(pw, 0) {
			return
		}
		got, err := WithPassword(dsn, pw)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "the credential is not a valid PostgreSQL") && !strings.HasPrefix(msg, "the credential's key=value form") {
				t.Fatalf("error quotes the DSN: %v", err)
			}
			return
		}
		cfg, err := pgconn.ParseConfig(got)
		if err != nil {
			// The input parsed; what WithPassword made must too.
			t.Fatalf("WithPassword(%q, %q) = %q, which does not parse: %v", dsn, pw, got, err)
		}
		if cfg.Password != pw {
			t.Fatalf("WithPassword(%q, %q) = %q: password %q", dsn, pw, got, cfg.Password)
		}
	})
}
