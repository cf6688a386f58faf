package mount

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
)

// Trace is the order in which a run of a program first read the chunks of
// one image: indexes into its chunk table, and from version 2 on the parts
// of each chunk it read. Its encoding is in docs/TRACE.md.
type Trace struct {
	Flist  digest.ID
	Chunks []uint32
	// Ranges, if not nil (version 2), holds for each of Chunks the parts of
	// its plaintext that reads asked for, sorted, disjoint and not
	// adjacent; an empty list means the whole chunk. A version-1 trace has
	// none: every chunk whole.
	Ranges [][]Range
}

// Range is a part of a chunk's plaintext, in units of 1 KiB (BLAKE3's
// leaves): from byte Start*1024 to (Start+Len)*1024 or the chunk's end.
type Range struct{ Start, Len uint32 }

// rangeUnit is the size of Range's units: a BLAKE3 leaf, the smallest
// piece of a chunk verifiable on its own (bundle.go).
const rangeUnit = 1024

// Bytes returns the span of the chunk's plaintext that r covers, in a
// chunk of size bytes.
func (r Range) Bytes(size uint64) (off, n uint64) {
	off = uint64(r.Start) * rangeUnit
	return off, min(uint64(r.Start+r.Len)*rangeUnit, size) - off
}

// units is the number of Range units of a chunk of size bytes.
func units(size uint32) uint32 { return (size + rangeUnit - 1) / rangeUnit }

// ErrTrace reports a trace file that is malformed or does not belong to
// the flist it is used with.
var ErrTrace = errors.New("bad trace")

const (
	traceMagic     = "zostrace"
	traceVersion   = 2 // written when a trace has ranges; 1 otherwise
	maxTraceChunks = 1 << 26
	// MaxTraceFile bounds a trace file read from disk: 2^26 chunks at 5
	// bytes each and change.
	MaxTraceFile = 512 << 20
)

// MarshalBinary encodes t, as version 2 if it has ranges. Chunks must be
// distinct, ranges as Ranges says.
func (t *Trace) MarshalBinary() ([]byte, error) {
	if len(t.Chunks) > maxTraceChunks {
		return nil, fmt.Errorf("%w: %d chunks", ErrTrace, len(t.Chunks))
	}
	version := byte(1)
	if t.Ranges != nil {
		if len(t.Ranges) != len(t.Chunks) {
			return nil, fmt.Errorf("%w: ranges for %d chunks of %d", ErrTrace, len(t.Ranges), len(t.Chunks))
		}
		version = 2
	}
	b := make([]byte, 0, len(traceMagic)+1+digest.Size+binary.MaxVarintLen64+2*len(t.Chunks)+digest.Size)
	b = append(b, traceMagic...)
	b = append(b, version)
	b = append(b, t.Flist[:]...)
	b = binary.AppendUvarint(b, uint64(len(t.Chunks)))
	prev := int64(-1)
	for i, k := range t.Chunks {
		b = binary.AppendVarint(b, int64(k)-prev-1)
		prev = int64(k)
		if version == 2 {
			var err error
			if b, err = appendRanges(b, t.Ranges[i]); err != nil {
				return nil, fmt.Errorf("%w: chunk %d: %v", ErrTrace, k, err)
			}
		}
	}
	sum := digest.Sum(b)
	return append(b, sum[:]...), nil
}

// ParseTrace decodes a trace strictly (docs/TRACE.md). It checks the
// encoding only; Check binds it to an flist.
func ParseTrace(b []byte) (*Trace, error) {
	fail := func(format string, args ...any) (*Trace, error) {
		return nil, fmt.Errorf("%w: %s", ErrTrace, fmt.Sprintf(format, args...))
	}
	head := len(traceMagic) + 1 + digest.Size
	if len(b) < head+1+digest.Size || string(b[:len(traceMagic)]) != traceMagic {
		return fail("not a zos trace")
	}
	v := b[len(traceMagic)]
	if v < 1 || v > traceVersion {
		return fail("version %d (this zos reads 1 to %d)", v, traceVersion)
	}
	body, check := b[:len(b)-digest.Size], b[len(b)-digest.Size:]
	if sum := digest.Sum(body); !bytes.Equal(sum[:], check) {
		return fail("check mismatch: the file is damaged")
	}
	t := &Trace{Flist: digest.ID(b[len(traceMagic)+1 : head])}
	d := body[head:]
	n, err := uvarint(&d)
	if err != nil {
		return fail("count: %v", err)
	}
	if n > maxTraceChunks || n > uint64(len(d)) { // every entry takes a byte at least
		return fail("%d chunks", n)
	}
	t.Chunks = make([]uint32, 0, n)
	if v == 2 {
		t.Ranges = make([][]Range, 0, n)
	}
	prev := int64(-1)
	for i := uint64(0); i < n; i++ {
		u, err := uvarint(&d)
		if err != nil {
			return fail("chunk %d: %v", i, err)
		}
		delta := int64(u>>1) ^ -int64(u&1)
		if delta < -(1<<33) || delta > 1<<33 {
			return fail("chunk %d: index out of range", i)
		}
		k := prev + 1 + delta
		if k < 0 || k > 1<<32-1 {
			return fail("chunk %d: index out of range", i)
		}
		t.Chunks = append(t.Chunks, uint32(k))
		prev = k
		if v == 2 {
			rs, err := readRanges(&d)
			if err != nil {
				return fail("chunk %d: %v", i, err)
			}
			t.Ranges = append(t.Ranges, rs)
		}
	}
	if len(d) != 0 {
		return fail("%d bytes after the last chunk", len(d))
	}
	return t, nil
}

// maxRangeEnd bounds a range's end, in units: 4 GiB, above any chunk.
const maxRangeEnd = 1 << 22

// appendRanges encodes a chunk's ranges (docs/TRACE.md, version 2): their
// count, then each as its distance from the previous one's end and its
// length.
func appendRanges(b []byte, rs []Range) ([]byte, error) {
	if err := checkRanges(rs); err != nil {
		return nil, err
	}
	b = binary.AppendUvarint(b, uint64(len(rs)))
	end := uint32(0)
	for _, r := range rs {
		b = binary.AppendUvarint(b, uint64(r.Start-end))
		b = binary.AppendUvarint(b, uint64(r.Len))
		end = r.Start + r.Len
	}
	return b, nil
}

// readRanges decodes what appendRanges wrote, strictly.
func readRanges(d *[]byte) ([]Range, error) {
	n, err := uvarint(d)
	if err != nil {
		return nil, fmt.Errorf("ranges: %v", err)
	}
	if n > uint64(len(*d))/2 { // every range takes two bytes at least
		return nil, fmt.Errorf("%d ranges", n)
	}
	if n == 0 {
		return nil, nil
	}
	rs := make([]Range, 0, n)
	end := uint64(0)
	for j := uint64(0); j < n; j++ {
		gap, err := uvarint(d)
		if err != nil {
			return nil, fmt.Errorf("range %d: %v", j, err)
		}
		size, err := uvarint(d)
		if err != nil {
			return nil, fmt.Errorf("range %d: %v", j, err)
		}
		if gap > maxRangeEnd || size > maxRangeEnd || end+gap+size > maxRangeEnd {
			return nil, fmt.Errorf("range %d: beyond any chunk", j)
		}
		rs = append(rs, Range{uint32(end + gap), uint32(size)})
		end += gap + size
	}
	if err := checkRanges(rs); err != nil {
		return nil, err
	}
	return rs, nil
}

// checkRanges checks that ranges are sorted, disjoint, not adjacent, and
// not empty.
func checkRanges(rs []Range) error {
	end := uint64(0)
	for j, r := range rs {
		switch {
		case r.Len == 0:
			return fmt.Errorf("range %d is empty", j)
		case j > 0 && uint64(r.Start) <= end:
			return fmt.Errorf("range %d overlaps or touches the one before", j)
		case uint64(r.Start)+uint64(r.Len) > maxRangeEnd:
			return fmt.Errorf("range %d: beyond any chunk", j)
		}
		end = uint64(r.Start) + uint64(r.Len)
	}
	return nil
}

func uvarint(d *[]byte) (uint64, error) {
	v, n := binary.Uvarint(*d)
	if n <= 0 {
		return 0, errors.New("truncated or overlong varint")
	}
	if n != len(binary.AppendUvarint(nil, v)) {
		return 0, errors.New("non-minimal varint")
	}
	*d = (*d)[n:]
	return v, nil
}

// Check binds t to r: it was recorded on this very image, and every index
// it lists exists there, once.
func (t *Trace) Check(r *flist.Reader) error {
	if t.Flist != r.Digest() {
		return fmt.Errorf("%w: recorded on flist %s, not %s", ErrTrace, t.Flist.Short(), r.Digest().Short())
	}
	n := len(r.Chunks())
	if len(t.Chunks) > n {
		return fmt.Errorf("%w: %d chunks listed, the flist has %d", ErrTrace, len(t.Chunks), n)
	}
	seen := make([]uint64, (n+63)/64)
	for i, k := range t.Chunks {
		if int(k) >= n {
			return fmt.Errorf("%w: entry %d: chunk %d of %d: %w", ErrTrace, i, k, n, errTraceIndex)
		}
		if seen[k/64]&(1<<(k%64)) != 0 {
			return fmt.Errorf("%w: entry %d: chunk %d listed twice", ErrTrace, i, k)
		}
		seen[k/64] |= 1 << (k % 64)
		if t.Ranges == nil {
			continue
		}
		if i >= len(t.Ranges) {
			return fmt.Errorf("%w: no ranges for entry %d", ErrTrace, i)
		}
		if rs := t.Ranges[i]; len(rs) > 0 {
			last := rs[len(rs)-1]
			switch u := units(r.Chunks()[k].Size); {
			case last.Start+last.Len > u:
				return fmt.Errorf("%w: entry %d: ranges end at %d KiB, past chunk %d's end (%d)", ErrTrace, i, last.Start+last.Len, k, u)
			case len(rs) == 1 && rs[0].Start == 0 && rs[0].Len == u:
				return fmt.Errorf("%w: entry %d: a range of the whole chunk (written as no ranges)", ErrTrace, i)
			}
		}
	}
	return nil
}

// ParseTraceFor parses a trace and checks it against r (ParseTrace, then
// Check): a trace fetched from elsewhere is used only once this passes.
func ParseTraceFor(b []byte, r *flist.Reader) (*Trace, error) {
	t, err := ParseTrace(b)
	if err != nil {
		return nil, err
	}
	if err := t.Check(r); err != nil {
		return nil, err
	}
	return t, nil
}

// ReadTrace reads and parses a trace file and checks it against r.
func ReadTrace(path string, r *flist.Reader) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if fi.Size() > MaxTraceFile {
		return nil, fmt.Errorf("%s: %w: %d bytes", path, ErrTrace, fi.Size())
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	t, err := ParseTrace(b)
	if err == nil {
		err = t.Check(r)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}
