package mount

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

// fsType is the filesystem type in the mount table: "fuse.zos".
const fsType = "zos"

// ErrMounted reports a mount point where a live zos server already serves.
var ErrMounted = errors.New("already mounted")

// ErrNotMounted reports an unmount of a directory that is not a mount point.
var ErrNotMounted = errors.New("not mounted")

// Server serves one mounted image.
type Server struct {
	dir   string // the mount point
	lower string // where the FUSE filesystem is mounted: dir, or under Options.Upper
	rw    bool   // an overlay at dir over the FUSE mount at lower
	fs    *FS
	srv   *fuse.Server
	done  chan struct{}
}

// Mount serves r over st at dir and returns once the kernel has the mount.
// A stale mount left at dir by a server that died is detached first. The
// mount lives until Unmount or until it is unmounted from outside (see
// Wait); ctx only bounds setting it up and provides values to fetches.
//
// With Options.Upper the mount is writable: the image is mounted read-only
// at UPPER/lower and an overlayfs at dir stacks UPPER/upper on it (see the
// package documentation, "Writable layer").
func Mount(ctx context.Context, dir string, r *flist.Reader, st store.Store, opt Options) (*Server, error) {
	opt.setDefaults()
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	opt.Logger = opt.Logger.With("mnt", dir)
	if opt.Upper != "" {
		return mountRW(ctx, dir, r, st, opt)
	}
	if err := prepare(dir, opt.Logger); err != nil {
		return nil, err
	}
	return mountFUSE(ctx, dir, r, st, opt)
}

// mountFUSE mounts the read-only filesystem at dir, which prepare has
// checked.
func mountFUSE(ctx context.Context, dir string, r *flist.Reader, st store.Store, opt Options) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fs, err := New(ctx, r, st, opt)
	if err != nil {
		return nil, err
	}
	flags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	mopts := []string{"ro", "default_permissions"}
	if opt.Dev {
		flags &^= unix.MS_NODEV
		mopts = append(mopts, "dev")
	}
	if opt.Suid {
		flags &^= unix.MS_NOSUID
		mopts = append(mopts, "suid")
	}
	srv, err := fuse.NewServer(fs, dir, &fuse.MountOptions{
		FsName:           opt.Name,
		Name:             fsType,
		Options:          mopts,
		AllowOther:       !opt.Private,
		DirectMount:      true, // mount(2) as root; fusermount otherwise
		DirectMountFlags: flags,
		MaxWrite:         1 << 20, // reads of up to 1 MiB
		// Replies come from memory, never from a file descriptor: without
		// this, go-fuse tries a splice for every read reply first (four
		// system calls for nothing) and logs its failure for each 1 MiB one.
		DisableSplice:            true,
		MaxBackground:            64,
		EnableSymlinkCaching:     true,
		ExplicitDataCacheControl: true, // content never changes: never drop pages on attribute refresh
		EnableAcl:                true, // the kernel enforces POSIX ACLs the image carries
		Debug:                    opt.Debug,
		Logger:                   log.New(slogWriter{opt.Logger}, "", 0),
	})
	if err != nil {
		fs.Close()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	m := &Server{dir: dir, lower: dir, fs: fs, srv: srv, done: make(chan struct{})}
	go func() {
		srv.Serve()
		fs.Close()
		close(m.done)
	}()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	if opt.KernelReadAhead > 0 {
		if err := setReadAhead(dir, opt.KernelReadAhead); err != nil {
			opt.Logger.Warn("kernel read-ahead left at its default", "err", err)
		}
	}
	if after := opt.readAheadAfter; after > 0 && opt.KernelReadAhead > 0 {
		fs.prefetchEnded = func() {
			if err := setReadAhead(dir, after); err != nil {
				opt.Logger.Warn("kernel read-ahead left at one page", "err", err)
			} else {
				opt.Logger.Info("prefetch done; kernel read-ahead raised", "bytes", after)
			}
		}
	}
	fs.StartPrefetch()
	opt.Logger.Info("mounted", "flist", r.Digest().String(), "entries", r.Len(), "chunks", len(r.Chunks()),
		"prefetch", len(opt.Prefetch), "bundle", opt.Bundle != nil)
	return m, nil
}

// setReadAhead sets the kernel's read-ahead of the filesystem mounted at
// dir (the read_ahead_kb of its backing device info, one per FUSE mount).
// FUSE can only lower it at init; sysfs raises it.
func setReadAhead(dir string, n int64) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(p, []byte(strconv.FormatInt(max(n>>10, 4), 10)), 0)
}

// Dir returns the mount point.
func (m *Server) Dir() string { return m.dir }

// Lower returns where the read-only image is mounted: Dir, or for a
// writable mount the lower layer under Options.Upper.
func (m *Server) Lower() string { return m.lower }

// FS returns the filesystem being served.
func (m *Server) FS() *FS { return m.fs }

// Done is closed once the kernel has dropped the mount and serving stopped.
func (m *Server) Done() <-chan struct{} { return m.done }

// Wait blocks until the mount is gone.
func (m *Server) Wait() { <-m.done }

// Unmount unmounts (the overlay first, for a writable mount) and waits for
// serving to stop. It fails with EBUSY while files are open; DetachLazy is
// the way out then.
func (m *Server) Unmount() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if m.rw {
		if err := unix.Unmount(m.dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", m.dir, err)
		}
	}
	if err := unix.Unmount(m.lower, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", m.lower, err)
	}
	<-m.done
	return nil
}

// DetachLazy removes the mount (both layers of a writable one) from the
// namespace at once; the server goes on serving open files until the last
// one is closed, then Done.
func (m *Server) DetachLazy() error {
	if m.rw {
		if err := unix.Unmount(m.dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", m.dir, err)
		}
	}
	if err := unix.Unmount(m.lower, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", m.lower, err)
	}
	return nil
}

// Unmount unmounts the zos mount at dir, served by any process: for a
// writable mount, the overlay at dir, then the image under it. With lazy,
// a busy mount is detached at once and goes away when its files close.
func Unmount(dir string, lazy bool) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if e, ok := lastMount(dir); ok {
		if layer, _, ok := ourOverlay(e); ok {
			return unmountRW(dir, layer, lazy)
		}
	}
	return unmountFUSE(dir, lazy)
}

func unmountFUSE(dir string, lazy bool) error {
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	err := unix.Unmount(dir, flags)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("%s: %w", dir, ErrNotMounted)
	case errors.Is(err, unix.EPERM):
		// Not root: fusermount unmounts what this user mounted.
		args := []string{"-u", dir}
		if lazy {
			args = []string{"-u", "-z", dir}
		}
		for _, bin := range []string{"fusermount3", "fusermount"} {
			if out, ferr := runQuiet(bin, args...); ferr == nil {
				return nil
			} else if !errors.Is(ferr, errNoBinary) {
				return fmt.Errorf("unmount %s: %s", dir, out)
			}
		}
	}
	return fmt.Errorf("unmount %s: %w", dir, err)
}

// prepare makes dir ready to be mounted on: it refuses a live zos mount
// and detaches stale ones (a dead server leaves its mount answering
// ENOTCONN), however many are stacked there. Liveness is probed with
// statfs, which FUSE always asks the server: stat may be answered from
// attributes the kernel cached before the server died.
func prepare(dir string, logger *slog.Logger) error {
	for range 16 {
		var sfs unix.Statfs_t
		err := unix.Statfs(dir, &sfs)
		if errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED) {
			logger.Warn("detaching stale mount", "err", err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("detach stale mount %s: %w", dir, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("mount point: %w", err)
		}
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return fmt.Errorf("mount point: %w", err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("mount point %s: %w", dir, syscall.ENOTDIR)
		}
		if typ, ok := topMount(dir); ok && typ == "fuse."+fsType {
			return fmt.Errorf("mount point %s: %w (unmount it first: zos flist umount %s)", dir, ErrMounted, dir)
		}
		return nil
	}
	return fmt.Errorf("mount point %s: still stale after detaching 16 mounts", dir)
}

// topMount returns the filesystem type of the last mount on dir in this
// process's mount table.
func topMount(dir string) (string, bool) {
	e, ok := lastMount(dir)
	return e.fstype, ok
}

// mountEntry is a line of the mount table.
type mountEntry struct {
	fstype, source, superOpts string
}

// opt returns the value of a superblock option ("upperdir=...").
func (e mountEntry) opt(name string) (string, bool) {
	for _, o := range strings.Split(e.superOpts, ",") {
		if v, ok := strings.CutPrefix(o, name+"="); ok {
			return unescapeMount(v), true
		}
	}
	return "", false
}

// lastMount returns the last mount on dir in this thread's mount table:
// the one a path lookup sees.
func lastMount(dir string) (mountEntry, bool) {
	ms, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return i.Mountpoint != dir, false
	})
	if err != nil || len(ms) == 0 {
		return mountEntry{}, false
	}
	last := ms[len(ms)-1]
	return mountEntry{fstype: last.FSType, source: last.Source, superOpts: last.VFSOptions}, true
}

// Points lists the mount points of the calling thread's mount namespace.
//
// It reads /proc/thread-self/mountinfo (moby/sys/mountinfo), never
// /proc/self/mountinfo: /proc/self is the thread-group leader, which a
// library may have moved into another namespace. runc's libcontainer, for
// one, joins a container's mount namespace on a locked thread that it
// lets die; when that thread is the main one, Go parks it instead, and
// /proc/self/mountinfo shows the container's mounts from then on.
func Points() (map[string]bool, error) {
	ms, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, fmt.Errorf("mount table: %w", err)
	}
	out := make(map[string]bool, len(ms))
	for _, m := range ms {
		out[m.Mountpoint] = true
	}
	return out, nil
}

// unescapeMount undoes the octal escapes (\040 for space...) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var errNoBinary = errors.New("not installed")

func runQuiet(bin string, args ...string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", errNoBinary
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// slogWriter carries go-fuse's log lines (debug traces, handler panics)
// into the mount's logger.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Info(strings.TrimRight(string(p), "\n"), "source", "go-fuse")
	return len(p), nil
}
