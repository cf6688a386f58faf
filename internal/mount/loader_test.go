package mount_test

import (
	"debug/elf"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store/mem"
)

// loaderTree is a merged-/usr root holding this machine's /usr/bin/true,
// its libc and its loader, reached through symlinks as on Debian (/lib ->
// usr/lib, /lib64/ld-linux-x86-64.so.2 -> an absolute path), with a file
// of noise between the program and the libraries in the content stream.
func loaderTree(t *testing.T) string {
	t.Helper()
	libc, err1 := filepath.EvalSymlinks("/lib/x86_64-linux-gnu/libc.so.6")
	ld, err2 := filepath.EvalSymlinks("/lib64/ld-linux-x86-64.so.2")
	if err1 != nil || err2 != nil {
		t.Skip("needs an x86_64 Debian-style /lib/x86_64-linux-gnu/libc.so.6 and /lib64/ld-linux-x86-64.so.2")
	}
	src := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"bin", "etc", "lib64", "usr/lib/x86_64-linux-gnu"} {
		must(t, os.MkdirAll(filepath.Join(src, d), 0o755))
	}
	cp := func(from, to string) {
		b, err := os.ReadFile(from)
		must(t, err)
		must(t, os.WriteFile(filepath.Join(src, to), b, 0o755))
	}
	cp("/usr/bin/true", "bin/prog")
	cp(libc, "usr/lib/x86_64-linux-gnu/libc.so.6")
	cp(ld, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
	noise := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	must(t, os.WriteFile(filepath.Join(src, "etc/noise"), noise, 0o644))
	must(t, os.Symlink("usr/lib", filepath.Join(src, "lib")))
	must(t, os.Symlink("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", filepath.Join(src, "lib64/ld-linux-x86-64.so.2")))
	return src
}

// loaderChunks returns the store IDs of what the loader prefetch must
// fetch of the library at p (in src and in the image): the chunk of its
// first bytes and those of its writable segments, symbols and relocations.
func loaderChunks(t *testing.T, r *flist.Reader, src, p string) []digest.ID {
	t.Helper()
	_, e, err := r.Lookup(p)
	must(t, err)
	ef, err := elf.Open(filepath.Join(src, p))
	must(t, err)
	defer ef.Close()
	ids := []digest.ID{chunk.ID(r.Chunks()[r.ChunkAt(e.Offset)].Sum)}
	span := func(off, n uint64) {
		for k := r.ChunkAt(e.Offset + off); k <= r.ChunkAt(e.Offset+off+n-1); k++ {
			ids = append(ids, chunk.ID(r.Chunks()[k].Sum))
		}
	}
	for _, prog := range ef.Progs {
		if prog.Type == elf.PT_LOAD && prog.Flags&elf.PF_W != 0 {
			span(prog.Off, prog.Filesz)
		}
	}
	for _, name := range []string{".dynsym", ".rela.dyn"} {
		if s := ef.Section(name); s != nil {
			span(s.Offset, s.Size)
		}
	}
	return ids
}

// TestLoaderPrefetch reads the first bytes of a program, as the kernel
// does to exec it: its interpreter's first chunk and its library's first
// chunk and writable segment are fetched before anything reads them, and
// not with the loader prefetch off. The program then runs from the mount.
func TestLoaderPrefetch(t *testing.T) {
	needFUSE(t)
	src := loaderTree(t)
	base := mem.New()
	r := packTree(t, src, base)
	libc := loaderChunks(t, r, src, "usr/lib/x86_64-linux-gnu/libc.so.6")
	ld := loaderChunks(t, r, src, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")[:1]
	want := append(libc, ld...)
	for _, off := range []bool{false, true} {
		cs := &countingStore{Store: base, gets: map[digest.ID]int{}}
		// Only the loader prefetch: no whole-file prefetch, no read-ahead.
		m, mnt := mountImage(t, r, cs, mount.Options{FilePrefetch: -1, ReadAhead: -1, KernelReadAhead: -1, NoLoaderPrefetch: off})
		f, err := os.Open(filepath.Join(mnt, "bin/prog"))
		must(t, err)
		must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM))
		_, err = f.ReadAt(make([]byte, 64), 0)
		must(t, err)
		f.Close()
		fetched := func() (n int) {
			for _, id := range want {
				if cs.count(id) > 0 {
					n++
				}
			}
			return n
		}
		deadline := time.Now().Add(10 * time.Second)
		for !off && fetched() < len(want) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if off {
			time.Sleep(300 * time.Millisecond) // time enough for a prefetch to show
		}
		switch got := fetched(); {
		case !off && got != len(want):
			t.Errorf("loader prefetch: %d of the %d chunks of libc's header, writable segment, symbols and relocations and ld.so's header fetched", got, len(want))
		case off && got != 0:
			t.Errorf("loader prefetch off: %d of those %d chunks fetched anyway", got, len(want))
		}
		if !off {
			// The program runs from the mount (the loader finds everything).
			out, err := exec.Command("chroot", mnt, "/bin/prog").CombinedOutput()
			if err != nil {
				t.Errorf("chroot %s /bin/prog: %v %s", mnt, err, out)
			}
			t.Logf("%d chunks fetched for %d of the image's: %+v", cs.total.Load(), len(r.Chunks()), m.FS().Stats())
		}
	}
}
