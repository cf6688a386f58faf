package ledger

import "github.com/zosgrid/zos/internal/canon"

// The canonical encoding of transactions follows the spec's
// (docs/SPEC.md, "Canonical encoding"), so that a transaction embedding a
// spec's stripped form is canonical as a whole: objects with sorted keys,
// no whitespace, integers as plain decimals, strings escaping only '"',
// '\' and bytes below 0x20.

// obj is a JSON object; encode writes its keys sorted.
type obj = canon.Obj

// raw is JSON already in canonical form (an embedded spec), written as is.
type raw = canon.Raw

// encode writes v canonically (internal/canon). v holds only obj, []any,
// raw, string, uint64 and uint32.
func encode(v any) []byte { return canon.Encode(v) }
