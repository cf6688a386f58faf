package pack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/flist"
)

type inode struct{ dev, ino uint64 }

// walk reads the tree under root into flist nodes. It never follows
// symlinks, records hard links once, and reads every xattr. Directories
// are read in parallel (the walk is all system calls, and packing waits
// for it); the result does not depend on the order: which name of a hard
// link holds the content is settled by layout order in flist.Flatten.
func walk(root string) (*flist.Node, int, error) {
	st, err := os.Lstat(root)
	if err != nil {
		return nil, 0, err
	}
	if !st.IsDir() {
		return nil, 0, fmt.Errorf("%s is not a directory", root)
	}
	w := &walker{seen: map[inode]*flist.Node{}, slots: make(chan struct{}, walkers-1)}
	n, err := w.visit(root, "", make([]byte, xattrBuf))
	return n, int(w.count.Load()), err
}

// walkers bounds the goroutines reading directories at once.
const walkers = 4

// xattrBuf is the first size tried for xattr name lists and values.
const xattrBuf = 1024

type walker struct {
	count atomic.Int64
	slots chan struct{} // one per helper goroutine beyond the first
	mu    sync.Mutex
	seen  map[inode]*flist.Node
}

func (w *walker) visit(path, name string, buf []byte) (*flist.Node, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	w.count.Add(1)
	n := &flist.Node{Name: name, Source: path}
	n.Entry = flist.Entry{
		Mode:  st.Mode,
		UID:   st.Uid,
		GID:   st.Gid,
		Mtime: st.Mtim.Sec,
		Nsec:  uint32(st.Mtim.Nsec),
	}
	kind := flist.Kind(st.Mode & unix.S_IFMT)
	if kind != flist.KindDir && st.Nlink > 1 {
		k := inode{uint64(st.Dev), st.Ino}
		w.mu.Lock()
		t, ok := w.seen[k]
		if !ok {
			w.seen[k] = n
		}
		w.mu.Unlock()
		if ok {
			n.LinkTo = t
			return n, nil
		}
	}
	xs, err := xattrs(path, buf)
	if err != nil {
		return nil, err
	}
	n.Entry.Xattrs = xs
	switch kind {
	case flist.KindRegular:
		n.Entry.Size = uint64(st.Size)
	case flist.KindSymlink:
		t, err := os.Readlink(path)
		if err != nil {
			return nil, err
		}
		n.Entry.Target = t
	case flist.KindChar, flist.KindBlock:
		n.Entry.Rdev = st.Rdev
	case flist.KindDir:
		ents, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		n.Children = make([]*flist.Node, len(ents))
		errs := make([]error, len(ents))
		var wg sync.WaitGroup
		for i, de := range ents {
			if err := flist.ValidName(de.Name()); err != nil {
				errs[i] = fmt.Errorf("%s: %w", filepath.Join(path, de.Name()), err)
				break
			}
			child := filepath.Join(path, de.Name())
			if de.IsDir() {
				select {
				case w.slots <- struct{}{}:
					wg.Go(func() {
						defer func() { <-w.slots }()
						n.Children[i], errs[i] = w.visit(child, de.Name(), make([]byte, xattrBuf))
					})
					continue
				default: // every helper is busy: read it here
				}
			}
			if n.Children[i], errs[i] = w.visit(child, de.Name(), buf); errs[i] != nil {
				break
			}
		}
		wg.Wait()
		if err := firstErr(errs); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// firstErr returns the first non-nil error, in directory order.
func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// xattrs reads path's extended attributes, using buf (reused between
// calls) for the list of names.
func xattrs(path string, buf []byte) ([]flist.Xattr, error) {
	var sz int
	var err error
	for {
		sz, err = unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		break
	}
	if errors.Is(err, unix.ENOTSUP) || sz == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("xattrs of %s: %w", path, err)
	}
	var out []flist.Xattr
	for _, name := range splitNul(buf[:sz]) {
		val := make([]byte, 256)
		for {
			n, err := unix.Lgetxattr(path, name, val)
			if errors.Is(err, unix.ERANGE) {
				val = make([]byte, len(val)*4)
				continue
			}
			if errors.Is(err, unix.ENODATA) {
				val = nil
				break
			}
			if err != nil {
				return nil, fmt.Errorf("xattr %s of %s: %w", name, path, err)
			}
			val = val[:n]
			break
		}
		if val != nil {
			out = append(out, flist.Xattr{Name: name, Value: val})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func splitNul(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		if i > 0 {
			out = append(out, string(b[:i]))
		}
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}
