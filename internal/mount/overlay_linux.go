package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

// A layer directory (Options.Upper) holds a writable mount's changes:
//
//	zos-layer   "zos layer v1\nflist DIGEST\n": the image it belongs to
//	upper/      the overlay's upper directory: changed files, whiteouts
//	work/       the overlay's work directory (its index too)
//	lower/      where the read-only image is mounted while in use
//	lower.mnt   the unique mount ID of the image mount the overlay was
//	            stacked on (decimal): an overlay whose image server died
//	            and was mounted again at the same path is told from a live
//	            one by it, as the path alone no longer tells them apart
const (
	layerMark  = "zos-layer"
	layerUpper = "upper"
	layerWork  = "work"
	layerLower = "lower"
	layerHead  = "zos layer v1\n"
	layerMnt   = "lower.mnt"
)

// ErrLayer reports a layer directory that cannot be used for this image.
var ErrLayer = errors.New("layer directory")

// overlayOptions are the overlayfs features a writable mount uses.
//
// redirect_dir=on lets a directory of the image be renamed (the upper copy
// records where it came from) instead of failing with EXDEV. index=on
// keeps hard links of the image linked when one of their names is copied
// up (without it a write through one name is not seen through the others);
// it needs file handles of the lower filesystem, which FUSE encodes from
// node IDs, and ours are entry indexes, stable across remounts of the
// image. metacopy=on copies up only the metadata of a file whose
// attributes change (chmod, chown, setxattr, utimes): without it a chown
// of an image file fetches all of its chunks to copy its data.
// These three make the upper directory depend on the exact lower tree,
// which is why a layer is bound to one flist digest (zos-layer).
var overlayOptions = [][2]string{{"redirect_dir", "on"}, {"index", "on"}, {"metacopy", "on"}}

// openLayer prepares dir to hold the changes of r: an empty or missing
// directory becomes a layer of r; a layer of r is reused; anything else is
// refused. It returns the paths of the lower mount point, upper and work.
func openLayer(dir string, r *flist.Reader) (lower, upper, work string, err error) {
	lower, upper, work = filepath.Join(dir, layerLower), filepath.Join(dir, layerUpper), filepath.Join(dir, layerWork)
	want := layerHead + "flist " + r.Digest().String() + "\n"
	b, err := os.ReadFile(filepath.Join(dir, layerMark))
	switch {
	case err == nil:
		if string(b) != want {
			got := strings.TrimSpace(string(b))
			if rest, ok := strings.CutPrefix(string(b), layerHead+"flist "); ok {
				if id, perr := digest.Parse(strings.TrimSpace(rest)); perr == nil {
					got = "flist " + id.Short()
				}
			}
			return "", "", "", fmt.Errorf("%w %s holds changes to %s, not to flist %s (mount that image, or use another directory)",
				ErrLayer, dir, got, r.Digest().Short())
		}
		for _, d := range []string{lower, upper, work} {
			if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
			}
		}
		return lower, upper, work, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
	}
	// A new layer: the directory must hold nothing we could mistake for one.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
	}
	if len(ents) > 0 {
		if !unfinishedLayer(dir, ents) {
			return "", "", "", fmt.Errorf("%w %s is not empty and not a zos layer (no %s)", ErrLayer, dir, layerMark)
		}
		// A crash while making the layer left its empty skeleton: no
		// overlay was ever mounted on it (that needs the mark). Start over.
		for _, e := range ents {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
			}
		}
	}
	root, err := r.Entry(0)
	if err != nil {
		return "", "", "", err
	}
	for _, d := range []string{lower, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
		}
	}
	// The overlay's root directory takes its attributes from the upper
	// one: make them the image root's.
	if err := os.Lchown(upper, int(root.UID), int(root.GID)); err != nil {
		return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
	}
	if err := os.Chmod(upper, os.FileMode(root.Mode&0o777)|modeBits(root.Mode)); err != nil {
		return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
	}
	ts := []unix.Timespec{{Sec: root.Mtime, Nsec: int64(root.Nsec)}, {Sec: root.Mtime, Nsec: int64(root.Nsec)}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, upper, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
	}
	// The mark last: a directory without it is not yet a layer.
	if err := writeAtomic(filepath.Join(dir, layerMark), []byte(want)); err != nil {
		return "", "", "", fmt.Errorf("%w: %w", ErrLayer, err)
	}
	return lower, upper, work, nil
}

// unfinishedLayer reports a directory holding only what openLayer makes
// before the mark: empty lower, upper and work directories, and the mark's
// temporary file.
func unfinishedLayer(dir string, ents []os.DirEntry) bool {
	for _, e := range ents {
		switch name := e.Name(); {
		case name == layerMark+".tmp" && e.Type().IsRegular():
		case (name == layerLower || name == layerUpper || name == layerWork) && e.IsDir():
			if sub, err := os.ReadDir(filepath.Join(dir, name)); err != nil || len(sub) > 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// modeBits turns the setuid, setgid and sticky bits of a Unix mode into
// os.FileMode's.
func modeBits(m uint32) os.FileMode {
	var f os.FileMode
	if m&unix.S_ISUID != 0 {
		f |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		f |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		f |= os.ModeSticky
	}
	return f
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// OverlayOptions configure Overlay.
type OverlayOptions struct {
	Name      string // the overlay's source in the mount table
	Dev, Suid bool   // honour device nodes; setuid/setgid bits and file capabilities
	Logger    *slog.Logger
}

// Overlay mounts a writable overlay at dir over image r, which a zos
// server already serves read-only at lower (Mount without Upper, in any
// process), keeping the overlay's changes in the layer directory layer,
// bound to r as with Options.Upper. Many overlays may share one image
// mount: a machine running n containers of an image serves it once.
// Unmount(dir) takes the overlay off and leaves the image mounted. The
// overlay outlives the caller; it breaks when the image's server dies,
// and must then be mounted again over a new image mount.
func Overlay(dir, lower, layer string, r *flist.Reader, opt OverlayOptions) error {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Name == "" {
		opt.Name = "zos" // an empty source would shift mountinfo's fields
	}
	var err error
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if layer, err = filepath.Abs(layer); err != nil {
		return err
	}
	if lower, err = filepath.Abs(lower); err != nil {
		return err
	}
	if layer == dir || strings.HasPrefix(layer, dir+"/") || strings.HasPrefix(dir, layer+"/") {
		return fmt.Errorf("%w %s: must be outside the mount point %s, and the mount point outside it", ErrLayer, layer, dir)
	}
	if !lowerLive(lower) {
		return fmt.Errorf("image at %s: %w (mount it first: zos flist mount)", lower, ErrNotMounted)
	}
	_, upper, work, err := openLayer(layer, r)
	if err != nil {
		return err
	}
	if err := prepareRW(dir, opt.Logger); err != nil {
		return err
	}
	return stackOverlay(dir, lower, layer, upper, work, opt.Name, opt.Dev, opt.Suid)
}

// stackOverlay mounts the overlay and records which image mount it is
// stacked on (lower.mnt).
func stackOverlay(dir, lower, layer, upper, work, name string, dev, suid bool) error {
	id, err := MountID(lower)
	if err != nil {
		return fmt.Errorf("image at %s: %w", lower, err)
	}
	if err := writeAtomic(filepath.Join(layer, layerMnt), []byte(strconv.FormatUint(id, 10)+"\n")); err != nil {
		return fmt.Errorf("%w: %w", ErrLayer, err)
	}
	return mountOverlay(dir, lower, upper, work, name, dev, suid)
}

// MountID returns the unique ID of the mount at dir (statx
// STATX_MNT_ID_UNIQUE: never reused while the machine runs, unlike the
// IDs of mountinfo). A FUSE mount whose server died answers ENOTCONN.
func MountID(dir string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_NO_AUTOMOUNT, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return 0, fmt.Errorf("%s: this kernel has no unique mount IDs (Linux 6.8 or later needed)", dir)
	}
	return stx.Mnt_id, nil
}

// StackedOn returns the unique mount ID (MountID) of the image mount the
// overlay of layer was last stacked on; false if none was recorded.
func StackedOn(layer string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(layer, layerMnt))
	if err != nil {
		return 0, false
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return id, err == nil
}

// mountRW mounts r read-only at the layer's lower directory and an
// overlay at dir.
func mountRW(ctx context.Context, dir string, r *flist.Reader, st store.Store, opt Options) (*Server, error) {
	layer, err := filepath.Abs(opt.Upper)
	if err != nil {
		return nil, err
	}
	if layer == dir || strings.HasPrefix(layer, dir+"/") || strings.HasPrefix(dir, layer+"/") {
		return nil, fmt.Errorf("%w %s: must be outside the mount point %s, and the mount point outside it", ErrLayer, layer, dir)
	}
	lower, upper, work, err := openLayer(layer, r)
	if err != nil {
		return nil, err
	}
	if err := prepareRW(dir, opt.Logger); err != nil {
		return nil, err
	}
	lopt := opt
	lopt.Logger = opt.Logger.With("lower", lower)
	if err := prepare(lower, lopt.Logger); err != nil {
		return nil, err
	}
	m, err := mountFUSE(ctx, lower, r, st, lopt)
	if err != nil {
		return nil, err
	}
	if err := stackOverlay(dir, lower, layer, upper, work, opt.Name, opt.Dev, opt.Suid); err != nil {
		if uerr := m.Unmount(); uerr != nil {
			m.DetachLazy()
		}
		return nil, err
	}
	m.dir, m.rw = dir, true
	opt.Logger.Info("mounted writable", "layer", layer)
	return m, nil
}

// prepareRW makes dir ready for a writable mount: it refuses a live zos
// overlay there and detaches a stale one, whose image server died (its
// lower directory answers ENOTCONN, or is no longer mounted); prepare
// then deals with stale FUSE mounts.
func prepareRW(dir string, logger *slog.Logger) error {
	for range 16 {
		e, ok := lastMount(dir)
		if !ok {
			break
		}
		layer, lower, ours := ourOverlay(e)
		if !ours {
			break
		}
		if lowerLive(lower) && stackedOnLive(layer, lower) {
			return fmt.Errorf("mount point %s: %w (unmount it first: zos flist umount %s)", dir, ErrMounted, dir)
		}
		logger.Warn("detaching stale overlay", "layer", layer)
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach stale overlay %s: %w", dir, err)
		}
	}
	return prepare(dir, logger)
}

// stackedOnLive reports whether the overlay of layer is stacked on the
// image mount now at lower, as far as lower.mnt tells (a layer from before
// it was recorded is taken to be).
func stackedOnLive(layer, lower string) bool {
	want, ok := StackedOn(layer)
	if !ok {
		return true
	}
	id, err := MountID(lower)
	return err == nil && id == want
}

// lowerLive reports a live zos server at a layer's lower directory.
func lowerLive(lower string) bool {
	var sfs unix.Statfs_t
	if err := unix.Statfs(lower, &sfs); err != nil {
		return false // ENOTCONN: its server died
	}
	typ, ok := topMount(lower)
	return ok && typ == "fuse."+fsType
}

// ourOverlay reports an overlay mounted by zos, its layer directory and
// the image under it: an overlay whose upper directory is the upper of a
// zos layer.
func ourOverlay(e mountEntry) (layer, lower string, ok bool) {
	if e.fstype != "overlay" {
		return "", "", false
	}
	upper, ok := e.opt("upperdir")
	if !ok || filepath.Base(upper) != layerUpper {
		return "", "", false
	}
	layer = filepath.Dir(upper)
	if _, err := os.Stat(filepath.Join(layer, layerMark)); err != nil {
		return "", "", false
	}
	lower = filepath.Join(layer, layerLower)
	if l, ok := e.opt("lowerdir"); ok {
		lower = strings.NewReplacer(`\\`, `\`, `\:`, `:`, `\,`, `,`).Replace(l)
	}
	return layer, lower, true
}

// mountOverlay mounts an overlay at dir with the new mount API, whose
// errors come with the filesystem's own explanation (not only in dmesg).
func mountOverlay(dir, lower, upper, work, source string, dev, suid bool) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("overlayfs: %w", err)
	}
	defer unix.Close(fd)
	params := append([][2]string{
		{"source", source},
		{"lowerdir", escapeLowerdir(lower)},
		{"upperdir", upper},
		{"workdir", work},
	}, overlayOptions...)
	for _, p := range params {
		if err := unix.FsconfigSetString(fd, p[0], p[1]); err != nil {
			return fmt.Errorf("overlayfs %s=%s: %w%s", p[0], p[1], err, fsLog(fd))
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("overlayfs at %s: %w%s", dir, err, fsLog(fd))
	}
	attr := 0
	if !dev {
		attr |= unix.MOUNT_ATTR_NODEV
	}
	if !suid {
		attr |= unix.MOUNT_ATTR_NOSUID
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return fmt.Errorf("overlayfs at %s: %w%s", dir, err, fsLog(fd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("overlayfs at %s: %w", dir, err)
	}
	return nil
}

// escapeLowerdir escapes the separators of overlayfs's lowerdir list.
func escapeLowerdir(p string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`).Replace(p)
}

// fsLog drains the messages a filesystem context has for us.
func fsLog(fd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 32 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (" + strings.Join(msgs, "; ") + ")"
}

// unmountRW unmounts the overlay at dir, then the image under it.
func unmountRW(dir, layer string, lazy bool) error {
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	if err := unix.Unmount(dir, flags); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	lower := filepath.Join(layer, layerLower)
	if typ, ok := topMount(lower); !ok || typ != "fuse."+fsType {
		return nil // its server is gone already
	}
	if err := unmountFUSE(lower, lazy); err != nil && !errors.Is(err, ErrNotMounted) {
		return err
	}
	return nil
}
