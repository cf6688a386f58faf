package mount

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zosgrid/zos/internal/flist"
)

// readBytes is a readFn over a whole file in memory.
func readBytes(b []byte) readFn {
	return func(off, n uint64) ([]byte, error) {
		if off >= uint64(len(b)) {
			return nil, nil
		}
		return b[off:min(uint64(len(b)), off+n)], nil
	}
}

// TestParseELFMatchesDebugELF parses real programs and libraries of this
// machine and compares what the loader prefetch finds with debug/elf.
func TestParseELFMatchesDebugELF(t *testing.T) {
	var n int
	for _, p := range []string{"/usr/bin/true", "/usr/bin/ls", "/lib/x86_64-linux-gnu/libc.so.6",
		"/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/bin/python3", "/usr/bin/perl"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		ef, err := elf.NewFile(bytes.NewReader(b))
		if err != nil || ef.Class != elf.ELFCLASS64 || ef.Data != elf.ELFDATA2LSB {
			continue
		}
		n++
		h, err := parseELFHeaders(readBytes(b))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if h.machine != ef.Machine {
			t.Errorf("%s: machine %v, debug/elf says %v", p, h.machine, ef.Machine)
		}
		var interp string
		var writable int
		for _, prog := range ef.Progs {
			switch {
			case prog.Type == elf.PT_INTERP:
				s, _ := ef.Section(".interp").Data()
				interp = string(bytes.TrimRight(s, "\x00"))
			case prog.Type == elf.PT_LOAD && prog.Flags&elf.PF_W != 0:
				writable++
				if !slices.Contains(h.segs, loadSeg{prog.Off, prog.Vaddr, prog.Filesz, true}) {
					t.Errorf("%s: writable segment at %#x missing from %+v", p, prog.Off, h.segs)
				}
			}
		}
		if h.interp != interp {
			t.Errorf("%s: interpreter %q, want %q", p, h.interp, interp)
		}
		if writable == 0 {
			t.Errorf("%s: no writable segment to check", p)
		}
		d, err := parseELFDynamic(readBytes(b), h)
		if err != nil {
			t.Fatalf("%s: dynamic: %v", p, err)
		}
		libs, _ := ef.ImportedLibraries()
		if !slices.Equal(d.needed, libs) {
			t.Errorf("%s: needed %q, want %q", p, d.needed, libs)
		}
		// The table span covers .dynsym, .dynstr and the relocations.
		for _, name := range []string{".dynsym", ".dynstr", ".rela.dyn", ".rela.plt", ".gnu.hash"} {
			if s := ef.Section(name); s != nil && (s.Offset < d.tables[0] || s.Offset+s.Size > d.tables[1]) {
				t.Errorf("%s: %s [%#x, %#x) outside the table span %#x", p, name, s.Offset, s.Offset+s.Size, d.tables)
			}
		}
	}
	if n == 0 {
		t.Skip("no 64-bit little-endian ELF programs found on this machine to compare with")
	}
}

// TestParseELFRefuses: what is not a 64-bit little-endian ELF program or
// library, or is cut short, is refused without a panic.
func TestParseELFRefuses(t *testing.T) {
	good := tinyELF()
	if _, err := parseELFHeaders(readBytes(good)); err != nil {
		t.Fatalf("the well-formed sample: %v", err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"empty":         nil,
		"text":          []byte("#!/bin/sh\necho hello, this is a script and not an ELF file at all\n"),
		"32-bit":        mod(func(b []byte) []byte { b[elf.EI_CLASS] = byte(elf.ELFCLASS32); return b }),
		"big-endian":    mod(func(b []byte) []byte { b[elf.EI_DATA] = byte(elf.ELFDATA2MSB); return b }),
		"relocatable":   mod(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[16:], uint16(elf.ET_REL)); return b }),
		"many phdrs":    mod(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[56:], 60000); return b }),
		"phdrs past":    mod(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[32:], 1<<62); return b }),
		"cut in phdrs":  good[:100],
		"odd phentsize": mod(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[54:], 32); return b }),
	} {
		if _, err := parseELFHeaders(readBytes(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A dynamic section whose string table lies outside the file's segments.
	h, _ := parseELFHeaders(readBytes(good))
	bad := mod(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[tinyDynamic+8:], 1<<40); return b })
	if _, err := parseELFDynamic(readBytes(bad), h); err == nil {
		t.Error("a DT_STRTAB outside every segment was accepted")
	}
}

// tinyDynamic is where tinyELF's dynamic section starts; its first entry
// is DT_STRTAB.
const tinyDynamic = 64 + 3*56

// tinyELF is a minimal 64-bit shared library: one read-only and one
// writable PT_LOAD, a PT_DYNAMIC naming one needed library and a runpath,
// and its string table.
func tinyELF() []byte {
	le := binary.LittleEndian
	strs := "\x00libneeded.so.1\x00$ORIGIN/../lib:/opt/lib\x00"
	strOff := uint64(tinyDynamic + 6*16)
	size := strOff + uint64(len(strs))
	b := make([]byte, size)
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS], b[elf.EI_DATA], b[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	le.PutUint16(b[16:], uint16(elf.ET_DYN))
	le.PutUint16(b[18:], uint16(elf.EM_X86_64))
	le.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[32:], 64) // phoff
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], 3)
	ph := func(i int, typ elf.ProgType, flags elf.ProgFlag, off, filesz uint64) {
		p := b[64+i*56:]
		le.PutUint32(p, uint32(typ))
		le.PutUint32(p[4:], uint32(flags))
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], off) // vaddr = offset
		le.PutUint64(p[32:], filesz)
	}
	ph(0, elf.PT_LOAD, elf.PF_R, 0, size)
	ph(1, elf.PT_LOAD, elf.PF_R|elf.PF_W, tinyDynamic, 6*16)
	ph(2, elf.PT_DYNAMIC, elf.PF_R|elf.PF_W, tinyDynamic, 6*16)
	for i, kv := range [][2]uint64{{uint64(elf.DT_STRTAB), strOff}, {uint64(elf.DT_STRSZ), uint64(len(strs))},
		{uint64(elf.DT_NEEDED), 1}, {uint64(elf.DT_RUNPATH), 16}, {uint64(elf.DT_SYMTAB), strOff}} {
		le.PutUint64(b[tinyDynamic+i*16:], kv[0])
		le.PutUint64(b[tinyDynamic+i*16+8:], kv[1])
	}
	copy(b[strOff:], strs)
	return b
}

func TestTinyELF(t *testing.T) {
	b := tinyELF()
	h, err := parseELFHeaders(readBytes(b))
	if err != nil {
		t.Fatal(err)
	}
	d, err := parseELFDynamic(readBytes(b), h)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.needed, []string{"libneeded.so.1"}) || !slices.Equal(d.paths, []string{"$ORIGIN/../lib", "/opt/lib"}) {
		t.Errorf("needed %q, paths %q", d.needed, d.paths)
	}
}

// FuzzParseELF: whatever the bytes, parsing ends without a panic, and
// what it returns stays within its bounds.
func FuzzParseELF(f *testing.F) {
	f.Add(tinyELF())
	if b, err := os.ReadFile("/usr/bin/true"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseELFHeaders(readBytes(b))
		if err != nil {
			return
		}
		if len(h.segs) > maxPhnum || h.dynSize > maxDynamic {
			t.Fatalf("headers past the bounds: %d segments, dynamic %d", len(h.segs), h.dynSize)
		}
		if h.dynSize == 0 {
			return
		}
		d, err := parseELFDynamic(readBytes(b), h)
		if err != nil {
			return
		}
		if len(d.needed) > maxNeeded {
			t.Fatalf("%d needed libraries", len(d.needed))
		}
		for _, n := range d.needed {
			if n == "" || len(n) > maxNameLen || bytes.ContainsAny([]byte(n), "/") {
				t.Fatalf("needed name %q", n)
			}
		}
	})
}

// TestLookupFollow resolves paths through the image's symlinks as the
// kernel would, within the image.
func TestLookupFollow(t *testing.T) {
	src := t.TempDir()
	for _, d := range []string{"usr/lib/x86_64-linux-gnu", "opt/app/bin", "etc"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, data := range map[string]string{"usr/lib/x86_64-linux-gnu/libc.so.6": "libc", "opt/app/bin/app": "app", "etc/hosts": "h"} {
		if err := os.WriteFile(filepath.Join(src, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"lib":                                 "usr/lib",                                  // relative, to a directory
		"lib64":                               "/usr/lib/x86_64-linux-gnu",                // absolute
		"usr/lib/x86_64-linux-gnu/libc.so":    "libc.so.6",                                // same directory
		"opt/app/lib":                         "../../../usr/lib/../lib/x86_64-linux-gnu", // .. through a symlink
		"opt/app/escape":                      "../../../../../../etc/hosts",              // .. past the root stays at the root
		"loop1":                               "loop2",
		"loop2":                               "loop1",
		"dangling":                            "/nowhere",
		"usr/lib/x86_64-linux-gnu/ld.so.link": "/lib64/libc.so",
	} {
		if err := os.Symlink(target, filepath.Join(src, link)); err != nil {
			t.Fatal(err)
		}
	}
	r, st := packMem(t, src)
	fs, err := New(context.Background(), r, st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	for p, want := range map[string]string{
		"/lib/x86_64-linux-gnu/libc.so.6":      "/usr/lib/x86_64-linux-gnu/libc.so.6",
		"/lib64/libc.so":                       "/usr/lib/x86_64-linux-gnu/libc.so.6",
		"/opt/app/lib/libc.so":                 "/usr/lib/x86_64-linux-gnu/libc.so.6",
		"/opt/app/escape":                      "/etc/hosts",
		"/usr/lib/x86_64-linux-gnu/ld.so.link": "/usr/lib/x86_64-linux-gnu/libc.so.6",
		"opt/app/bin/../bin/./app":             "/opt/app/bin/app",
	} {
		_, e, real, err := fs.lookupFollow(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if real != want || e.Kind() != flist.KindRegular {
			t.Errorf("%s: found %s (%v), want %s", p, real, e.Kind(), want)
		}
	}
	// A directory, through a symlink and with a trailing slash, by its real path.
	if _, e, real, err := fs.lookupFollow("/lib/x86_64-linux-gnu/"); err != nil || real != "/usr/lib/x86_64-linux-gnu" || e.Kind() != flist.KindDir {
		t.Errorf("/lib/x86_64-linux-gnu/: %s, %v", real, err)
	}
	for _, p := range []string{"/loop1", "/dangling", "/etc/hosts/x", "/nope"} {
		if _, _, real, err := fs.lookupFollow(p); err == nil {
			t.Errorf("%s: found %s, want an error", p, real)
		} else if p == "/loop1" && errors.Is(err, flist.ErrNotExist) {
			t.Errorf("%s: %v, want a symlink loop error", p, err)
		}
	}
}
