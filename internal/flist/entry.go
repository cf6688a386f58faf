package flist

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
)

// Kind is an entry's file type, as in st_mode's S_IFMT bits.
type Kind uint32

const (
	KindRegular Kind = 0o100000
	KindDir     Kind = 0o040000
	KindSymlink Kind = 0o120000
	KindChar    Kind = 0o020000
	KindBlock   Kind = 0o060000
	KindFIFO    Kind = 0o010000
	KindSocket  Kind = 0o140000
	kindMask         = 0o170000
	permMask         = 0o7777
)

func (k Kind) String() string {
	switch k {
	case KindRegular:
		return "file"
	case KindDir:
		return "dir"
	case KindSymlink:
		return "symlink"
	case KindChar:
		return "char"
	case KindBlock:
		return "block"
	case KindFIFO:
		return "fifo"
	case KindSocket:
		return "socket"
	}
	return fmt.Sprintf("kind(%o)", uint32(k))
}

func validKind(k Kind) bool {
	switch k {
	case KindRegular, KindDir, KindSymlink, KindChar, KindBlock, KindFIFO, KindSocket:
		return true
	}
	return false
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Entry is one name in the tree. Entries are numbered in breadth-first order
// with each directory's children sorted by name, so the children of a
// directory are the contiguous range [FirstChild, FirstChild+NumChildren).
type Entry struct {
	Name string // empty for the root
	// Link, when not -1, makes this entry a hard link to the entry with
	// that index (which comes earlier); the other fields then mirror the
	// target's and are not stored.
	Link  int64
	Mode  uint32 // st_mode: Kind bits | permission bits (incl. setuid, setgid, sticky)
	UID   uint32
	GID   uint32
	Mtime int64 // seconds since the epoch
	Nsec  uint32
	Size  uint64 // regular files: content bytes
	// Offset is where a regular file's content starts in the image's
	// content stream (see Reader.Extent).
	Offset uint64
	// Directories: the range of their children.
	FirstChild  uint64
	NumChildren uint64
	Target      string // symlinks
	Rdev        uint64 // devices: Linux encoded device number
	Xattrs      []Xattr
}

// Kind returns the entry's type.
func (e *Entry) Kind() Kind { return Kind(e.Mode & kindMask) }

// Perm returns the permission bits including setuid, setgid and sticky.
func (e *Entry) Perm() uint32 { return e.Mode & permMask }

// IsLink reports whether the entry is a hard link to an earlier entry.
func (e *Entry) IsLink() bool { return e.Link >= 0 }

// FileMode converts the entry's mode to Go's fs.FileMode.
func (e *Entry) FileMode() fs.FileMode {
	m := fs.FileMode(e.Mode & 0o777)
	if e.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if e.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if e.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch e.Kind() {
	case KindDir:
		m |= fs.ModeDir
	case KindSymlink:
		m |= fs.ModeSymlink
	case KindChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case KindBlock:
		m |= fs.ModeDevice
	case KindFIFO:
		m |= fs.ModeNamedPipe
	case KindSocket:
		m |= fs.ModeSocket
	}
	return m
}

// ValidName reports why name cannot be a directory entry name, or nil.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrCorrupt)
	case name == "." || name == "..":
		return fmt.Errorf("%w: name %q", ErrCorrupt, name)
	case len(name) > MaxName:
		return fmt.Errorf("%w: name of %d bytes", ErrCorrupt, len(name))
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: name %q contains / or NUL", ErrCorrupt, name)
	}
	return nil
}

// Chunk is one entry of the chunk table: a chunk's ref.
type Chunk = chunk.Ref

// Signature is an ed25519 signature of the flist's digest.
type Signature struct {
	Key [32]byte
	Sig [64]byte
}

// Digest is the root digest of an flist: the BLAKE3 of its body.
type Digest = digest.ID
