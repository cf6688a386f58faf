package lru

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// Whole files.
//
// Beside sealed blobs, the cache keeps whole plaintext files: the content
// of an image's regular file, assembled from its verified chunks, so that
// a mount can hand the file to the kernel (FUSE passthrough) and serve it
// at the native speed of the disk. A file lives at ROOT/h[0:2]/h.file for
// its ID h (see package mount: a digest of its chunk list), counts in the
// same budget and is evicted by the same LRU as blobs. It is written to a
// temporary file, synced, made read-only and linked into place whole, so a
// file under its name is always complete. Nothing checks it when it is
// read: it is plaintext, kept only on this machine, in a directory only
// root may write (docs/CACHE.md, "Whole files").

// fileSuffix ends the name of a whole file.
const fileSuffix = ".file"

// FilePath returns where the whole file id lives.
func (s *Store) FilePath(id digest.ID) string {
	h := id.String()
	return filepath.Join(s.root, h[:2], h+fileSuffix)
}

// fileName parses a whole file's name in shard.
func fileName(shard *os.File, name string) (digest.ID, bool) {
	h, ok := strings.CutSuffix(name, fileSuffix)
	if !ok {
		return digest.ID{}, false
	}
	return blobID(shard, h)
}

// OpenFile opens the whole file id for reading. The open file pins it: no
// process evicts it until the file is closed. It fails with an error
// wrapping store.ErrNotFound if the cache does not hold it.
func (s *Store) OpenFile(id digest.ID) (*os.File, error) {
	p := s.FilePath(id)
	for range 2 {
		f, err := openFile(p, unix.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("chunk cache: %w", err)
		}
		var st unix.Stat_t
		if flock(f, unix.LOCK_SH) == nil && unix.Fstat(int(f.Fd()), &st) == nil && st.Nlink > 0 {
			s.touch(p, st.Mtim)
			s.hits.Add(1)
			return f, nil
		}
		f.Close() // evicted while we waited for the lock
	}
	s.misses.Add(1)
	return nil, fmt.Errorf("file %s in %s: %w", id.Short(), s, store.ErrNotFound)
}

// PutFile caches a whole file of size bytes under id, written by fill,
// unless the cache holds it already. A file larger than a quarter of the
// budget is not cached (it would push out too much else): the error wraps
// ErrFull, as does a file that does not fit after eviction.
func (s *Store) PutFile(ctx context.Context, id digest.ID, size int64, fill func(io.Writer) error) error {
	p := s.FilePath(id)
	var pst unix.Stat_t
	if err := unix.Lstat(p, &pst); err == nil {
		s.touch(p, pst.Mtim)
		return nil
	}
	st, err := s.Stats()
	if err != nil {
		return err
	}
	if size > st.Budget/4 {
		return fmt.Errorf("chunk cache: file %s (%d bytes, budget %d): %w", id.Short(), size, st.Budget, ErrFull)
	}
	tmp, f, err := s.writeTempFunc(p, func(f *os.File) error {
		if err := fill(f); err != nil {
			return err
		}
		if n, err := f.Seek(0, io.SeekCurrent); err != nil || n != size {
			return fmt.Errorf("wrote %d bytes of %d (%v)", n, size, err)
		}
		if err := f.Chmod(0o444); err != nil {
			return err
		}
		// Nothing verifies a whole file when it is read: it must be on
		// disk before its name is.
		return f.Sync()
	})
	if err != nil {
		return fmt.Errorf("chunk cache: file %s: %w", id.Short(), err)
	}
	defer os.Remove(tmp)
	defer f.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.place(ctx, tmp, p, size); err != nil {
		return fmt.Errorf("chunk cache: file %s (%d bytes): %w", id.Short(), size, err)
	}
	return nil
}
