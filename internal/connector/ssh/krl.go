package ssh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// OpenSSH key revocation list (KRL) encoding, as sshd reads it from the file
// named by RevokedKeys. The format is described in OpenSSH's PROTOCOL.krl.

const (
	krlMagic         = "SSHKRL\n\x00"
	krlFormatVersion = 1

	krlSectionCertificates = 1
	krlSectionExplicitKey  = 2

	krlCertSerialList = 0x20
	krlCertKeyID      = 0x23
)

// krl is the content of a key revocation list.
type krl struct {
	Version   uint64
	Generated time.Time
	Comment   string
	// Certs revoke certificates by serial number or key ID, per issuing CA.
	Certs []krlCerts
	// Keys revoke plain public keys (wire format, never certificates), and
	// with them every certificate of those keys.
	Keys [][]byte
}

// krlCerts revokes certificates issued by one CA.
type krlCerts struct {
	// CA is the issuing CA's public key in wire format; empty means any CA.
	CA      []byte
	Serials []uint64
	KeyIDs  []string
}

// marshal encodes k in canonical order (sorted serials, key IDs and keys),
// so the same content always yields the same bytes.
func (k *krl) marshal() []byte {
	var b bytes.Buffer
	b.WriteString(krlMagic)
	putU32(&b, krlFormatVersion)
	putU64(&b, k.Version)
	putU64(&b, uint64(max(k.Generated.Unix(), 0)))
	putU64(&b, 0) // flags
	putString(&b, nil)
	putString(&b, []byte(k.Comment))

	certs := slices.Clone(k.Certs)
	slices.SortFunc(certs, func(a, b krlCerts) int { return bytes.Compare(a.CA, b.CA) })
	for _, c := range certs {
		if len(c.Serials) == 0 && len(c.KeyIDs) == 0 {
			continue
		}
		var sec bytes.Buffer
		putString(&sec, c.CA)
		putString(&sec, nil)
		if len(c.Serials) > 0 {
			serials := slices.Clone(c.Serials)
			slices.Sort(serials)
			serials = slices.Compact(serials)
			var sub bytes.Buffer
			for _, s := range serials {
				putU64(&sub, s)
			}
			sec.WriteByte(krlCertSerialList)
			putString(&sec, sub.Bytes())
		}
		if len(c.KeyIDs) > 0 {
			ids := slices.Clone(c.KeyIDs)
			slices.Sort(ids)
			ids = slices.Compact(ids)
			var sub bytes.Buffer
			for _, id := range ids {
				putString(&sub, []byte(id))
			}
			sec.WriteByte(krlCertKeyID)
			putString(&sec, sub.Bytes())
		}
		b.WriteByte(krlSectionCertificates)
		putString(&b, sec.Bytes())
	}
	if len(k.Keys) > 0 {
		keys := slices.Clone(k.Keys)
		slices.SortFunc(keys, bytes.Compare)
		keys = slices.CompactFunc(keys, bytes.Equal)
		var sec bytes.Buffer
		for _, key := range keys {
			putString(&sec, key)
		}
		b.WriteByte(krlSectionExplicitKey)
		putString(&b, sec.Bytes())
	}
	return b.Bytes()
}

// parseKRL decodes the sections marshal writes. It rejects what it does not
// know, so it is a check of this package's output, not a general reader.
func parseKRL(data []byte) (*krl, error) {
	r := &reader{b: data}
	if string(r.next(len(krlMagic))) != krlMagic {
		return nil, errors.New("krl: bad magic")
	}
	if v := r.u32(); v != krlFormatVersion {
		return nil, fmt.Errorf("krl: format version %d", v)
	}
	k := &krl{Version: r.u64(), Generated: time.Unix(int64(r.u64()), 0)}
	r.u64() // flags
	r.str() // reserved
	k.Comment = string(r.str())
	for r.err == nil && len(r.b) > 0 {
		typ := r.byte()
		sec := &reader{b: r.str()}
		switch typ {
		case krlSectionCertificates:
			c := krlCerts{CA: sec.str()}
			sec.str() // reserved
			for sec.err == nil && len(sec.b) > 0 {
				st := sec.byte()
				sub := &reader{b: sec.str()}
				switch st {
				case krlCertSerialList:
					for sub.err == nil && len(sub.b) > 0 {
						c.Serials = append(c.Serials, sub.u64())
					}
				case krlCertKeyID:
					for sub.err == nil && len(sub.b) > 0 {
						c.KeyIDs = append(c.KeyIDs, string(sub.str()))
					}
				default:
					return nil, fmt.Errorf("krl: unknown certificate section %#x", st)
				}
				if sub.err != nil {
					return nil, sub.err
				}
			}
			if sec.err != nil {
				return nil, sec.err
			}
			if len(c.CA) == 0 {
				c.CA = nil
			}
			k.Certs = append(k.Certs, c)
		case krlSectionExplicitKey:
			for sec.err == nil && len(sec.b) > 0 {
				k.Keys = append(k.Keys, sec.str())
			}
			if sec.err != nil {
				return nil, sec.err
			}
		default:
			return nil, fmt.Errorf("krl: unknown section %d", typ)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return k, nil
}

func putU32(b *bytes.Buffer, v uint32) { b.Write(binary.BigEndian.AppendUint32(nil, v)) }
func putU64(b *bytes.Buffer, v uint64) { b.Write(binary.BigEndian.AppendUint64(nil, v)) }
func putString(b *bytes.Buffer, s []byte) {
	putU32(b, uint32(len(s)))
	b.Write(s)
}

// reader decodes SSH wire types; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) next(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errors.New("krl: truncated")
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	v := r.next(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *reader) u32() uint32 {
	v := r.next(4)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

func (r *reader) u64() uint64 {
	v := r.next(8)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (r *reader) str() []byte {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b)) {
		r.err = errors.New("krl: truncated")
		r.b = nil
		return nil
	}
	return r.next(int(n))
}
