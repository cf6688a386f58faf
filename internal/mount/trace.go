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
// one image: indexes into its chunk table. Its encoding is in
// docs/TRACE.md.
type Trace struct {
	Flist  digest.ID
	Chunks []uint32
}

// ErrTrace reports a trace file that is malformed or does not belong to
// the flist it is used with.
var ErrTrace = errors.New("bad trace")

const (
	traceMagic     = "zostrace"
	traceVersion   = 1
	maxTraceChunks = 1 << 26
	// MaxTraceFile bounds a trace file read from disk: 2^26 chunks at 5
	// bytes each and change.
	MaxTraceFile = 512 << 20
)

// MarshalBinary encodes t. Chunks must be distinct.
func (t *Trace) MarshalBinary() ([]byte, error) {
	if len(t.Chunks) > maxTraceChunks {
		return nil, fmt.Errorf("%w: %d chunks", ErrTrace, len(t.Chunks))
	}
	b := make([]byte, 0, len(traceMagic)+1+digest.Size+binary.MaxVarintLen64+2*len(t.Chunks)+digest.Size)
	b = append(b, traceMagic...)
	b = append(b, traceVersion)
	b = append(b, t.Flist[:]...)
	b = binary.AppendUvarint(b, uint64(len(t.Chunks)))
	prev := int64(-1)
	for _, k := range t.Chunks {
		b = binary.AppendVarint(b, int64(k)-prev-1)
		prev = int64(k)
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
	if v := b[len(traceMagic)]; v != traceVersion {
		return fail("version %d (this zos reads %d)", v, traceVersion)
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
	}
	if len(d) != 0 {
		return fail("%d bytes after the last chunk", len(d))
	}
	return t, nil
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
