package mount

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/mem"
)

// packMem packs the tree at dir into a new in-memory store.
func packMem(t testing.TB, dir string) (*flist.Reader, store.Store) {
	t.Helper()
	st := mem.New()
	fl, _, err := pack.Dir(context.Background(), dir, st, pack.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	r, err := flist.Open(fl)
	if err != nil {
		t.Fatal(err)
	}
	return r, st
}

// bundleImage packs a few files of varied sizes and returns the image,
// its store and a version-2 trace with whole chunks and ranges of several
// shapes (first leaf, middle runs, the chunk's last partial leaf).
func bundleImage(t testing.TB, seed uint64) (*flist.Reader, store.Store, *Trace) {
	t.Helper()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(seed, 7))
	for i, size := range []int{300 << 10, 5000, 1 << 20} {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(r.Uint32() % 5)
		}
		if err := os.WriteFile(filepath.Join(dir, string(rune('a'+i))), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fr, st := packMem(t, dir)
	tr := &Trace{Flist: fr.Digest()}
	for k := len(fr.Chunks()) - 1; k >= 0; k -= 2 { // not in index order
		u := units(fr.Chunks()[k].Size)
		var rs []Range
		switch {
		case k%3 == 0 || u < 8:
		case k%3 == 1:
			rs = []Range{{0, 1}, {3, 2}, {u - 1, 1}}
		default:
			rs = []Range{{u / 2, u/2 - 1}}
		}
		tr.Chunks = append(tr.Chunks, uint32(k))
		tr.Ranges = append(tr.Ranges, rs)
	}
	if err := tr.Check(fr); err != nil {
		t.Fatal(err)
	}
	return fr, st, tr
}

func fetchFrom(st store.Store, r *flist.Reader) func(context.Context, int) ([]byte, error) {
	codec := chunk.NewCodec(0)
	return func(ctx context.Context, k int) ([]byte, error) {
		return store.Fetch(ctx, st, codec, r.Chunks()[k])
	}
}

func buildBundle(t testing.TB, r *flist.Reader, tr *Trace, plain func(context.Context, int) ([]byte, error)) []byte {
	t.Helper()
	var b bytes.Buffer
	st, err := BuildBundle(context.Background(), &b, r, tr, plain)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(b.Len()) || st.Chunks != len(tr.Chunks) {
		t.Fatalf("stats %+v for %d bytes, %d entries", st, b.Len(), len(tr.Chunks))
	}
	return b.Bytes()
}

// readAll decodes a bundle and checks every entry it yields against the
// plaintexts: what a decoder hands out without bad set is the chunk's.
func readAll(t testing.TB, b []byte, r *flist.Reader, tr *Trace, st store.Store) (good, bad int, err error) {
	t.Helper()
	d, err := newBundleDecoder(bytes.NewReader(b), r, tr)
	if err != nil {
		return 0, 0, err
	}
	defer d.close()
	plain := fetchFrom(st, r)
	for {
		e, err := d.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return good, bad, err
		}
		if e.bad != nil {
			bad++
			continue
		}
		want, ferr := plain(context.Background(), e.k)
		if ferr != nil {
			t.Fatal(ferr)
		}
		if len(e.ranges) == 0 {
			if !bytes.Equal(e.data[0], want) {
				t.Fatalf("chunk %d: whole plaintext differs", e.k)
			}
		}
		for j, rg := range e.ranges {
			off, n := rg.Bytes(uint64(len(want)))
			if !bytes.Equal(e.data[j], want[off:off+n]) {
				t.Fatalf("chunk %d range %d: bytes differ", e.k, j)
			}
		}
		good++
	}
}

func TestBundleCodec(t *testing.T) {
	r, st, tr := bundleImage(t, 1)
	b := buildBundle(t, r, tr, fetchFrom(st, r))
	if again := buildBundle(t, r, tr, fetchFrom(st, r)); !bytes.Equal(again, b) {
		t.Error("two builds of one trace differ")
	}
	good, bad, err := readAll(t, b, r, tr, st)
	if err != nil || good != len(tr.Chunks) || bad != 0 {
		t.Fatalf("decoded %d good, %d bad of %d: %v", good, bad, len(tr.Chunks), err)
	}
	var plain int64
	for _, c := range r.Chunks() {
		plain += int64(c.Size)
	}
	t.Logf("%d entries, %d bytes for %d of plaintext in the image", len(tr.Chunks), len(b), plain)
	if n, err := VerifyBundle(bytes.NewReader(b), r, tr); err != nil || n != len(tr.Chunks) {
		t.Fatalf("VerifyBundle: %d entries, %v", n, err)
	}

	// A chunk whose bytes are not its fingerprint's: that entry alone is
	// bad, and the ones after it still decode.
	for _, i := range []int{0, 1, 2} { // whole, three ranges, one range
		target := int(tr.Chunks[i])
		forged := buildBundle(t, r, tr, func(ctx context.Context, k int) ([]byte, error) {
			d, err := fetchFrom(st, r)(ctx, k)
			if k == target && err == nil {
				d = bytes.Clone(d)
				d[len(d)-1] ^= 1 // inside the last leaf, which every shape above carries
				d[0] ^= 1
			}
			return d, err
		})
		good, bad, err = readAll(t, forged, r, tr, st)
		if err != nil || bad != 1 || good != len(tr.Chunks)-1 {
			t.Errorf("entry %d forged: %d good, %d bad: %v", i, good, bad, err)
		}
		if n, err := VerifyBundle(bytes.NewReader(forged), r, tr); !errors.Is(err, ErrBundle) || n != i {
			t.Errorf("VerifyBundle, entry %d forged: %d entries, %v", i, n, err)
		}
	}

	// Truncated: the entries before the cut, then an error.
	good, _, err = readAll(t, b[:len(b)*2/3], r, tr, st)
	if err == nil || good == 0 || good == len(tr.Chunks) {
		t.Errorf("truncated bundle: %d good, err %v", good, err)
	}
	if _, err := VerifyBundle(bytes.NewReader(b[:len(b)*2/3]), r, tr); !errors.Is(err, ErrBundle) {
		t.Errorf("VerifyBundle, truncated: %v", err)
	}
	// Data after the stream's last entry is refused (after the entries).
	if _, _, err = readAll(t, append(bytes.Clone(b), 0), r, tr, st); err == nil {
		t.Error("a byte after the bundle accepted")
	}

	// Another image's or another trace's bundle is refused at its header.
	r2, st2, tr2 := bundleImage(t, 2)
	if _, _, err := readAll(t, buildBundle(t, r2, tr2, fetchFrom(st2, r2)), r, tr, st); !errors.Is(err, ErrBundle) {
		t.Errorf("another image's bundle: %v", err)
	}
	other := &Trace{Flist: tr.Flist, Chunks: tr.Chunks[1:], Ranges: tr.Ranges[1:]}
	if _, _, err := readAll(t, buildBundle(t, r, other, fetchFrom(st, r)), r, tr, st); !errors.Is(err, ErrBundle) {
		t.Errorf("another trace's bundle: %v", err)
	}
	// A version-1 trace has nothing to build from.
	if _, err := BuildBundle(context.Background(), io.Discard, r, &Trace{Flist: tr.Flist, Chunks: tr.Chunks}, fetchFrom(st, r)); !errors.Is(err, ErrBundle) {
		t.Errorf("bundle of a version-1 trace: %v", err)
	}
}

// FuzzBundle decodes arbitrary bundles for a fixed image and trace: the
// decoder never panics, and whatever it hands out as verified is the
// image's own bytes.
func FuzzBundle(f *testing.F) {
	r, st, tr := bundleImage(f, 1)
	b := buildBundle(f, r, tr, fetchFrom(st, r))
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		readAll(t, b, r, tr, st)
	})
}
