// Package object is the hub's small named-object store: flists, users,
// tags, nonces, anything that is not a chunk. The chunk-store contract
// (package store) is keyed by content ID and cannot create-if-absent or list
// by prefix; the hub needs both, so several hubs over one bucket agree on
// who registered a name or used a nonce first.
//
// # Names
//
// A name is a slash-separated path of segments, each 1..255 bytes of
// [A-Za-z0-9._:@=+-], not "." or "..", and not starting with ".". Objects
// are small (Get reads them whole into memory), except those the hub
// streams (start bundles), which Open reads.
//
// # Consistency
//
// Implementations give read-after-write and list-after-write consistency:
// a Get, Stat or List that starts after a write returned sees it. The local
// directory does trivially; S3 has since December 2020 and MinIO always has.
// The hub's garbage-collection argument (docs/HUB.md) rests on this.
package object

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) for a name that holds no object.
var ErrNotFound = errors.New("object not found")

// ErrExist is returned (wrapped) by Create for a name that holds one.
var ErrExist = errors.New("object exists")

// Info describes a stored object.
type Info struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Store is a flat space of named objects. Safe for concurrent use, also by
// several processes or machines sharing the backend.
type Store interface {
	// Get returns the object's bytes, or an error wrapping ErrNotFound.
	Get(ctx context.Context, name string) ([]byte, error)
	// Open returns a reader of the object's bytes and its description, or
	// an error wrapping ErrNotFound; the caller closes the reader. It is
	// for objects too large to hold whole (a start bundle served to many
	// nodes at once).
	Open(ctx context.Context, name string) (io.ReadCloser, Info, error)
	// Stat describes the object, or returns an error wrapping ErrNotFound.
	Stat(ctx context.Context, name string) (Info, error)
	// Put creates or replaces the object atomically: a reader sees the old
	// bytes or the new ones, never a mix.
	Put(ctx context.Context, name string, data []byte) error
	// Create stores the object only if the name holds none, atomically: of
	// several concurrent Creates of one name (from any process sharing the
	// backend) exactly one succeeds; the others get an error wrapping
	// ErrExist.
	Create(ctx context.Context, name string, data []byte) error
	// Delete removes the object; deleting a missing name succeeds.
	Delete(ctx context.Context, name string) error
	// List calls fn for every object whose name starts with prefix, in no
	// particular order, stopping at the first error fn returns.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// String names the store without secrets.
	String() string
	Close() error
}

// CheckName reports whether name is a valid object name.
func CheckName(name string) error {
	if name == "" {
		return errors.New("empty object name")
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || len(seg) > 255 || seg[0] == '.' {
			return fmt.Errorf("object name %q: bad segment %q", name, seg)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._:@=+-", c) >= 0) {
				return fmt.Errorf("object name %q: bad byte %q", name, c)
			}
		}
	}
	return nil
}
