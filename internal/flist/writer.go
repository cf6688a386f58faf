package flist

import (
	"bytes"
	"sort"

	"github.com/zosgrid/zos/internal/digest"
)

// Image is everything an flist records, in the form the writer takes.
// Entries must already be in the format's order (breadth-first, children
// sorted by name, see Entry); Encode checks that by decoding its output.
type Image struct {
	Entries []Entry
	Chunks  []Chunk
	Meta    map[string][]byte
}

// Encode serializes img. The output is canonical: equal images give equal
// bytes, and Open+Validate accept it.
func Encode(img *Image) ([]byte, error) {
	var sections [nSections][]byte
	sections[0] = encodeMeta(img.Meta)
	sections[1] = encodeEntries(img.Entries)
	sections[2] = encodeChunks(img.Chunks)

	b := frame(sections[:])
	r, err := Open(b)
	if err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return b, nil
}

// frame writes the header and section table in front of the sections.
func frame(sections [][]byte) []byte {
	var e enc
	e.b = append(e.b, magic[:]...)
	e.u16(Version)
	e.u16(0)
	e.u16(uint16(len(sections)))
	e.u16(0)
	off := uint64(headerSize + len(sections)*sectionSize)
	body := off
	for _, s := range sections {
		body += uint64(len(s))
	}
	e.u64(body)
	for i, s := range sections {
		e.u16(uint16(i + 1))
		e.u16(0)
		e.u32(0)
		e.u64(off)
		e.u64(uint64(len(s)))
		off += uint64(len(s))
	}
	for _, s := range sections {
		e.b = append(e.b, s...)
	}
	return e.b
}

func encodeMeta(m map[string][]byte) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var e enc
	e.uvarint(uint64(len(keys)))
	for _, k := range keys {
		e.str(k)
		e.bytes(m[k])
	}
	return e.b
}

func encodeEntries(entries []Entry) []byte {
	z := newBlockEncoder()
	defer z.Close()
	var blocks [][]byte
	for start := 0; start < len(entries); start += BlockEntries {
		end := min(start+BlockEntries, len(entries))
		blocks = append(blocks, packBlock(z, encodeBlock(entries[start:end])))
	}
	var e enc
	e.u64(uint64(len(entries)))
	e.u32(BlockEntries)
	e.u32(uint32(len(blocks)))
	off := uint32(0)
	e.u32(0)
	for _, b := range blocks {
		off += uint32(len(b))
		e.u32(off)
	}
	for _, b := range blocks {
		e.b = append(e.b, b...)
	}
	return e.b
}

// encodeBlock writes entries with the deltas the decoder undoes: mtime as a
// difference from the previous stored entry's, and a file's offset as a
// difference from where the previous file in the block ended (zero for
// files laid out back to back, the common case).
func encodeBlock(entries []Entry) []byte {
	var e enc
	var prevMtime int64
	var nextOff uint64
	for i := range entries {
		en := &entries[i]
		flags := uint64(0)
		if en.IsLink() {
			flags |= flagLink
		} else if len(en.Xattrs) > 0 {
			flags |= flagXattrs
		}
		e.uvarint(flags)
		e.str(en.Name)
		if en.IsLink() {
			e.uvarint(uint64(en.Link))
			continue
		}
		e.uvarint(uint64(en.Mode))
		e.uvarint(uint64(en.UID))
		e.uvarint(uint64(en.GID))
		e.varint(en.Mtime - prevMtime)
		prevMtime = en.Mtime
		e.uvarint(uint64(en.Nsec))
		switch en.Kind() {
		case KindDir:
			e.uvarint(en.FirstChild)
			e.uvarint(en.NumChildren)
		case KindRegular:
			e.uvarint(en.Size)
			e.varint(int64(en.Offset - nextOff))
			nextOff = en.Offset + en.Size
		case KindSymlink:
			e.str(en.Target)
		case KindChar, KindBlock:
			e.uvarint(en.Rdev)
		}
		if flags&flagXattrs != 0 {
			xs := append([]Xattr(nil), en.Xattrs...)
			sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
			e.uvarint(uint64(len(xs)))
			for _, x := range xs {
				e.str(x.Name)
				e.bytes(x.Value)
			}
		}
	}
	return e.b
}

func encodeChunks(chunks []Chunk) []byte {
	var sizes enc
	for _, c := range chunks {
		sizes.uvarint(uint64(c.Size))
	}
	z := newBlockEncoder()
	defer z.Close()
	sb := packBlock(z, sizes.b)
	var e enc
	e.u64(uint64(len(chunks)))
	e.u32(uint32(len(sb)))
	e.b = append(e.b, sb...)
	for _, c := range chunks {
		e.b = append(e.b, c.Sum[:]...)
	}
	return e.b
}

// encodeSignatures returns the trailer for sigs (none: no trailer).
func encodeSignatures(sigs []Signature) []byte {
	if len(sigs) == 0 {
		return nil
	}
	sigs = append([]Signature(nil), sigs...)
	sort.Slice(sigs, func(i, j int) bool { return bytes.Compare(sigs[i].Key[:], sigs[j].Key[:]) < 0 })
	var e enc
	e.b = append(e.b, sigMagic[:]...)
	e.u16(uint16(len(sigs)))
	for _, s := range sigs {
		e.b = append(e.b, s.Key[:]...)
		e.b = append(e.b, s.Sig[:]...)
	}
	return e.b
}

var _ = digest.Size
