// Package canon is the canonical JSON encoding of signed data: deployment
// specs (docs/SPEC.md, "Canonical encoding") and ledger transactions
// (docs/LEDGER.md), one encoder so that a transaction embedding a spec's
// canonical form is canonical as a whole.
//
// # Encoding
//
// Objects with their keys sorted (byte order), no whitespace, integers as
// plain decimals, strings escaping only '"', '\' and bytes below 0x20 (the
// short escapes \b \t \n \f \r where JSON has them, \u00XX otherwise),
// everything else written as is. Equal values give equal bytes, whatever
// built them.
package canon

import (
	"slices"
	"strconv"
)

// Obj is a JSON object; its keys are written sorted.
type Obj map[string]any

// Raw is JSON already in canonical form (an embedded spec), written as is.
type Raw []byte

// Encode writes v canonically. v holds only Obj, []any, Raw, string,
// uint64, uint32 and bool; anything else is a bug in the caller's tree,
// not an input, and panics.
func Encode(v any) []byte { return Append(nil, v) }

// Append appends v's canonical encoding to b.
func Append(b []byte, v any) []byte {
	switch v := v.(type) {
	case Obj:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(b, k)
			b = append(b, ':')
			b = Append(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = Append(b, e)
		}
		return append(b, ']')
	case Raw:
		return append(b, v...)
	case string:
		return AppendString(b, v)
	case uint64:
		return strconv.AppendUint(b, v, 10)
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10)
	case bool:
		return strconv.AppendBool(b, v)
	}
	panic("canon: canonical encoding of an unexpected type") // a bug in a tree, not an input
}

// AppendString quotes s, escaping only '"', '\' and bytes below 0x20.
func AppendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
