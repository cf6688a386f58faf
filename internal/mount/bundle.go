package mount

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"

	"github.com/klauspost/compress/zstd"
	"lukechampine.com/blake3/bao"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
)

// A start bundle (docs/BUNDLE.md) carries, for each chunk a version-2
// trace lists, the bytes its ranges cover with the BLAKE3 tree nodes that
// verify them against the chunk's fingerprint (Bao slices), in the
// trace's order, as one zstd stream.

// ErrBundle reports a bundle that is malformed or does not belong to the
// image and trace it is used with.
var ErrBundle = errors.New("bad start bundle")

const (
	bundleMagic = "zosbndl\x01"
	bundleHead  = len(bundleMagic) + 2*digest.Size
	// bundleWindow bounds the zstd window a bundle's decoder accepts.
	bundleWindow = 8 << 20
)

// Sum returns the check of t's encoding (its last 32 bytes), which a
// bundle built from t carries.
func (t *Trace) Sum() (digest.ID, error) {
	b, err := t.MarshalBinary()
	if err != nil {
		return digest.ID{}, err
	}
	return digest.ID(b[len(b)-digest.Size:]), nil
}

// BundleStats describe a bundle built.
type BundleStats struct {
	Chunks int   `json:"chunks"` // entries
	Plain  int64 `json:"plain"`  // plaintext bytes carried
	Proofs int64 `json:"proofs"` // bytes of tree nodes carried with them
	Bytes  int64 `json:"bytes"`  // the bundle's size
}

// BuildBundle writes the start bundle of trace t, checked against r, to
// w. plain returns the verified plaintext of chunk k; BuildBundle asks
// for up to 16 at once and writes them in the trace's order, so the
// bundle's bytes depend only on r and t.
func BuildBundle(ctx context.Context, w io.Writer, r *flist.Reader, t *Trace, plain func(ctx context.Context, k int) ([]byte, error)) (BundleStats, error) {
	var st BundleStats
	if t.Ranges == nil {
		return st, fmt.Errorf("%w: the trace has no ranges (version 1): record it again with this zos", ErrBundle)
	}
	if err := t.Check(r); err != nil {
		return st, err
	}
	sum, err := t.Sum()
	if err != nil {
		return st, err
	}
	cw := &countWriter{w: w}
	id := r.Digest()
	head := make([]byte, 0, bundleHead)
	head = append(append(append(head, bundleMagic...), id[:]...), sum[:]...)
	if _, err := cw.Write(head); err != nil {
		return st, err
	}
	zw, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(bundleWindow))
	if err != nil {
		return st, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Fetch ahead in parallel, write in order.
	type result struct {
		data []byte
		err  error
	}
	const parallel = 16
	results := make([]chan result, len(t.Chunks))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	sem := make(chan struct{}, parallel) // fetched and not yet written
	go func() {
		for i, k := range t.Chunks {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func() {
				data, err := plain(ctx, int(k))
				results[i] <- result{data, err}
			}()
		}
	}()
	var buf []byte
	for i, k := range t.Chunks {
		var res result
		select {
		case res = <-results[i]:
		case <-ctx.Done():
			return st, ctx.Err()
		}
		<-sem
		if res.err != nil {
			return st, fmt.Errorf("chunk %d: %w", k, res.err)
		}
		ref := r.Chunks()[k]
		if len(res.data) != int(ref.Size) {
			return st, fmt.Errorf("chunk %d: %d bytes, the flist says %d", k, len(res.data), ref.Size)
		}
		buf = binary.AppendUvarint(buf[:0], uint64(k))
		if buf, err = appendRanges(buf, t.Ranges[i]); err != nil {
			return st, err
		}
		if len(t.Ranges[i]) == 0 {
			buf = append(buf, res.data...)
			st.Plain += int64(len(res.data))
		} else {
			enc, _ := bao.EncodeBuf(res.data, 0, false)
			for _, rg := range t.Ranges[i] {
				off, n := rg.Bytes(uint64(ref.Size))
				var s bytes.Buffer
				if err := bao.ExtractSlice(&s, bytes.NewReader(enc), nil, 0, off, n); err != nil {
					return st, fmt.Errorf("chunk %d: slice: %w", k, err)
				}
				buf = append(buf, s.Bytes()[8:]...) // the length is the flist's
				st.Plain += int64(n)                // whole leaves: ranges are in their units
				st.Proofs += int64(s.Len()-8) - int64(n)
			}
		}
		if _, err := zw.Write(buf); err != nil {
			return st, err
		}
		st.Chunks++
	}
	if err := zw.Close(); err != nil {
		return st, err
	}
	st.Bytes = cw.n
	return st, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// sliceSize is the size of the Bao slice (group 0, without its 8-byte
// length) of [off, off+n) of a chunk of size bytes: the parent nodes on
// the paths to the slice's leaves, and those leaves.
func sliceSize(size, off, n uint64) uint64 {
	var rec func(pos, span uint64) uint64
	rec = func(pos, span uint64) uint64 {
		if pos >= off+n || off >= pos+span {
			return 0
		}
		if span <= rangeUnit {
			return span
		}
		mid := uint64(1) << (bits.Len64(span-1) - 1)
		return 64 + rec(pos, mid) + rec(pos+mid, span-mid)
	}
	return rec(0, size)
}

// bundleEntry is one chunk's part of a bundle, verified.
type bundleEntry struct {
	k      int
	ranges []Range  // as the trace lists them; nil: the whole chunk
	data   [][]byte // the plaintext of each range (or of the whole chunk)
	bad    error    // verification failed: the entry carries nothing
}

// bundleDecoder reads a bundle's entries, each checked against the trace
// it was built from (the same chunks and ranges, in the same order) and
// verified against the image's fingerprints.
type bundleDecoder struct {
	r   *flist.Reader
	t   *Trace
	zr  *zstd.Decoder
	br  *bufio.Reader
	pos int // entries read
}

// newBundleDecoder reads and checks a bundle's header: it must have been
// built for r from t (which Check has bound to r).
func newBundleDecoder(src io.Reader, r *flist.Reader, t *Trace) (*bundleDecoder, error) {
	head := make([]byte, bundleHead)
	if _, err := io.ReadFull(src, head); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBundle, err)
	}
	if string(head[:len(bundleMagic)]) != bundleMagic {
		return nil, fmt.Errorf("%w: not a zos start bundle (version 1)", ErrBundle)
	}
	if id := digest.ID(head[len(bundleMagic):][:digest.Size]); id != r.Digest() {
		return nil, fmt.Errorf("%w: built for flist %s, not %s", ErrBundle, id.Short(), r.Digest().Short())
	}
	sum, err := t.Sum()
	if err != nil {
		return nil, err
	}
	if id := digest.ID(head[len(bundleMagic)+digest.Size:]); id != sum {
		return nil, fmt.Errorf("%w: built from trace %s, not the image's %s", ErrBundle, id.Short(), sum.Short())
	}
	zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(bundleWindow),
		zstd.WithDecoderMaxMemory(64<<20))
	if err != nil {
		return nil, err
	}
	return &bundleDecoder{r: r, t: t, zr: zr, br: bufio.NewReaderSize(zr, 64<<10)}, nil
}

func (d *bundleDecoder) close() { d.zr.Close() }

// next returns the next entry, io.EOF after the last one (and the end of
// the stream), or an error that ends the bundle: a structure that is not
// the trace's, or a truncated or damaged stream. An entry whose bytes fail
// verification is returned with bad set: the stream goes on after it.
func (d *bundleDecoder) next() (*bundleEntry, error) {
	if d.pos == len(d.t.Chunks) {
		if _, err := d.br.ReadByte(); err != io.EOF {
			return nil, fmt.Errorf("%w: data after the last entry (%v)", ErrBundle, err)
		}
		return nil, io.EOF
	}
	i := d.pos
	want, wantRanges := d.t.Chunks[i], d.t.Ranges[i]
	k, err := binary.ReadUvarint(d.br)
	if err != nil {
		return nil, fmt.Errorf("%w: entry %d: %v", ErrBundle, i, noEOF(err))
	}
	if k != uint64(want) {
		return nil, fmt.Errorf("%w: entry %d is chunk %d, the trace says %d", ErrBundle, i, k, want)
	}
	n, err := binary.ReadUvarint(d.br)
	if err != nil {
		return nil, fmt.Errorf("%w: entry %d: %v", ErrBundle, i, noEOF(err))
	}
	if n != uint64(len(wantRanges)) {
		return nil, fmt.Errorf("%w: entry %d has %d ranges, the trace %d", ErrBundle, i, n, len(wantRanges))
	}
	end := uint64(0)
	for j, rg := range wantRanges {
		gap, err1 := binary.ReadUvarint(d.br)
		size, err2 := binary.ReadUvarint(d.br)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBundle, i, noEOF(err))
		}
		if end+gap != uint64(rg.Start) || size != uint64(rg.Len) {
			return nil, fmt.Errorf("%w: entry %d: range %d is not the trace's", ErrBundle, i, j)
		}
		end = uint64(rg.Start + rg.Len)
	}
	d.pos++
	ref := d.r.Chunks()[want]
	e := &bundleEntry{k: int(want), ranges: wantRanges}
	if len(wantRanges) == 0 {
		data := make([]byte, ref.Size)
		if _, err := io.ReadFull(d.br, data); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBundle, i, noEOF(err))
		}
		if digest.Sum(data) != ref.Sum {
			e.bad = fmt.Errorf("chunk %d: the bundle's plaintext does not match its fingerprint", want)
			return e, nil
		}
		e.data = [][]byte{data}
		return e, nil
	}
	size := uint64(ref.Size)
	for _, rg := range wantRanges {
		off, n := rg.Bytes(size)
		enc := make([]byte, 8+sliceSize(size, off, n))
		binary.LittleEndian.PutUint64(enc, size)
		if _, err := io.ReadFull(d.br, enc[8:]); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBundle, i, noEOF(err))
		}
		if e.bad != nil {
			continue // keep the stream in step
		}
		data, ok := bao.VerifySlice(enc, 0, off, n, ref.Sum)
		if !ok || uint64(len(data)) != n {
			e.bad = fmt.Errorf("chunk %d: the bundle's slice at %d+%d does not match its fingerprint", want, off, n)
			continue
		}
		e.data = append(e.data, data)
	}
	if e.bad != nil {
		e.data = nil
	}
	return e, nil
}

// VerifyBundle reads a whole bundle from src and checks it as a mount
// would, built for r from t (which Check has bound to r): its header, its
// structure and every entry's bytes. It returns the number of entries, and
// an error wrapping ErrBundle at the first fault.
func VerifyBundle(src io.Reader, r *flist.Reader, t *Trace) (int, error) {
	d, err := newBundleDecoder(src, r, t)
	if err != nil {
		return 0, err
	}
	defer d.close()
	for n := 0; ; n++ {
		e, err := d.next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if e.bad != nil {
			return n, fmt.Errorf("%w: entry %d: %v", ErrBundle, n, e.bad)
		}
	}
}

// noEOF reports a stream that ends inside an entry as truncated.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
