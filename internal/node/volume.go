package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/spec"
)

// A volume is an ext4 file system in a sparse file of the spec's size,
// mounted through a loop device: its size is a hard limit, its blocks are
// allocated only when written, and deleting it is deleting one file.

func (a *Agent) volumeDir(dep uint64, name string) string {
	return filepath.Join(a.opts.Data, "volumes", volumeName(dep, name))
}

// ensureVolume creates (once) and mounts volume w; it returns its directory.
func (a *Agent) ensureVolume(ctx context.Context, dep uint64, w *spec.Workload, points map[string]bool) (string, error) {
	dir := a.volumeDir(dep, w.Name)
	img := dir + ".img"
	if points[dir] {
		return dir, nil
	}
	if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
		tmp := img + ".tmp"
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return "", err
		}
		err = f.Truncate(int64(w.Volume.Size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
			return "", fmt.Errorf("volume %s: %w", w.Name, err)
		}
		if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", tmp).CombinedOutput(); err != nil {
			os.Remove(tmp)
			return "", fmt.Errorf("volume %s: mkfs.ext4: %v: %s", w.Name, err, strings.TrimSpace(string(out)))
		}
		if err := os.Rename(tmp, img); err != nil {
			return "", err
		}
		a.event(dep, w.Name, "volume-created", fmt.Sprintf("%d bytes", w.Volume.Size))
	} else if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, "mount", "-o", "loop,nodev,nosuid", img, dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("volume %s: mount: %v: %s", w.Name, err, strings.TrimSpace(string(out)))
	}
	return dir, nil
}

// removeVolume unmounts volume name (volumeName) and deletes its data.
func (a *Agent) removeVolume(_ context.Context, name string) error {
	dir := filepath.Join(a.opts.Data, "volumes", name)
	if isMountPoint(dir) {
		if err := unix.Unmount(dir, 0); err != nil {
			return fmt.Errorf("volume %s: unmount: %w", name, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Remove(dir + ".img"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// volumes lists the volumes on disk (by volumeName).
func (a *Agent) volumes() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(a.opts.Data, "volumes"))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, e := range ents {
		n := strings.TrimSuffix(e.Name(), ".img")
		if strings.HasSuffix(n, ".tmp") || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	return out, nil
}
