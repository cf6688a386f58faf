// Package dir is a chunk store in a local directory.
//
// # Layout
//
// A blob with ID h (64 hex digits) is the file ROOT/h[0:2]/h. The same
// layout served by any static web server is a read-only http store
// (docs/STORE-HTTP.md).
//
// # Atomicity and durability
//
// Put writes a temporary file in the shard directory and renames it into
// place unless the blob is there already, so a reader sees either no blob
// or the whole blob, and of racing writers of one ID the first one wins.
// Blobs are not synced one by one (that would cost a disk flush per
// chunk); Sync, which Close calls, flushes the whole filesystem once.
// Every 32 MB of blobs put, a flush starts in the background, so that Sync
// does not meet all of them at the end. A blob torn by a crash before Sync
// fails its integrity check on Get, is removed, and is written again by the
// next Put of the same chunk.
package dir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// Store is a directory of blobs.
type Store struct {
	root string

	dirty    atomic.Int64 // blob bytes put since the last write-back started
	flushing atomic.Bool  // a write-back is running
}

var _ store.Store = (*Store)(nil)

// New opens (creating if needed) a dir store at root.
func New(root string) (*Store, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("dir store: %w", err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	return &Store{root: abs}, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

// Path returns the file that holds id.
func (s *Store) Path(id digest.ID) string {
	h := id.String()
	return filepath.Join(s.root, h[:2], h)
}

func (s *Store) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.Path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s in %s: %w", id.Short(), s, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("dir store: %w", err)
	}
	if err := store.Verify(s, id, b); err != nil {
		if errors.Is(err, chunk.ErrCorrupt) {
			// A torn or rotten blob would otherwise block every future Put
			// of this chunk (Put trusts present blobs); drop it.
			os.Remove(s.Path(id))
		}
		return nil, err
	}
	return b, nil
}

func (s *Store) Has(ctx context.Context, id digest.ID) (bool, error) {
	_, err := os.Lstat(s.Path(id))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("dir store: %w", err)
}

func (s *Store) Put(ctx context.Context, id digest.ID, blob []byte) error {
	// No check for a present blob first: callers ask Has (or Missing)
	// before they seal a chunk, and publish keeps the first copy.
	return s.write(ctx, id, blob, publish)
}

// Replace stores blob under id in place of the blob stored there, if any:
// the new file is renamed over the old, so a reader opens one or the
// other, whole (store.Replacer).
func (s *Store) Replace(ctx context.Context, id digest.ID, blob []byte) error {
	return s.write(ctx, id, blob, os.Rename)
}

// write writes blob to a temporary file beside id's path and moves it
// there with place.
func (s *Store) write(ctx context.Context, id digest.ID, blob []byte, place func(tmp, p string) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := s.Path(id)
	dir := filepath.Dir(p)
	// A name no other writer uses: this process's ID and a counter (a
	// leftover from a crashed writer is skipped by List and by O_EXCL).
	tmp := filepath.Join(dir, fmt.Sprintf(".tmp-%d-%d", os.Getpid(), tmpSeq.Add(1)))
	fd, err := createExcl(tmp)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			fd, err = createExcl(tmp)
		}
	}
	if err != nil {
		return fmt.Errorf("dir store: create %s: %w", tmp, err)
	}
	err = writeAll(fd, blob)
	if err == nil && umaskHidesBlobs {
		// Blobs are public (a web server may serve the store): readable by all.
		err = unix.Fchmod(fd, 0o644)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = place(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dir store: put %s: %w", id.Short(), err)
	}
	s.writeBack(len(blob))
	return nil
}

// writeBackEvery is how many blob bytes Put lets pile up before it starts
// writing them back in the background, one flush at a time: a writer of
// many blobs then finds little left to flush in Sync (packing big, 319 MB
// of blobs: the final Sync took 0.25-0.3 s, 0.05 s with this).
const writeBackEvery = 32 << 20

func (s *Store) writeBack(n int) {
	if s.dirty.Add(int64(n)) < writeBackEvery || !s.flushing.CompareAndSwap(false, true) {
		return
	}
	s.dirty.Store(0)
	go func() {
		defer s.flushing.Store(false)
		s.Sync()
	}()
}

var tmpSeq atomic.Uint64

// publish renames tmp to p unless p exists, in one step: the first writer
// of a blob wins, a later writer's copy is dropped.
func publish(tmp, p string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, p, unix.RENAME_NOREPLACE)
	switch err {
	case nil:
		return nil
	case unix.EEXIST:
		os.Remove(tmp) // a leftover is skipped by List
		return nil
	case unix.EINVAL, unix.ENOSYS: // a file system without RENAME_NOREPLACE
		if _, err := os.Lstat(p); err == nil {
			os.Remove(tmp)
			return nil
		}
		return os.Rename(tmp, p)
	}
	return err
}

// createExcl creates a new file for writing. It skips package os, which
// would try to add a regular file to the network poller: five more system
// calls per blob.
func createExcl(name string) (int, error) {
	for {
		fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// writeAll writes b to fd.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// umaskHidesBlobs reports whether the process umask would make new blobs
// unreadable to others (then Put fixes the mode; the usual 022 needs no
// extra system call).
var umaskHidesBlobs = func() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return err != nil || m&0o044 != 0
		}
	}
	return true
}()

func (s *Store) Delete(ctx context.Context, id digest.ID) error {
	err := os.Remove(s.Path(id))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dir store: %w", err)
	}
	return nil
}

func (s *Store) List(ctx context.Context, fn func(digest.ID) error) error {
	shards, err := os.ReadDir(s.root)
	if err != nil {
		return fmt.Errorf("dir store: %w", err)
	}
	for _, sh := range shards {
		if !sh.IsDir() || len(sh.Name()) != 2 {
			continue
		}
		names, err := os.ReadDir(filepath.Join(s.root, sh.Name()))
		if err != nil {
			return fmt.Errorf("dir store: %w", err)
		}
		for _, n := range names {
			if strings.HasPrefix(n.Name(), ".") {
				continue
			}
			id, err := digest.Parse(n.Name())
			if err != nil || !strings.HasPrefix(n.Name(), sh.Name()) {
				continue // not ours
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// Sync flushes every blob written so far to stable storage.
func (s *Store) Sync() error {
	f, err := os.Open(s.root)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

func (s *Store) String() string { return "dir://" + s.root }

// Close syncs the store.
func (s *Store) Close() error { return s.Sync() }
