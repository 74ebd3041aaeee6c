package mayfly

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func statementFuzzed(text, proto, tag, errText string, unixNano, dur, rows int64, params string, nilParam, hmac bool) *Statement {
	s := &Statement{Text: text, Protocol: proto, Start: time.Unix(0, unixNano).UTC(), DurationUS: dur, Tag: tag, Rows: rows, Error: errText}
	if params != "" || nilParam {
		p := params
		s.Params = []*string{&p}
		if nilParam {
			s.Params = append(s.Params, nil, &text)
		}
	}
	if hmac {
		s.ParamsHMAC = []string{params, "", tag}
	}
	return s
}

func checkStatementJSON(t *testing.T, s *Statement) {
	t.Helper()
	want, werr := json.Marshal(s)
	got, gerr := s.AppendJSON([]byte("prefix"))
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("AppendJSON error %v, json.Marshal error %v", gerr, werr)
	}
	if werr != nil {
		return
	}
	if !bytes.HasPrefix(got, []byte("prefix")) {
		t.Fatalf("AppendJSON dropped what it appends to: %q", got)
	}
	if got = got[len("prefix"):]; !bytes.Equal(got, want) {
		t.Fatalf("AppendJSON wrote\n%s\njson.Marshal\n%s", got, want)
	}
}

func TestStatementJSON(t *testing.T) {
	at := time.Date(2026, 12, 3, 8, 0, 0, 123456789, time.UTC)
	clear := "x<y>&\"'"
	for _, s := range []*Statement{
		{},
		{Text: "SELECT 1", Protocol: "simple", Start: at, DurationUS: 42, Tag: "SELECT 1", Rows: 1},
		{Text: "SELECT $1 <> '&'\n\t\r\b\f\x00\x1f\x7f", Protocol: "extended", Start: at.Truncate(time.Second), Error: "42P01: relation \"x\" does not exist",
			Params: []*string{&clear, nil}, ParamsHMAC: []string{"ab", ""}},
		{Text: "bad \xff\xfe utf8 \xe2\x80 and \u2028\u2029 é 😀", Start: at.Add(-time.Hour)},
		{Text: "empty slices", Params: []*string{}, ParamsHMAC: []string{}},
		{Text: "far future", Start: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Text: "zone", Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 5*3600+30*60))},
	} {
		checkStatementJSON(t, s)
	}
}

func FuzzStatementJSON(f *testing.F) {
	f.Add("SELECT 1", "simple", "SELECT 1", "", int64(1764748800123456789), int64(42), int64(1), "", false, false)
	f.Add("SELECT $1 <> '&'\n\x00", "extended", "", "42P01: no", int64(0), int64(-1), int64(0), "v\xff\u2028", true, true)
	f.Fuzz(func(t *testing.T, text, proto, tag, errText string, unixNano, dur, rows int64, params string, nilParam, hmac bool) {
		checkStatementJSON(t, statementFuzzed(text, proto, tag, errText, unixNano, dur, rows, params, nilParam, hmac))
	})
}

func BenchmarkStatementJSON(b *testing.B) {
	s := &Statement{Text: "SELECT abalance FROM pgbench_accounts WHERE aid = 42520;", Protocol: "simple",
		Start: time.Now().UTC(), DurationUS: 57, Tag: "SELECT 1", Rows: 1}
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(s)
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.AppendJSON(nil)
		}
	})
}
