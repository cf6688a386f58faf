package mount

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"path"
	"strings"

	"github.com/zosgrid/zos/internal/flist"
)

// Loader prefetch: what the dynamic loader will read of an executable
// before its first instruction runs, fetched before it asks.
//
// A program starting from a cold mount spends its first second or so in
// ld.so, and that time is a chain of round trips: it reads a library's
// header, then its writable segment (.dynamic, the relocated data), then
// its relocation and symbol tables, and only then opens the next library
// the first one needs, which starts over. Measured on big at 100 Mbit/s
// and 20 ms (bench/mount.sh), `node -e 1` waited 1.0 s for this, two
// round trips per library for 14 libraries, one after the other.
//
// So the first read of a file that starts with an ELF header starts, in
// the background: fetches of the segments the loader writes to and of the
// span of its dynamic tables (hash, symbols, strings, relocations), then
// the same for every library its DT_NEEDED entries name, found in the
// image by the loader's rules (DT_RPATH, DT_RUNPATH with $ORIGIN, then the
// multiarch and default directories), and for its interpreter, each file
// once per mount. All of it is work the loader does next; none of it
// waits for a reader, and a read that needs one of these chunks joins its
// fetch.

// Bounds on what an image's ELF headers may make the prefetch do: they
// are input, and a malformed or hostile file must not make it fetch
// without bound.
const (
	maxPhnum       = 256      // program headers read per file
	maxDynamic     = 64 << 10 // bytes of PT_DYNAMIC read
	maxNeeded      = 128      // DT_NEEDED entries followed per file
	maxLoaderSpan  = 16 << 20 // bytes of one range (a segment, the table span) prefetched
	maxNameLen     = 255      // a library's name
	maxSymlinkHops = 40       // as the kernel's ELOOP
)

// loadSeg is a PT_LOAD program header.
type loadSeg struct {
	off, vaddr, filesz uint64
	write              bool
}

// loaderStart starts the loader prefetch of file ino (content entry e,
// path p when known: it is $ORIGIN) if the file has not been seen yet.
// head is the start of the file when the caller already has it.
func (f *FS) loaderStart(ino uint64, e *flist.Entry, p string, head []byte) {
	if f.opt.NoLoaderPrefetch || e.Size < 64 {
		return
	}
	if len(head) >= 4 && string(head[:4]) != elf.ELFMAG {
		return
	}
	f.mu.Lock()
	seen := f.loaderSeen[ino]
	f.loaderSeen[ino] = true
	f.mu.Unlock()
	if seen {
		return
	}
	go func() {
		if err := f.loaderPrefetch(ino, e, p); err != nil && !errors.Is(err, errNotELF) {
			f.log.Debug("loader prefetch stopped", "inode", ino, "path", p, "err", err)
		}
	}()
}

var errNotELF = errors.New("not an ELF executable or library this prefetch reads")

// elfHeaders is what the loader reads first of an ELF file.
type elfHeaders struct {
	machine         elf.Machine
	segs            []loadSeg
	dynOff, dynSize uint64 // PT_DYNAMIC; dynSize 0: static
	interp          string // PT_INTERP
}

// elfDynamic is what the loader finds through PT_DYNAMIC.
type elfDynamic struct {
	needed []string // DT_NEEDED names, plain file names only
	paths  []string // DT_RUNPATH, or else DT_RPATH, split
	// tables spans the loader's tables (hash, symbols, strings, versions,
	// relocations) in the file: they lie together, before the code.
	tables [2]uint64
}

// readFn reads up to n bytes of a file at off (fewer at its end).
type readFn func(off, n uint64) ([]byte, error)

// parseELFHeaders reads an ELF file's header and program headers; it
// refuses anything but 64-bit little-endian executables and libraries.
func parseELFHeaders(read readFn) (*elfHeaders, error) {
	hdr, err := read(0, 64)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if len(hdr) < 64 || string(hdr[:4]) != elf.ELFMAG || elf.Class(hdr[elf.EI_CLASS]) != elf.ELFCLASS64 ||
		elf.Data(hdr[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return nil, errNotELF
	}
	if t := elf.Type(le.Uint16(hdr[16:])); t != elf.ET_EXEC && t != elf.ET_DYN {
		return nil, errNotELF
	}
	h := &elfHeaders{machine: elf.Machine(le.Uint16(hdr[18:]))}
	phoff, phentsize, phnum := le.Uint64(hdr[32:]), uint64(le.Uint16(hdr[54:])), uint64(le.Uint16(hdr[56:]))
	if phentsize != 56 || phnum == 0 || phnum > maxPhnum {
		return nil, errNotELF
	}
	ph, err := read(phoff, phnum*phentsize)
	if err != nil {
		return nil, err
	}
	if uint64(len(ph)) != phnum*phentsize {
		return nil, errors.New("program headers past the end of the file")
	}
	for i := range phnum {
		p := ph[i*phentsize:]
		typ, flags := elf.ProgType(le.Uint32(p)), elf.ProgFlag(le.Uint32(p[4:]))
		off, vaddr, filesz := le.Uint64(p[8:]), le.Uint64(p[16:]), le.Uint64(p[32:])
		switch typ {
		case elf.PT_LOAD:
			h.segs = append(h.segs, loadSeg{off, vaddr, filesz, flags&elf.PF_W != 0})
		case elf.PT_DYNAMIC:
			h.dynOff, h.dynSize = off, min(filesz, maxDynamic)
		case elf.PT_INTERP:
			b, err := read(off, min(filesz, 4096))
			if err != nil {
				return nil, err
			}
			if name, _, ok := bytes.Cut(b, []byte{0}); ok {
				h.interp = string(name)
			}
		}
	}
	return h, nil
}

// parseELFDynamic reads the dynamic section h points to, and the strings
// it names.
func parseELFDynamic(read readFn, h *elfHeaders) (*elfDynamic, error) {
	dyn, err := read(h.dynOff, h.dynSize)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	var needed []uint64
	rpath, runpath := noString, noString
	tags := map[elf.DynTag]uint64{}
	for i := 0; i+16 <= len(dyn); i += 16 {
		tag, val := elf.DynTag(le.Uint64(dyn[i:])), le.Uint64(dyn[i+8:])
		if tag == elf.DT_NULL {
			break
		}
		switch tag {
		case elf.DT_NEEDED:
			if len(needed) < maxNeeded {
				needed = append(needed, val)
			}
		case elf.DT_RPATH:
			rpath = val
		case elf.DT_RUNPATH:
			runpath = val
		default:
			tags[tag] = val
		}
	}
	strtab, ok := fileOffset(h.segs, tags[elf.DT_STRTAB])
	if !ok {
		return nil, errors.New("DT_STRTAB outside every loaded segment")
	}
	strsz := tags[elf.DT_STRSZ]
	str := func(off uint64) (string, error) {
		if off >= strsz {
			return "", errors.New("string past DT_STRSZ")
		}
		b, err := read(strtab+off, min(strsz-off, 4096))
		if err != nil {
			return "", err
		}
		s, _, ok := bytes.Cut(b, []byte{0})
		if !ok {
			return "", errors.New("unterminated string")
		}
		return string(s), nil
	}
	d := &elfDynamic{}
	if runpath != noString { // DT_RUNPATH makes the loader ignore DT_RPATH
		rpath = runpath
	}
	if rpath != noString {
		s, err := str(rpath)
		if err != nil {
			return nil, err
		}
		d.paths = strings.Split(s, ":")
	}
	for _, v := range needed {
		name, err := str(v)
		if err != nil {
			return nil, err
		}
		if name != "" && len(name) <= maxNameLen && !strings.Contains(name, "/") {
			d.needed = append(d.needed, name)
		}
	}
	lo, hi := uint64(1<<63), uint64(0)
	for _, t := range [][2]elf.DynTag{{elf.DT_GNU_HASH, 0}, {elf.DT_HASH, 0}, {elf.DT_SYMTAB, 0},
		{elf.DT_STRTAB, elf.DT_STRSZ}, {elf.DT_RELA, elf.DT_RELASZ}, {elf.DT_REL, elf.DT_RELSZ},
		{elf.DT_JMPREL, elf.DT_PLTRELSZ}, {dtRELR, dtRELRSZ}, {elf.DT_VERSYM, 0}, {elf.DT_VERNEED, 0}} {
		v, ok := tags[t[0]]
		if !ok {
			continue
		}
		if off, ok := fileOffset(h.segs, v); ok {
			lo, hi = min(lo, off), max(hi, off+min(tags[t[1]], maxLoaderSpan))
		}
	}
	if lo < hi {
		d.tables = [2]uint64{lo, hi}
	}
	return d, nil
}

// loaderPrefetch reads file ino's ELF headers (fetching what it must,
// ahead of readers) and starts the fetches described above: the loader's
// writable segments first, then the libraries it needs, then its tables.
func (f *FS) loaderPrefetch(ino uint64, e *flist.Entry, p string) error {
	read := func(off, n uint64) ([]byte, error) { return f.peekFile(ino, e, off, n) }
	h, err := parseELFHeaders(read)
	if err != nil {
		return err
	}
	for _, s := range h.segs {
		if s.write {
			f.prefetchSpan(ino, e, s.off, s.filesz)
		}
	}
	if h.interp != "" {
		f.loaderFollow(h.interp)
	}
	if h.dynSize == 0 {
		return nil // static
	}
	d, err := parseELFDynamic(read, h)
	if err != nil {
		return err
	}
	var dirs []string
	for _, dir := range d.paths {
		if strings.Contains(dir, "$ORIGIN") || strings.Contains(dir, "${ORIGIN}") {
			if p == "" {
				continue // the path of the file the kernel read is unknown
			}
			dir = strings.NewReplacer("${ORIGIN}", path.Dir(p), "$ORIGIN", path.Dir(p)).Replace(dir)
		}
		if strings.HasPrefix(dir, "/") {
			dirs = append(dirs, dir)
		}
	}
	dirs = append(dirs, libDirs(h.machine)...)
	for _, name := range d.needed {
		for _, dir := range dirs {
			if f.loaderFollow(dir + "/" + name) {
				break
			}
		}
	}
	if lo, hi := d.tables[0], d.tables[1]; lo < hi {
		f.prefetchSpan(ino, e, lo, hi-lo)
	}
	return nil
}

// DT_RELR (packed relative relocations), which debug/elf does not name.
const (
	dtRELRSZ elf.DynTag = 35
	dtRELR   elf.DynTag = 36
)

// noString marks a DT_RPATH or DT_RUNPATH absent.
const noString = ^uint64(0)

// fileOffset maps a virtual address to its offset in the file.
func fileOffset(segs []loadSeg, vaddr uint64) (uint64, bool) {
	for _, s := range segs {
		if vaddr >= s.vaddr && vaddr-s.vaddr < s.filesz {
			return s.off + vaddr - s.vaddr, true
		}
	}
	return 0, false
}

// libDirs are where the loader looks for a library after the object's own
// paths: Debian's multiarch directories (from /etc/ld.so.conf.d, which
// ld.so.cache encodes), then the built-in defaults.
func libDirs(m elf.Machine) []string {
	var dirs []string
	if t := map[elf.Machine]string{elf.EM_X86_64: "x86_64-linux-gnu", elf.EM_AARCH64: "aarch64-linux-gnu",
		elf.EM_RISCV: "riscv64-linux-gnu", elf.EM_PPC64: "powerpc64le-linux-gnu", elf.EM_S390: "s390x-linux-gnu"}[m]; t != "" {
		dirs = append(dirs, "/usr/local/lib/"+t, "/lib/"+t, "/usr/lib/"+t)
	}
	return append(dirs, "/usr/local/lib", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
}

// loaderFollow starts the loader prefetch of the regular file at path p in
// the image, following symlinks, and reports whether there is one.
func (f *FS) loaderFollow(p string) bool {
	idx, e, real, err := f.lookupFollow(p)
	if err != nil || e.Kind() != flist.KindRegular {
		return false
	}
	idx, e, err = f.resolve(idx, e)
	if err != nil {
		return false
	}
	f.loaderStart(idx+1, e, real, nil)
	return true
}

// lookupFollow finds path p in the image as the kernel would, following
// symlinks in every component (absolute targets from the image's root),
// and returns the entry and its path without symlinks.
func (f *FS) lookupFollow(p string) (uint64, *flist.Entry, string, error) {
	root, err := f.r.Entry(0)
	if err != nil {
		return 0, nil, "", err
	}
	type step struct {
		idx  uint64
		e    *flist.Entry
		name string
	}
	stack := []step{{0, root, ""}} // the entries from the root to the current one
	rest := strings.Split(p, "/")
	hops := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		idx, e, err := f.r.LookupChild(stack[len(stack)-1].e, name)
		if err != nil {
			return 0, nil, "", err
		}
		if e.Kind() == flist.KindSymlink {
			if hops++; hops > maxSymlinkHops {
				return 0, nil, "", errors.New("too many levels of symbolic links")
			}
			if strings.HasPrefix(e.Target, "/") {
				stack = stack[:1]
			}
			rest = append(strings.Split(e.Target, "/"), rest...)
			continue
		}
		if len(rest) > 0 && e.Kind() != flist.KindDir {
			return 0, nil, "", flist.ErrNotExist
		}
		stack = append(stack, step{idx, e, name})
	}
	names := make([]string, len(stack))
	for i, s := range stack {
		names[i] = s.name
	}
	top := stack[len(stack)-1]
	return top.idx, top.e, path.Clean("/" + strings.Join(names, "/")), nil
}

// peekFile returns up to n bytes of file ino at off, fetching chunks at
// read-ahead priority and waiting for them. It does not count as a read:
// it moves nothing in the cache's order and is not recorded in a trace.
func (f *FS) peekFile(ino uint64, e *flist.Entry, off, n uint64) ([]byte, error) {
	if off >= e.Size || n == 0 {
		return nil, nil
	}
	n = min(n, e.Size-off)
	lo, hi := e.Offset+off, e.Offset+off+n
	out := make([]byte, 0, n)
	for k := f.r.ChunkAt(lo); k <= f.r.ChunkAt(hi-1); k++ {
		data, err := f.chunks.peek(k, ino)
		if err != nil {
			return nil, err
		}
		s := f.r.ChunkStart(k)
		out = append(out, data[max(lo, s)-s:min(hi-s, uint64(len(data)))]...)
	}
	return out, nil
}

// prefetchSpan fetches file ino's bytes [off, off+n) ahead of readers,
// at most maxLoaderSpan of them, waiting for a free read-ahead slot when
// all are taken.
func (f *FS) prefetchSpan(ino uint64, e *flist.Entry, off, n uint64) {
	if off >= e.Size || n == 0 {
		return
	}
	n = min(n, e.Size-off, maxLoaderSpan)
	f.chunks.prefetchWait(f.r.ChunkAt(e.Offset+off), f.r.ChunkAt(e.Offset+off+n-1)+1, ino)
}
