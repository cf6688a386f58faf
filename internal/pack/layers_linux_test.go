package pack_test

import (
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func listXattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return nil, err
		}
		out[name] = string(val[:m])
	}
	return out, nil
}

func inodeOf(fi os.FileInfo) ([2]uint64, uint64) {
	st := fi.Sys().(*syscall.Stat_t)
	return [2]uint64{st.Dev, st.Ino}, st.Nlink
}
