// Package treediff compares two directory trees attribute by attribute:
// type, mode (with setuid, setgid, sticky), owner, mtime to the nanosecond,
// size, content, symlink target, device number, xattrs and hard-link
// structure. Tests use it to prove an unpack restores its source.
package treediff

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

type node struct {
	st     unix.Stat_t
	target string
	xattrs map[string]string
}

func scan(root string) (map[string]node, map[string][]string, error) {
	out := map[string]node{}
	byInode := map[[2]uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var n node
		if err := unix.Lstat(p, &n.st); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			n.target, _ = os.Readlink(p)
		}
		n.xattrs = map[string]string{}
		buf := make([]byte, 64<<10)
		if sz, err := unix.Llistxattr(p, buf); err == nil {
			for _, name := range bytes.Split(buf[:sz], []byte{0}) {
				if len(name) == 0 {
					continue
				}
				val := make([]byte, 64<<10)
				vn, err := unix.Lgetxattr(p, string(name), val)
				if err == nil {
					n.xattrs[string(name)] = string(val[:vn])
				}
			}
		}
		out[rel] = n
		if !d.IsDir() && n.st.Nlink > 1 {
			k := [2]uint64{n.st.Dev, n.st.Ino}
			byInode[k] = append(byInode[k], rel)
		}
		return nil
	})
	groups := map[string][]string{}
	for _, names := range byInode {
		sort.Strings(names)
		for _, n := range names {
			groups[n] = names
		}
	}
	return out, groups, err
}

// Compare returns the differences between trees a and b (empty when equal).
// The roots' own mtimes are compared too. Content is compared byte by byte.
func Compare(a, b string) ([]string, error) {
	na, la, err := scan(a)
	if err != nil {
		return nil, err
	}
	nb, lb, err := scan(b)
	if err != nil {
		return nil, err
	}
	var diffs []string
	add := func(format string, args ...any) {
		if len(diffs) < 50 {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	names := make([]string, 0, len(na))
	for n := range na {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		x := na[n]
		y, ok := nb[n]
		if !ok {
			add("%s: missing in %s", n, b)
			continue
		}
		if x.st.Mode != y.st.Mode {
			add("%s: mode %o vs %o", n, x.st.Mode, y.st.Mode)
		}
		if x.st.Uid != y.st.Uid || x.st.Gid != y.st.Gid {
			add("%s: owner %d:%d vs %d:%d", n, x.st.Uid, x.st.Gid, y.st.Uid, y.st.Gid)
		}
		if x.st.Mtim != y.st.Mtim {
			add("%s: mtime %v vs %v", n, x.st.Mtim, y.st.Mtim)
		}
		if x.target != y.target {
			add("%s: symlink %q vs %q", n, x.target, y.target)
		}
		if x.st.Mode&unix.S_IFMT == unix.S_IFCHR || x.st.Mode&unix.S_IFMT == unix.S_IFBLK {
			if x.st.Rdev != y.st.Rdev {
				add("%s: rdev %x vs %x", n, x.st.Rdev, y.st.Rdev)
			}
		}
		if fmt.Sprint(x.xattrs) != fmt.Sprint(y.xattrs) {
			add("%s: xattrs %v vs %v", n, x.xattrs, y.xattrs)
		}
		if fmt.Sprint(la[n]) != fmt.Sprint(lb[n]) {
			add("%s: hard links %v vs %v", n, la[n], lb[n])
		}
		if x.st.Mode&unix.S_IFMT == unix.S_IFREG {
			if x.st.Size != y.st.Size {
				add("%s: size %d vs %d", n, x.st.Size, y.st.Size)
			} else if !sameContent(filepath.Join(a, n), filepath.Join(b, n)) {
				add("%s: content differs", n)
			}
		}
	}
	for n := range nb {
		if _, ok := na[n]; !ok {
			add("%s: extra in %s", n, b)
		}
	}
	return diffs, nil
}

func sameContent(a, b string) bool {
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
