package runtime

import (
	"fmt"
	"io"
	"os"

	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"
)

// execUser is the resolved identity and environment of a container's
// command.
type execUser struct {
	uid, gid int
	groups   []int // supplementary
	env      []string
	cwd      string
}

// resolveUser resolves s.User against the rootfs' /etc/passwd and
// /etc/group. The files belong to the image, so they are opened with the
// rootfs as the root of every lookup: a symbolic link in the image cannot
// make the agent read a host file.
func resolveUser(s *Spec) (*execUser, error) {
	passwd, err := openInRoot(s.Rootfs, "/etc/passwd")
	if err != nil {
		return nil, err
	}
	if passwd != nil {
		defer passwd.Close()
	}
	group, err := openInRoot(s.Rootfs, "/etc/group")
	if err != nil {
		return nil, err
	}
	if group != nil {
		defer group.Close()
	}
	// GetExecUser takes untyped nil readers for absent files.
	var pr, gr io.Reader
	if passwd != nil {
		pr = passwd
	}
	if group != nil {
		gr = group
	}
	eu, err := user.GetExecUser(s.User, &user.ExecUser{Home: "/"}, pr, gr)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", s.User, err)
	}
	cwd := s.Cwd
	if cwd == "" {
		cwd = "/"
	}
	return &execUser{uid: eu.Uid, gid: eu.Gid, groups: eu.Sgids, env: withDefaults(s.Env, eu.Home), cwd: cwd}, nil
}

// openInRoot opens name inside root, resolving every symbolic link as if
// root were /; a missing file gives (nil, nil).
func openInRoot(root, name string) (*os.File, error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch {
	case err == unix.ENOENT:
		return nil, nil
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: root + name, Err: err}
	}
	f := os.NewFile(uintptr(fd), root+name)
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", root+name)
	}
	return f, nil
}
