package httpstore

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// openBlob opens a blob file for sendfile. os.Open would first try to
// register the file with the network poller (five fcntl and epoll_ctl
// calls that fail for regular files); a blocking descriptor wrapped by
// os.NewFile skips that, and syscalls are most of a chunk GET's cost.
func openBlob(path string) (*os.File, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}
