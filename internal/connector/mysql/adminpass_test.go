package mysql

import (
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
)

func FuzzWithPassword(f *testing.F) {
	f.Add("admin:old@tcp(db:3306)/", "new")
	f.Add("admin@tcp(127.0.0.1)/app?timeout=5s", "p@ss:w/rd")
	f.Fuzz(func(t *testing.T, dsn, pw string) {
		got, err := WithPassword(dsn, pw)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "the credential is not a valid MySQL DSN") && msg != "the credential names no user" {
				t.Fatalf("error quotes the DSN: %v", err)
			}
			return
		}
		before, _ := mysql.ParseDSN(dsn)
		cfg, err := mysql.ParseDSN(got)
		if err != nil {
			t.Fatalf("WithPassword(%q, %q) = %q, which does not parse: %v", dsn, pw, got, err)
		}
		if cfg.Passwd != pw || cfg.User != before.User || cfg.Addr != before.Addr || cfg.DBName != before.DBName {
			t.Fatalf("WithPassword(%q, %q) = %q: user %q addr %q db %q password %q", dsn, pw, got, cfg.User, cfg.Addr, cfg.DBName, cfg.Passwd)
		}
	})
}
