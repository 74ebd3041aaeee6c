package mayfly

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends s encoded as JSON to dst: the bytes json.Marshal
// writes for it (compact, with <, >, &, U+2028 and U+2029 escaped), without
// reflection. The PostgreSQL gateway records one Statement per statement
// it relays, on the relay's own core, so this encoding is on its busiest
// path. FuzzStatementJSON holds it to json.Marshal.
func (s *Statement) AppendJSON(dst []byte) ([]byte, error) {
	if y := s.Start.Year(); y < 0 || y > 9999 {
		// time.Time refuses to encode these; so does json.Marshal.
		b, err := json.Marshal(s)
		return append(dst, b...), err
	}
	n := 128 + len(s.Text) + len(s.Protocol) + len(s.Tag) + len(s.Error) + 67*len(s.ParamsHMAC)
	for _, p := range s.Params {
		n += 8
		if p != nil {
			n += len(*p)
		}
	}
	dst = slices.Grow(dst, n) // one allocation when nothing needs escaping
	dst = append(dst, `{"text":`...)
	dst = appendJSONString(dst, s.Text)
	dst = append(dst, `,"protocol":`...)
	dst = appendJSONString(dst, s.Protocol)
	dst = append(dst, `,"start":"`...)
	dst = s.Start.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","duration_us":`...)
	dst = strconv.AppendInt(dst, s.DurationUS, 10)
	if s.Tag != "" {
		dst = append(dst, `,"tag":`...)
		dst = appendJSONString(dst, s.Tag)
	}
	dst = append(dst, `,"rows":`...)
	dst = strconv.AppendInt(dst, s.Rows, 10)
	if s.Error != "" {
		dst = append(dst, `,"error":`...)
		dst = appendJSONString(dst, s.Error)
	}
	if len(s.Params) > 0 {
		dst = append(dst, `,"params":[`...)
		for i, p := range s.Params {
			if i > 0 {
				dst = append(dst, ',')
			}
			if p == nil {
				dst = append(dst, "null"...)
			} else {
				dst = appendJSONString(dst, *p)
			}
		}
		dst = append(dst, ']')
	}
	if len(s.ParamsHMAC) > 0 {
		dst = append(dst, `,"params_hmac":[`...)
		for i, h := range s.ParamsHMAC {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, h)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}'), nil
}

const lowerHex = "0123456789abcdef"

// appendJSONString appends str as a JSON string the way encoding/json
// writes one: printable ASCII as it is but for ", \, <, > and &; \b, \f,
// \n, \r and \t in short form; other control characters, <, > and & as
// \u00XX; U+2028 and U+2029 as \u2028 and \u2029; each byte that is not
// part of valid UTF-8 as \ufffd.
func appendJSONString(dst []byte, str string) []byte {
	dst = append(dst, '"')
	from := 0 // str[from:i] is still to be copied as it is
	for i := 0; i < len(str); {
		c := str[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, str[from:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, `\b`...)
			case '\f':
				dst = append(dst, `\f`...)
			case '\n':
				dst = append(dst, `\n`...)
			case '\r':
				dst = append(dst, `\r`...)
			case '\t':
				dst = append(dst, `\t`...)
			default:
				dst = append(dst, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xf])
			}
			i++
			from = i
			continue
		}
		r, size := utf8.DecodeRuneInString(str[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, str[from:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, str[from:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', lowerHex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		from = i
	}
	dst = append(dst, str[from:]...)
	return append(dst, '"')
}
