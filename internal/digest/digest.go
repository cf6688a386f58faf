// Package digest defines content identifiers: BLAKE3-256 sums, their text
// form, and the keyed derivations the rest of zos builds on.
//
// # ID
//
// An ID is 32 bytes. Its text form is 64 lower-case hex digits; Parse accepts
// nothing else, so that one ID has exactly one spelling in URLs, paths and logs.
//
// # Derivation
//
// Derive computes BLAKE3's derive_key mode with a context string. Distinct
// contexts give independent outputs from the same material; zos uses this to
// turn one chunk fingerprint into a store address and an encryption key that
// cannot be computed from each other.
package digest

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/zeebo/blake3"
)

// Size is the length of an ID in bytes.
const Size = 32

// ID is a BLAKE3-256 digest.
type ID [Size]byte

// ErrSyntax reports an ID text that is not 64 lower-case hex digits.
var ErrSyntax = errors.New("digest: not 64 lower-case hex digits")

// Sum returns the BLAKE3-256 digest of b.
func Sum(b []byte) ID { return ID(blake3.Sum256(b)) }

// New returns a streaming BLAKE3-256 hasher; finish it with FromHash.
func New() hash.Hash { return blake3.New() }

// FromHash returns the digest accumulated in h, which must come from New.
func FromHash(h hash.Hash) ID {
	var id ID
	h.Sum(id[:0])
	return id
}

// Derive returns BLAKE3 derive_key(context, material) truncated to 32 bytes.
func Derive(context string, material []byte) ID {
	base, ok := derivers.Load(context)
	if !ok { // hashing the context is most of the work for short material: once per context
		base, _ = derivers.LoadOrStore(context, blake3.NewDeriveKey(context))
	}
	h := base.(*blake3.Hasher).Clone()
	h.Write(material)
	var id ID
	h.Sum(id[:0])
	return id
}

// derivers holds a fresh derive_key hasher per context, cloned by Derive.
var derivers sync.Map

// Keyed returns BLAKE3 keyed_hash(key, data).
func Keyed(key ID, data ...[]byte) ID {
	k := [32]byte(key)
	h, err := blake3.NewKeyed(k[:])
	if err != nil { // only on a key of the wrong length, which [32]byte rules out
		panic(err)
	}
	for _, d := range data {
		h.Write(d)
	}
	var id ID
	h.Sum(id[:0])
	return id
}

// Parse decodes the text form of an ID.
func Parse(s string) (ID, error) {
	var id ID
	if len(s) != 2*Size {
		return id, fmt.Errorf("%w: %q", ErrSyntax, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return id, fmt.Errorf("%w: %q", ErrSyntax, s)
		}
	}
	hex.Decode(id[:], []byte(s))
	return id, nil
}

// String returns the 64-digit hex form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, for logs and tables.
func (id ID) Short() string { return id.String()[:12] }

// IsZero reports whether id is all zeros, which never names real content.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
