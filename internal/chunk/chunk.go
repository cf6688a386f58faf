// Package chunk turns plaintext chunks into the sealed blobs that stores
// hold, and back, verifying every byte on the way back.
//
// # Fingerprint
//
// A chunk's fingerprint is the BLAKE3-256 of its plaintext. It is what an
// flist records, and it is the capability to read the chunk: from it derive
// both the chunk's store address (ID) and its encryption key, through
// independent BLAKE3 derive_key contexts. A store sees only IDs and sealed
// blobs; it can compute neither the key nor the plaintext. Equal plaintexts
// give equal fingerprints, IDs and blobs, so chunks deduplicate across images
// and users (convergent encryption).
//
// # Blob
//
// A sealed blob is, in version 1 (docs/FORMAT.md has the layout):
//
//	"ZCK" 0x01 | method (1 byte) | sealed payload (AES-256-GCM, zero nonce) | check (16 bytes)
//
// The payload is the zstd-compressed plaintext, or the plaintext itself when
// compression would not shrink it. The nonce is constant because every key
// encrypts exactly one plaintext. The trailing check is a BLAKE3 keyed by the
// ID over everything before it: anyone holding only the ID (a store, the hub,
// a cache) can detect a torn, rotted or misfiled blob without the key. A
// forged blob passes that check but not Open, which authenticates with the
// key and then compares the plaintext's BLAKE3 with the fingerprint.
package chunk

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/zosgrid/zos/internal/digest"
)

// MaxSize bounds a chunk's plaintext. Chunkers never cut larger chunks and
// decoders refuse to inflate past it.
const MaxSize = 4 << 20

const (
	methodRaw  = 0
	methodZstd = 1
	checkSize  = 16
	headerSize = 4 + 1
)

var magic = [4]byte{'Z', 'C', 'K', 1}

// Derivation contexts; changing one changes every ID and key (a new format version).
const (
	ctxID  = "zos 2026-11 chunk id v1"
	ctxKey = "zos 2026-11 chunk key v1"
)

// Ref names one chunk inside an flist: its fingerprint and plaintext size.
type Ref struct {
	Sum  digest.ID
	Size uint32
}

// ID returns the store address of the chunk with fingerprint sum.
func ID(sum digest.ID) digest.ID { return digest.Derive(ctxID, sum[:]) }

// ErrCorrupt reports a blob that fails its keyless integrity check.
var ErrCorrupt = errors.New("chunk blob corrupt")

// ErrMismatch reports a blob whose content does not match the fingerprint asked for.
var ErrMismatch = errors.New("chunk content does not match its fingerprint")

// Invalid is the typed error for a chunk that failed verification: which chunk,
// where it came from, and why (wrapping ErrCorrupt or ErrMismatch).
type Invalid struct {
	ID    digest.ID // store address
	Store string    // the store that served it, when known
	Err   error
}

func (e *Invalid) Error() string {
	if e.Store != "" {
		return fmt.Sprintf("chunk %s from %s: %v", e.ID.Short(), e.Store, e.Err)
	}
	return fmt.Sprintf("chunk %s: %v", e.ID.Short(), e.Err)
}

func (e *Invalid) Unwrap() error { return e.Err }

// Check verifies a blob's keyless integrity check against id. It catches
// torn writes, bit rot and blobs filed under the wrong ID; not forgeries.
func Check(id digest.ID, blob []byte) error {
	if len(blob) < headerSize+checkSize || [4]byte(blob[:4]) != magic {
		return &Invalid{ID: id, Err: fmt.Errorf("%w: bad header or length %d", ErrCorrupt, len(blob))}
	}
	body := blob[:len(blob)-checkSize]
	sum := digest.Keyed(id, body)
	if !bytes.Equal(sum[:checkSize], blob[len(body):]) {
		return &Invalid{ID: id, Err: fmt.Errorf("%w: integrity check failed", ErrCorrupt)}
	}
	return nil
}

// Codec seals and opens chunks. It reuses zstd state between calls and is
// safe for concurrent use.
type Codec struct {
	level   zstd.EncoderLevel
	enc     sync.Pool
	dec     sync.Pool
	scratch sync.Pool // *[]byte: compression output, reused
}

// NewCodec returns a codec compressing at level. The level changes sealed
// blobs (and so IDs never, but stored bytes yes); packs with different levels
// still deduplicate by ID, the first writer's blob wins.
func NewCodec(level zstd.EncoderLevel) *Codec {
	c := &Codec{level: level}
	c.enc.New = func() any {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
			zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false), zstd.WithWindowSize(windowFor(MaxSize)))
		if err != nil {
			panic(err) // options are constant and valid
		}
		return e
	}
	c.scratch.New = func() any { return new([]byte) }
	c.dec.New = func() any {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxSize),
			zstd.WithDecoderMaxWindow(MaxSize))
		if err != nil {
			panic(err)
		}
		return d
	}
	return c
}

func windowFor(n int) int {
	w := zstd.MinWindowSize
	for w < n && w < zstd.MaxWindowSize {
		w <<= 1
	}
	return w
}

func aead(sum digest.ID) cipher.AEAD {
	key := digest.Derive(ctxKey, sum[:])
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // 32-byte key is always valid
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return g
}

var zeroNonce [12]byte

// Seal compresses and encrypts plain, returning its fingerprint, its store ID
// and the sealed blob. The result depends only on plain and the codec level.
func (c *Codec) Seal(plain []byte) (sum, id digest.ID, blob []byte) {
	if len(plain) > MaxSize {
		panic(fmt.Sprintf("chunk: %d bytes exceeds MaxSize", len(plain)))
	}
	sum = digest.Sum(plain)
	id = ID(sum)
	return sum, id, c.SealSum(plain, sum)
}

// SealSum is Seal for a caller that has already computed plain's
// fingerprint (to skip sealing chunks a store already holds).
func (c *Codec) SealSum(plain []byte, sum digest.ID) []byte { return c.SealTo(nil, plain, sum) }

// SealTo is SealSum writing the blob into dst's storage (reusing it when it
// is large enough), for callers that seal many chunks with one buffer.
func (c *Codec) SealTo(dst, plain []byte, sum digest.ID) []byte {
	id := ID(sum)
	scratch := c.scratch.Get().(*[]byte)
	defer c.scratch.Put(scratch)
	e := c.enc.Get().(*zstd.Encoder)
	comp := e.EncodeAll(plain, (*scratch)[:0])
	c.enc.Put(e)
	*scratch = comp
	method, payload := byte(methodZstd), comp
	if len(comp) >= len(plain) {
		method, payload = methodRaw, plain
	}
	g := aead(sum)
	need := headerSize + len(payload) + g.Overhead() + checkSize
	if cap(dst) < need {
		dst = make([]byte, 0, need)
	}
	blob := append(dst[:0], magic[:]...)
	blob = append(blob, method)
	blob = g.Seal(blob, zeroNonce[:], payload, blob[:headerSize])
	check := digest.Keyed(id, blob)
	return append(blob, check[:checkSize]...)
}

// Open verifies blob as the chunk ref names and returns its plaintext. Any
// failure is an *Invalid naming the chunk; a successful result's BLAKE3 equals
// ref.Sum and its length ref.Size.
func (c *Codec) Open(ref Ref, blob []byte) ([]byte, error) {
	id := ID(ref.Sum)
	if err := Check(id, blob); err != nil {
		return nil, err
	}
	mismatch := func(why string) error {
		return &Invalid{ID: id, Err: fmt.Errorf("%w: %s", ErrMismatch, why)}
	}
	g := aead(ref.Sum)
	body := blob[:len(blob)-checkSize]
	payload, err := g.Open(nil, zeroNonce[:], body[headerSize:], body[:headerSize])
	if err != nil {
		return nil, mismatch("authentication failed")
	}
	var plain []byte
	switch body[4] {
	case methodRaw:
		plain = payload
	case methodZstd:
		if ref.Size > MaxSize {
			return nil, mismatch("size too large")
		}
		d := c.dec.Get().(*zstd.Decoder)
		plain, err = d.DecodeAll(payload, make([]byte, 0, ref.Size))
		c.dec.Put(d)
		if err != nil {
			return nil, mismatch("decompress: " + err.Error())
		}
	default:
		return nil, mismatch(fmt.Sprintf("unknown method %d", body[4]))
	}
	if len(plain) != int(ref.Size) {
		return nil, mismatch(fmt.Sprintf("size %d, want %d", len(plain), ref.Size))
	}
	if digest.Sum(plain) != ref.Sum {
		return nil, mismatch("BLAKE3 differs")
	}
	return plain, nil
}
