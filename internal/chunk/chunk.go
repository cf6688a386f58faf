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
// compression would not shrink it.
//
// # Delta blobs
//
// A chunk may instead be stored compressed against up to MaxBases other
// chunks (its bases: typically the same region of the previous version of
// an image), their plaintexts serving as the zstd dictionary:
//
//	"ZCK" 0x01 | 2 | depth | n | n base IDs (32 bytes each) | sealed payload | check
//
// The sealed payload holds each base's fingerprint and size, then the zstd
// frame. A base is full (depth 0) or a delta itself; a blob's depth is one
// more than its deepest base, at most MaxDepth, so reading any chunk needs
// a bounded number of others. Base IDs are in the clear so that a store or
// a garbage collector can follow dependencies without any key; the header
// is authenticated with the payload, and opening checks that the base
// fingerprints inside match the IDs outside. The chunk's fingerprint, ID and
// key do not change: the flist never knows whether a chunk is stored whole
// or as a delta. The nonce is constant because every key
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
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	czstd "github.com/DataDog/zstd"
	"github.com/klauspost/compress/zstd"

	"github.com/zosgrid/zos/internal/digest"
)

// MaxSize bounds a chunk's plaintext. Chunkers never cut larger chunks and
// decoders refuse to inflate past it.
const MaxSize = 4 << 20

const (
	methodRaw   = 0
	methodZstd  = 1
	methodDelta = 2
	checkSize   = 16
	headerSize  = 4 + 1
)

// Delta limits. MaxDepth bounds the chain of chunks one read may need
// (1 + 2 + 4 with MaxBases 2); docs/FORMAT.md has the measurements.
const (
	MaxDepth = 2
	MaxBases = 2
)

// deltaDictID names the raw dictionary in delta zstd frames.
const deltaDictID = 1

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

// ErrNeedBases reports a delta blob opened without a way to read its bases.
var ErrNeedBases = errors.New("chunk is stored as a delta and its bases were not provided")

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

// Levels are zstd compression levels as the zstd library and command line
// number them (1 to 19, higher is smaller and slower). Full chunks are
// compressed by libzstd (cgo): on this project's corpus, in 64 KiB chunks on
// one core, it compresses 1.7x faster than the pure-Go encoder at its
// fastest setting and a little smaller (docs/FORMAT.md has the figures).
// Delta blobs, which need a raw dictionary, use the pure-Go encoder.
const (
	MinLevel     = 1
	MaxLevel     = 19
	DefaultLevel = 1 // docs/FORMAT.md: why
)

// Codec seals and opens chunks. It reuses zstd state between calls and is
// safe for concurrent use.
type Codec struct {
	level   int
	cctx    sync.Pool // libzstd contexts for full chunks (both ways)
	denc    sync.Pool // encoders for delta blobs (dictionary set per use)
	ddec    sync.Pool // decoders for delta blobs
	scratch sync.Pool // *[]byte: compression output, reused
}

// NewCodec returns a codec compressing at level (0 means DefaultLevel;
// others are clamped to MinLevel..MaxLevel). The level changes sealed blobs
// (and so stored bytes, never IDs); packs with different levels still
// deduplicate by ID, the first writer's blob wins. The output depends only
// on the input, the level and the pinned library version.
func NewCodec(level int) *Codec {
	if level == 0 { // the zero value: an Options field left unset
		level = DefaultLevel
	}
	level = min(max(level, MinLevel), MaxLevel)
	c := &Codec{level: level}
	c.cctx.New = func() any { return czstd.NewCtx() }
	c.denc.New = func() any {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderConcurrency(1),
			zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false), zstd.WithWindowSize(windowFor(MaxSize)))
		if err != nil {
			panic(err) // options are constant and valid
		}
		return e
	}
	c.scratch.New = func() any { return new([]byte) }
	c.ddec.New = func() any {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxSize),
			zstd.WithDecoderMaxWindow(MaxSize))
		if err != nil {
			panic(err)
		}
		return d
	}
	return c
}

// compress returns plain compressed as one zstd frame, written into dst's
// storage when it is large enough.
func (c *Codec) compress(dst, plain []byte) []byte {
	if n := czstd.CompressBound(len(plain)); cap(dst) < n {
		dst = make([]byte, 0, n)
	}
	x := c.cctx.Get().(czstd.Ctx)
	out, err := x.CompressLevel(dst[:0], plain, c.level)
	c.cctx.Put(x)
	if err != nil {
		panic(fmt.Sprintf("chunk: zstd: %v", err)) // only on allocation failure or a bad level
	}
	return out
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
	comp := c.compress(*scratch, plain)
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
// ref.Sum and its length ref.Size. A delta blob fails with ErrNeedBases: use
// OpenWith.
//
// Open authenticates the payload with the chunk's key and hashes the
// plaintext; it runs the keyless check (Check) only to tell a corrupt blob
// (ErrCorrupt) from a forged one (ErrMismatch) once one of those failed.
// Every store's Get has already checked what it returns, so a second pass
// over every blob would buy nothing: the trailing check bytes alone may rot
// without Open noticing, and the plaintext is right regardless.
func (c *Codec) Open(ref Ref, blob []byte) ([]byte, error) {
	return c.OpenWith(ref, blob, MaxDepth, nil)
}

// BaseFunc returns the verified plaintext of base chunk ref, which must be
// stored at most maxDepth deep (pass maxDepth to OpenWith when reading it).
type BaseFunc func(ref Ref, maxDepth int) ([]byte, error)

// OpenWith is Open for blobs that may be deltas: base reads the chunks a
// delta depends on. maxDepth bounds the blob's own depth (MaxDepth for a
// chunk read for itself), so a store cannot make a reader follow a chain
// longer than MaxDepth, or a cycle.
func (c *Codec) OpenWith(ref Ref, blob []byte, maxDepth int, base BaseFunc) ([]byte, error) {
	id := ID(ref.Sum)
	mismatch := func(why string) error {
		return &Invalid{ID: id, Err: fmt.Errorf("%w: %s", ErrMismatch, why)}
	}
	// failed reports err, or the keyless check's error if the blob is corrupt.
	failed := func(err error) error {
		if cerr := Check(id, blob); cerr != nil {
			return cerr
		}
		return err
	}
	if len(blob) < headerSize+checkSize || [4]byte(blob[:4]) != magic {
		return nil, failed(nil)
	}
	if ref.Size > MaxSize {
		return nil, mismatch("size too large")
	}
	body := blob[:len(blob)-checkSize]
	h, err := parseHeader(body)
	if err != nil {
		return nil, failed(&Invalid{ID: id, Err: fmt.Errorf("%w: %v", ErrCorrupt, err)})
	}
	if h.depth > maxDepth {
		return nil, failed(mismatch(fmt.Sprintf("delta depth %d exceeds %d", h.depth, maxDepth)))
	}
	var dst []byte
	var scratch *[]byte
	if h.method != methodRaw {
		// The payload is only read here (inflated, or a delta's frame is
		// decoded into a new buffer): open it into reused storage.
		scratch = c.scratch.Get().(*[]byte)
		defer c.scratch.Put(scratch)
		dst = (*scratch)[:0]
	}
	g := aead(ref.Sum)
	payload, err := g.Open(dst, zeroNonce[:], body[h.size:], body[:h.size])
	if err != nil {
		return nil, failed(mismatch("authentication failed"))
	}
	if scratch != nil {
		*scratch = payload[:0] // grown if it had to: the next Open reuses it
	}
	var plain []byte
	switch h.method {
	case methodRaw:
		plain = payload
	case methodZstd:
		// Seal stores an empty chunk raw (a zstd frame is never shorter
		// than nothing), so only a forgery has a zstd payload here.
		if ref.Size == 0 || len(payload) == 0 {
			return nil, mismatch("zstd payload for an empty chunk, or an empty payload")
		}
		plain = make([]byte, ref.Size) // libzstd inflates into exactly the expected size
		x := c.cctx.Get().(czstd.Ctx)
		var n int
		n, err = x.DecompressInto(plain, payload)
		c.cctx.Put(x)
		if err != nil {
			return nil, mismatch("decompress: " + err.Error())
		}
		plain = plain[:n]
	case methodDelta:
		if base == nil {
			return nil, &Invalid{ID: id, Err: ErrNeedBases}
		}
		refs, frame, err := h.baseRefs(payload)
		if err != nil {
			return nil, mismatch(err.Error())
		}
		var dict []byte
		for _, r := range refs {
			p, err := base(r, h.depth-1)
			if err != nil {
				return nil, fmt.Errorf("chunk %s: base %s: %w", id.Short(), ID(r.Sum).Short(), err)
			}
			dict = append(dict, p...)
		}
		d := c.ddec.Get().(*zstd.Decoder)
		if err = d.ResetWithOptions(nil, zstd.WithDecoderDictRaw(deltaDictID, dict)); err == nil {
			plain, err = d.DecodeAll(frame, make([]byte, 0, ref.Size))
		}
		d.ResetWithOptions(nil, zstd.WithDecoderDictDelete(deltaDictID)) // drop the reference to dict
		c.ddec.Put(d)
		if err != nil {
			return nil, mismatch("decompress delta: " + err.Error())
		}
	}
	if len(plain) != int(ref.Size) {
		return nil, mismatch(fmt.Sprintf("size %d, want %d", len(plain), ref.Size))
	}
	if digest.Sum(plain) != ref.Sum {
		return nil, mismatch("BLAKE3 differs")
	}
	return plain, nil
}

// header is the clear part of a blob before the sealed payload.
type header struct {
	method byte
	depth  int
	bases  []digest.ID // delta: base store IDs
	size   int         // bytes of header
}

func parseHeader(body []byte) (header, error) {
	if len(body) < headerSize {
		return header{}, errors.New("short header")
	}
	h := header{method: body[4], size: headerSize}
	switch h.method {
	case methodRaw, methodZstd:
		return h, nil
	case methodDelta:
		if len(body) < headerSize+2 {
			return h, errors.New("short delta header")
		}
		h.depth, h.size = int(body[5]), headerSize+2
		n := int(body[6])
		if h.depth < 1 || h.depth > MaxDepth || n < 1 || n > MaxBases {
			return h, fmt.Errorf("delta depth %d with %d bases out of range", h.depth, n)
		}
		if len(body) < h.size+n*digest.Size {
			return h, errors.New("short delta header")
		}
		for i := 0; i < n; i++ {
			h.bases = append(h.bases, digest.ID(body[h.size:h.size+digest.Size]))
			h.size += digest.Size
		}
		return h, nil
	default:
		return h, fmt.Errorf("unknown method %d", h.method)
	}
}

// baseRefSize is one base in a delta payload: fingerprint and size (LE).
const baseRefSize = digest.Size + 4

// baseRefs reads the base refs at the start of a delta payload, checks them
// against the clear base IDs, and returns them with the zstd frame after.
func (h header) baseRefs(payload []byte) ([]Ref, []byte, error) {
	if len(payload) < len(h.bases)*baseRefSize {
		return nil, nil, errors.New("short delta payload")
	}
	refs := make([]Ref, len(h.bases))
	total := 0
	for i := range refs {
		b := payload[i*baseRefSize:]
		refs[i] = Ref{Sum: digest.ID(b[:digest.Size]), Size: binary.LittleEndian.Uint32(b[digest.Size:])}
		if ID(refs[i].Sum) != h.bases[i] {
			return nil, nil, errors.New("delta base fingerprint does not match its ID")
		}
		if refs[i].Size > MaxSize {
			return nil, nil, errors.New("delta base too large")
		}
		total += int(refs[i].Size)
	}
	if total > MaxBases*MaxSize {
		return nil, nil, errors.New("delta bases too large")
	}
	return refs, payload[len(refs)*baseRefSize:], nil
}

// Deps returns a blob's delta depth and the store IDs of the chunks it is
// compressed against (none for a full chunk). It needs no key; callers
// should Check the blob first.
func Deps(blob []byte) (depth int, bases []digest.ID, err error) {
	if len(blob) < checkSize {
		return 0, nil, ErrCorrupt
	}
	h, err := parseHeader(blob[:len(blob)-checkSize])
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return h.depth, h.bases, nil
}

// Base is a chunk a delta may be compressed against.
type Base struct {
	Ref   Ref
	Plain []byte // its verified plaintext
	Depth int    // its own delta depth, 0 for a full chunk
}

// SealDelta seals plain (fingerprint sum) as a delta against bases, writing
// into dst's storage like SealTo. It reports false, and seals nothing, when
// the bases are unusable (too many, too deep) or the delta would not be at
// least a quarter smaller than the chunk compressed alone (a delta costs
// its readers the bases). The result depends only on its inputs.
func (c *Codec) SealDelta(dst, plain []byte, sum digest.ID, bases []Base) ([]byte, bool) {
	if len(bases) == 0 || len(bases) > MaxBases {
		return nil, false
	}
	depth := 0
	var dict []byte
	for _, b := range bases {
		if b.Depth >= MaxDepth || int(b.Ref.Size) != len(b.Plain) {
			return nil, false
		}
		depth = max(depth, b.Depth+1)
		dict = append(dict, b.Plain...)
	}
	scratch := c.scratch.Get().(*[]byte)
	defer c.scratch.Put(scratch)
	full := len(c.compress(*scratch, plain))

	payload := (*scratch)[:0]
	for _, b := range bases {
		payload = append(payload, b.Ref.Sum[:]...)
		payload = binary.LittleEndian.AppendUint32(payload, b.Ref.Size)
	}
	de := c.denc.Get().(*zstd.Encoder)
	if err := de.ResetWithOptions(nil, zstd.WithEncoderDictRaw(deltaDictID, dict)); err != nil {
		panic(err) // a raw dictionary under 2 GiB is always valid
	}
	payload = de.EncodeAll(plain, payload)
	// The dictionary stays set: removing it would make the next use rebuild
	// the encoder; the next ResetWithOptions replaces it.
	c.denc.Put(de)
	*scratch = payload
	if len(payload) >= min(full, len(plain))*3/4 {
		return nil, false
	}

	id := ID(sum)
	g := aead(sum)
	hsize := headerSize + 2 + len(bases)*digest.Size
	need := hsize + len(payload) + g.Overhead() + checkSize
	if cap(dst) < need {
		dst = make([]byte, 0, need)
	}
	blob := append(dst[:0], magic[:]...)
	blob = append(blob, methodDelta, byte(depth), byte(len(bases)))
	for _, b := range bases {
		bid := ID(b.Ref.Sum)
		blob = append(blob, bid[:]...)
	}
	blob = g.Seal(blob, zeroNonce[:], payload, blob[:hsize])
	check := digest.Keyed(id, blob)
	return append(blob, check[:checkSize]...), true
}
