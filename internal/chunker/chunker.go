// Package chunker cuts byte streams into content-defined chunks.
//
// # Algorithm
//
// FastCDC (Xia et al., USENIX ATC 2016) with normalized chunking: a 64-bit
// gear hash rolls over the input from Min bytes into a chunk; before Avg
// bytes a cut needs a hash with more zero bits (MaskS), after Avg fewer
// (MaskL), and Max forces a cut. Normalization pulls chunk sizes toward Avg,
// which keeps the chunk count (and so the flist's size) predictable while
// the cut points still depend only on nearby content, so an insertion moves
// only the chunks around it.
//
// # Stability
//
// The gear table is derived from BLAKE3 with a fixed context, and the masks
// from Avg alone: the same bytes and Params give the same cuts on every
// machine, forever. Changing either is a format change; testdata pins the
// cuts of a fixed input (golden test).
//
// We implement it rather than import one: the cut points are part of the
// on-disk format and must never change under us with a dependency upgrade,
// and the algorithm is a few dozen lines.
package chunker

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/zeebo/blake3"
)

// Params are a chunker's sizes in bytes. Avg must be a power of two.
type Params struct {
	Min, Avg, Max int
}

// Default is the chunking zos packs with (see docs/FORMAT.md for the
// measurements that chose it).
var Default = Params{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}

// Chunker finds cut points. It holds no stream state and is safe for
// concurrent use.
type Chunker struct {
	p            Params
	maskS, maskL uint64
	gear         *[256]uint64
}

// New validates p and returns a chunker for it.
func New(p Params) (*Chunker, error) {
	if p.Min < 64 || p.Avg <= p.Min || p.Max <= p.Avg || p.Max > 1<<26 || bits.OnesCount(uint(p.Avg)) != 1 {
		return nil, fmt.Errorf("chunker: invalid sizes min=%d avg=%d max=%d (need 64 <= min < avg < max <= 64MiB, avg a power of two)", p.Min, p.Avg, p.Max)
	}
	b := bits.TrailingZeros(uint(p.Avg))
	return &Chunker{p: p, maskS: spread(b + 2), maskL: spread(b - 2), gear: gearTable()}, nil
}

// Params returns the chunker's sizes.
func (c *Chunker) Params() Params { return c.p }

// spread returns a mask of n one bits spread over the high 48 bits, as
// FastCDC does, so the bits tested depend on a window of bytes.
func spread(n int) uint64 {
	var m uint64
	for i := 0; i < n; i++ {
		m |= 1 << (63 - uint(i*48/n))
	}
	return m
}

func gearTable() *[256]uint64 {
	var g [256]uint64
	h := blake3.NewDeriveKey("zos 2026-11 fastcdc gear table v1")
	var buf [256 * 8]byte
	h.Digest().Read(buf[:])
	for i := range g {
		g[i] = binary.LittleEndian.Uint64(buf[i*8:])
	}
	return &g
}

// Cut returns the length of the chunk that starts at data[0]. When data is
// shorter than Max and more input follows, the caller must supply more
// before calling; when data is the end of the stream, Cut returns at most
// len(data), and len(data) if no cut point is found.
func (c *Chunker) Cut(data []byte) int {
	n := len(data)
	if n <= c.p.Min {
		return n
	}
	if n > c.p.Max {
		n = c.p.Max
	}
	norm := c.p.Avg
	if n < norm {
		norm = n
	}
	var fp uint64
	g := c.gear
	i := c.p.Min
	for ; i < norm; i++ {
		fp = (fp << 1) + g[data[i]]
		if fp&c.maskS == 0 {
			return i + 1
		}
	}
	for ; i < n; i++ {
		fp = (fp << 1) + g[data[i]]
		if fp&c.maskL == 0 {
			return i + 1
		}
	}
	return n
}
