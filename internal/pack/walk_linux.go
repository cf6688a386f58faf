package pack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/flist"
)

type inode struct{ dev, ino uint64 }

// walk reads the tree under root into flist nodes. It never follows
// symlinks, records hard links once, and reads every xattr.
func walk(root string) (*flist.Node, int, error) {
	seen := map[inode]*flist.Node{}
	count := 0
	var visit func(path, name string) (*flist.Node, error)
	visit = func(path, name string) (*flist.Node, error) {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return nil, fmt.Errorf("stat %s: %w", path, err)
		}
		count++
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
			if t, ok := seen[k]; ok {
				n.LinkTo = t
				return n, nil
			}
			seen[k] = n
		}
		xs, err := xattrs(path)
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
			for _, de := range ents {
				if err := flist.ValidName(de.Name()); err != nil {
					return nil, fmt.Errorf("%s: %w", filepath.Join(path, de.Name()), err)
				}
				c, err := visit(filepath.Join(path, de.Name()), de.Name())
				if err != nil {
					return nil, err
				}
				n.Children = append(n.Children, c)
			}
		}
		return n, nil
	}
	st, err := os.Lstat(root)
	if err != nil {
		return nil, 0, err
	}
	if !st.IsDir() {
		return nil, 0, fmt.Errorf("%s is not a directory", root)
	}
	n, err := visit(root, "")
	return n, count, err
}

func xattrs(path string) ([]flist.Xattr, error) {
	buf := make([]byte, 4096)
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
