package flist

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
)

// Reader gives random access to an flist held in memory. Open checks the
// framing, the section table, the metadata and the chunk table; entries are
// decoded a block at a time on first use and each block is checked as it is
// decoded. Validate checks the rules that span blocks. A Reader is safe for
// concurrent use.
type Reader struct {
	raw    []byte
	body   []byte
	digest Digest
	meta   map[string][]byte
	sigs   []Signature

	n         uint64 // entries
	blockN    uint64 // entries per block
	offsets   []byte // (nblocks+1) u32
	blockData []byte

	chunks []Chunk
	starts []uint64 // stream offset of each chunk, plus the total at the end

	zd *zstd.Decoder

	mu     sync.Mutex
	blocks map[uint64][]Entry
}

// Open parses an flist. It keeps b; the caller must not modify it.
func Open(b []byte) (*Reader, error) {
	d := &dec{b: b}
	if m := d.fixed(8); d.err != nil || !bytes.Equal(m, magic[:]) {
		return nil, corrupt("not an flist (bad magic)")
	}
	if v := d.u16(); v != Version {
		if d.err != nil {
			return nil, d.err
		}
		return nil, fmt.Errorf("%w: format version %d, this zos reads version %d", ErrCorrupt, v, Version)
	}
	flags, nsec, res := d.u16(), d.u16(), d.u16()
	bodyLen := d.u64()
	if d.err != nil {
		return nil, d.err
	}
	if flags != 0 || res != 0 || nsec != nSections {
		return nil, corrupt("header flags %d, sections %d", flags, nsec)
	}
	if bodyLen > MaxBody || bodyLen > uint64(len(b)) || bodyLen < headerSize+nSections*sectionSize {
		return nil, corrupt("body length %d of a %d-byte file", bodyLen, len(b))
	}
	r := &Reader{raw: b, body: b[:bodyLen], blocks: map[uint64][]Entry{}}
	r.digest = digest.Sum(r.body)
	var secs [nSections][]byte
	next := uint64(headerSize + nSections*sectionSize)
	for i := range secs {
		id, f, z, off, n := d.u16(), d.u16(), d.u32(), d.u64(), d.u64()
		if d.err != nil {
			return nil, d.err
		}
		if id != uint16(i+1) || f != 0 || z != 0 || off != next || n > bodyLen-off {
			return nil, corrupt("section table entry %d", i)
		}
		secs[i] = r.body[off : off+n]
		next = off + n
	}
	if next != bodyLen {
		return nil, corrupt("sections end at %d, body at %d", next, bodyLen)
	}
	if err := r.parseSignatures(b[bodyLen:]); err != nil {
		return nil, err
	}
	if err := r.parseMeta(secs[0]); err != nil {
		return nil, err
	}
	r.zd = newBlockDecoder()
	if err := r.parseChunks(secs[2]); err != nil {
		return nil, err
	}
	if err := r.parseEntries(secs[1]); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reader) parseSignatures(t []byte) error {
	if len(t) == 0 {
		return nil
	}
	d := &dec{b: t}
	if m := d.fixed(8); d.err != nil || !bytes.Equal(m, sigMagic[:]) {
		return corrupt("trailing bytes after body")
	}
	n := d.u16()
	if d.err != nil || n == 0 || n > MaxSignatures || len(d.b) != int(n)*96 {
		return corrupt("signature trailer")
	}
	for i := 0; i < int(n); i++ {
		var s Signature
		copy(s.Key[:], d.fixed(32))
		copy(s.Sig[:], d.fixed(64))
		if i > 0 && bytes.Compare(r.sigs[i-1].Key[:], s.Key[:]) >= 0 {
			return corrupt("signatures not sorted by key")
		}
		r.sigs = append(r.sigs, s)
	}
	return nil
}

func (r *Reader) parseMeta(s []byte) error {
	d := &dec{b: s}
	n := d.uvarint()
	if n > MaxMeta {
		return corrupt("%d metadata keys", n)
	}
	r.meta = make(map[string][]byte, n)
	prev := ""
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := string(d.bytes(MaxName))
		v := d.bytes(MaxMetaValue)
		if d.err == nil && (k == "" || (i > 0 && k <= prev)) {
			return corrupt("metadata keys not sorted and unique")
		}
		r.meta[k] = v
		prev = k
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes in metadata")
	}
	return d.err
}

func (r *Reader) parseChunks(s []byte) error {
	d := &dec{b: s}
	n := d.u64()
	sl := d.u32()
	sb := d.fixed(int(sl))
	if d.err != nil {
		return d.err
	}
	if n > MaxChunks || uint64(len(d.b)) != n*32 {
		return corrupt("chunk table of %d chunks in %d bytes", n, len(d.b))
	}
	raw, err := unpackBlock(r.zd, sb)
	if err != nil {
		return err
	}
	sd := &dec{b: raw}
	r.chunks = make([]Chunk, n)
	r.starts = make([]uint64, n+1)
	var total uint64
	for i := range r.chunks {
		sz := sd.uvarint()
		if sd.err != nil {
			return sd.err
		}
		if sz == 0 || sz > chunk.MaxSize {
			return corrupt("chunk %d has size %d", i, sz)
		}
		r.chunks[i] = Chunk{Sum: digest.ID(d.b[i*32 : i*32+32]), Size: uint32(sz)}
		r.starts[i] = total
		total += sz
	}
	r.starts[n] = total
	if len(sd.b) != 0 {
		return corrupt("trailing bytes in chunk sizes")
	}
	return nil
}

func (r *Reader) parseEntries(s []byte) error {
	d := &dec{b: s}
	r.n = d.u64()
	r.blockN = uint64(d.u32())
	nb := uint64(d.u32())
	if d.err != nil {
		return d.err
	}
	if r.n == 0 || r.n > MaxEntries || r.blockN == 0 || r.blockN > 1<<16 || nb != (r.n+r.blockN-1)/r.blockN {
		return corrupt("entry table: %d entries, %d per block, %d blocks", r.n, r.blockN, nb)
	}
	r.offsets = d.fixed(int(nb+1) * 4)
	if d.err != nil {
		return d.err
	}
	r.blockData = d.b
	prev := uint32(0)
	for i := uint64(0); i <= nb; i++ {
		o := binary.LittleEndian.Uint32(r.offsets[i*4:])
		if (i == 0 && o != 0) || o < prev || uint64(o) > uint64(len(r.blockData)) {
			return corrupt("block offset %d", i)
		}
		prev = o
	}
	if uint64(prev) != uint64(len(r.blockData)) {
		return corrupt("blocks end at %d of %d bytes", prev, len(r.blockData))
	}
	return nil
}

// Digest returns the flist's root digest: BLAKE3 over every byte of the
// body, which holds every entry, attribute and chunk fingerprint.
func (r *Reader) Digest() Digest { return r.digest }

// Bytes returns the whole flist as opened.
func (r *Reader) Bytes() []byte { return r.raw }

// Body returns the signed part of the flist.
func (r *Reader) Body() []byte { return r.body }

// Len returns the number of entries.
func (r *Reader) Len() uint64 { return r.n }

// Meta returns the metadata value under key.
func (r *Reader) Meta(key string) ([]byte, bool) { v, ok := r.meta[key]; return v, ok }

// MetaKeys returns the metadata keys, sorted.
func (r *Reader) MetaKeys() []string {
	keys := make([]string, 0, len(r.meta))
	for k := range r.meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Chunks returns the chunk table. The caller must not modify it.
func (r *Reader) Chunks() []Chunk { return r.chunks }

// StreamSize returns the length of the content stream: the sum of chunk sizes.
func (r *Reader) StreamSize() uint64 { return r.starts[len(r.chunks)] }

// ChunkStart returns the stream offset where chunk i begins.
func (r *Reader) ChunkStart(i int) uint64 { return r.starts[i] }

// ChunkAt returns the index of the chunk holding stream offset off.
func (r *Reader) ChunkAt(off uint64) int {
	return sort.Search(len(r.chunks), func(i int) bool { return r.starts[i+1] > off })
}

// Signatures returns the signatures in the trailer.
func (r *Reader) Signatures() []Signature { return r.sigs }

// Entry returns entry i. The result is shared; the caller must not modify it.
func (r *Reader) Entry(i uint64) (*Entry, error) {
	if i >= r.n {
		return nil, fmt.Errorf("%w: entry %d of %d", ErrCorrupt, i, r.n)
	}
	blk, err := r.block(i / r.blockN)
	if err != nil {
		return nil, err
	}
	return &blk[i%r.blockN], nil
}

// Resolve returns the entry a hard link points to, or e itself.
func (r *Reader) Resolve(e *Entry) (*Entry, error) {
	if !e.IsLink() {
		return e, nil
	}
	t, err := r.Entry(uint64(e.Link))
	if err != nil {
		return nil, err
	}
	if t.IsLink() || t.Kind() == KindDir {
		return nil, corrupt("hard link to a %s", map[bool]string{true: "link", false: "directory"}[t.IsLink()])
	}
	return t, nil
}

func (r *Reader) block(b uint64) ([]Entry, error) {
	r.mu.Lock()
	blk, ok := r.blocks[b]
	r.mu.Unlock()
	if ok {
		return blk, nil
	}
	lo := binary.LittleEndian.Uint32(r.offsets[b*4:])
	hi := binary.LittleEndian.Uint32(r.offsets[b*4+4:])
	raw, err := unpackBlock(r.zd, r.blockData[lo:hi])
	if err != nil {
		return nil, fmt.Errorf("entry block %d: %w", b, err)
	}
	first := b * r.blockN
	count := min(r.blockN, r.n-first)
	blk, err = r.decodeBlock(raw, first, count)
	if err != nil {
		return nil, fmt.Errorf("entry block %d: %w", b, err)
	}
	r.mu.Lock()
	if len(r.blocks) >= 4096 { // bound memory on huge images; blocks decode fast
		clear(r.blocks)
	}
	r.blocks[b] = blk
	r.mu.Unlock()
	return blk, nil
}

func (r *Reader) decodeBlock(raw []byte, first, count uint64) ([]Entry, error) {
	d := &dec{b: raw}
	out := make([]Entry, count)
	var prevMtime int64
	var nextOff uint64
	for k := range out {
		i := first + uint64(k)
		e := &out[k]
		e.Link = -1
		flags := d.uvarint()
		e.Name = string(d.bytes(MaxName))
		if d.err != nil {
			return nil, d.err
		}
		if flags&^(flagLink|flagXattrs) != 0 || flags == flagLink|flagXattrs {
			return nil, corrupt("entry %d flags %d", i, flags)
		}
		if i == 0 {
			if e.Name != "" || flags&flagLink != 0 {
				return nil, corrupt("root entry must be an unnamed directory")
			}
		} else if err := ValidName(e.Name); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if flags&flagLink != 0 {
			t := d.uvarint()
			if d.err == nil && t >= i {
				return nil, corrupt("entry %d links forward to %d", i, t)
			}
			e.Link = int64(t)
			continue
		}
		mode, uid, gid := d.uvarint(), d.uvarint(), d.uvarint()
		e.Mtime = prevMtime + d.varint()
		prevMtime = e.Mtime
		nsec := d.uvarint()
		if d.err != nil {
			return nil, d.err
		}
		if mode > 0xffffffff || uid > 0xffffffff || gid > 0xffffffff || nsec >= 1e9 {
			return nil, corrupt("entry %d attributes out of range", i)
		}
		e.Mode, e.UID, e.GID, e.Nsec = uint32(mode), uint32(uid), uint32(gid), uint32(nsec)
		if e.Mode&^(kindMask|permMask) != 0 || !validKind(e.Kind()) {
			return nil, corrupt("entry %d mode %o", i, e.Mode)
		}
		if i == 0 && e.Kind() != KindDir {
			return nil, corrupt("root is a %s", e.Kind())
		}
		switch e.Kind() {
		case KindDir:
			e.FirstChild, e.NumChildren = d.uvarint(), d.uvarint()
			if d.err == nil && (e.FirstChild <= i || e.FirstChild > r.n || e.NumChildren > r.n-e.FirstChild) {
				return nil, corrupt("directory %d children [%d,+%d) of %d entries", i, e.FirstChild, e.NumChildren, r.n)
			}
		case KindRegular:
			e.Size = d.uvarint()
			e.Offset = nextOff + uint64(d.varint())
			if d.err == nil && (e.Size > maxFileSize || e.Offset > r.StreamSize() || e.Size > r.StreamSize()-e.Offset) {
				return nil, corrupt("file %d: %d bytes at %d past the %d-byte content stream", i, e.Size, e.Offset, r.StreamSize())
			}
			nextOff = e.Offset + e.Size
		case KindSymlink:
			e.Target = string(d.bytes(MaxTarget))
			if d.err == nil && (e.Target == "" || strings.IndexByte(e.Target, 0) >= 0) {
				return nil, corrupt("symlink %d target", i)
			}
		case KindChar, KindBlock:
			e.Rdev = d.uvarint()
		}
		if flags&flagXattrs != 0 {
			n := d.uvarint()
			if d.err == nil && (n == 0 || n > MaxXattrs) {
				return nil, corrupt("entry %d has %d xattrs", i, n)
			}
			e.Xattrs = make([]Xattr, 0, min(n, MaxXattrs))
			for j := uint64(0); j < n && d.err == nil; j++ {
				name := string(d.bytes(MaxXattrName))
				val := d.bytes(MaxXattrValue)
				if d.err == nil && (name == "" || strings.IndexByte(name, 0) >= 0 || (j > 0 && name <= e.Xattrs[j-1].Name)) {
					return nil, corrupt("entry %d xattr names", i)
				}
				e.Xattrs = append(e.Xattrs, Xattr{name, val})
			}
		}
		if d.err != nil {
			return nil, d.err
		}
	}
	if d.err == nil && len(d.b) != 0 {
		return nil, corrupt("trailing bytes in block")
	}
	return out, d.err
}

// Children returns the index range of directory i's children.
func (r *Reader) Children(e *Entry) (first, n uint64) { return e.FirstChild, e.NumChildren }

// LookupChild finds name among dir's children by binary search.
func (r *Reader) LookupChild(dir *Entry, name string) (uint64, *Entry, error) {
	if dir.Kind() != KindDir {
		return 0, nil, fmt.Errorf("not a directory")
	}
	var ferr error
	k := sort.Search(int(dir.NumChildren), func(j int) bool {
		c, err := r.Entry(dir.FirstChild + uint64(j))
		if err != nil {
			ferr = err
			return true
		}
		return c.Name >= name
	})
	if ferr != nil {
		return 0, nil, ferr
	}
	if uint64(k) < dir.NumChildren {
		i := dir.FirstChild + uint64(k)
		c, err := r.Entry(i)
		if err != nil {
			return 0, nil, err
		}
		if c.Name == name {
			return i, c, nil
		}
	}
	return 0, nil, ErrNotExist
}

// ErrNotExist is returned by lookups of a path the flist does not hold.
var ErrNotExist = fmt.Errorf("no such file in flist")

// Lookup resolves a slash-separated path (leading slash optional) without
// following symlinks.
func (r *Reader) Lookup(p string) (uint64, *Entry, error) {
	cur := uint64(0)
	e, err := r.Entry(0)
	if err != nil {
		return 0, nil, err
	}
	p = path.Clean("/" + p)
	if p == "/" {
		return 0, e, nil
	}
	for _, name := range strings.Split(p[1:], "/") {
		if e.Kind() != KindDir {
			return 0, nil, fmt.Errorf("%s: %w", p, ErrNotExist)
		}
		cur, e, err = r.LookupChild(e, name)
		if err != nil {
			return 0, nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return cur, e, nil
}

// Walk calls fn for every entry in index order (breadth-first), with its
// path. Hard links are passed as they are; use Resolve for their target.
func (r *Reader) Walk(fn func(p string, i uint64, e *Entry) error) error {
	paths := make([]string, r.n) // parent paths, filled as directories are met
	paths[0] = "/"
	for i := uint64(0); i < r.n; i++ {
		e, err := r.Entry(i)
		if err != nil {
			return err
		}
		if err := fn(paths[i], i, e); err != nil {
			return err
		}
		if !e.IsLink() && e.Kind() == KindDir {
			for j := e.FirstChild; j < e.FirstChild+e.NumChildren; j++ {
				c, err := r.Entry(j)
				if err != nil {
					return err
				}
				paths[j] = path.Join(paths[i], c.Name)
			}
		}
	}
	return nil
}

// Validate checks the rules that span blocks: the directory tree is exactly
// the breadth-first layout (every entry but the root has one parent, no
// cycles, nothing unreachable), children are sorted by name without
// duplicates, and hard links point at earlier non-directories.
func (r *Reader) Validate() error {
	next := uint64(1)
	parent := make([]uint32, r.n)
	var prevName string
	for i := uint64(0); i < r.n; i++ {
		e, err := r.Entry(i)
		if err != nil {
			return err
		}
		if i > 0 {
			if i >= next {
				return corrupt("entry %d is in no directory", i)
			}
			if i > 1 && parent[i] == parent[i-1] && e.Name <= prevName {
				return corrupt("entry %d: names not sorted or duplicated (%q after %q)", i, e.Name, prevName)
			}
			prevName = e.Name
		}
		if e.IsLink() {
			if _, err := r.Resolve(e); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			continue
		}
		if e.Kind() == KindDir {
			if e.FirstChild != next {
				return corrupt("directory %d: children at %d, expected %d", i, e.FirstChild, next)
			}
			for j := e.FirstChild; j < e.FirstChild+e.NumChildren; j++ {
				parent[j] = uint32(i)
			}
			next += e.NumChildren
		}
	}
	if next != r.n {
		return corrupt("%d entries, tree holds %d", r.n, next)
	}
	return nil
}
