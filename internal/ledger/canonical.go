package ledger

import (
	"slices"
	"strconv"
)

// The canonical encoding of transactions follows the spec's
// (docs/SPEC.md, "Canonical encoding"), so that a transaction embedding a
// spec's stripped form is canonical as a whole: objects with sorted keys,
// no whitespace, integers as plain decimals, strings escaping only '"',
// '\' and bytes below 0x20.

// obj is a JSON object; encode writes its keys sorted.
type obj map[string]any

// raw is JSON already in canonical form (an embedded spec), written as is.
type raw []byte

// encode writes v canonically. v holds only obj, []any, raw, string,
// uint64 and uint32.
func encode(v any) []byte { return appendValue(nil, v) }

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case obj:
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
			b = appendString(b, k)
			b = append(b, ':')
			b = appendValue(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, e)
		}
		return append(b, ']')
	case raw:
		return append(b, v...)
	case string:
		return appendString(b, v)
	case uint64:
		return strconv.AppendUint(b, v, 10)
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10)
	}
	panic("ledger: canonical encoding of an unexpected type") // a bug in a tree method, not an input
}

// appendString quotes s, escaping only '"', '\' and bytes below 0x20.
func appendString(b []byte, s string) []byte {
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
