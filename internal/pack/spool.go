package pack

import (
	"bufio"
	"fmt"
	"os"

	"github.com/zosgrid/zos/internal/digest"
)

// spoolMemory is how much small-file content Layers keeps in memory before
// it spills to a temporary file.
const spoolMemory = 64 << 20

// spool keeps small files' content from the layers until the final tree is
// known: in memory up to a limit, then in an unlinked temporary file, so an
// image whose small files outgrow memory still converts. Equal contents
// are kept once.
type spool struct {
	dir   string
	limit int64
	mem   []byte
	f     *os.File
	w     *bufio.Writer
	size  int64 // bytes in f
	seen  map[digest.ID]int64
}

func newSpool(dir string, limit int64) *spool {
	return &spool{dir: dir, limit: limit, seen: map[digest.ID]int64{}}
}

// add keeps b and returns where it is.
func (s *spool) add(b []byte) (int64, error) {
	sum := digest.Sum(b)
	if off, ok := s.seen[sum]; ok {
		return off, nil
	}
	var off int64
	if int64(len(s.mem)+len(b)) <= s.limit {
		off = int64(len(s.mem))
		s.mem = append(s.mem, b...)
	} else {
		if s.f == nil {
			f, err := os.CreateTemp(s.dir, "zos-spool-")
			if err != nil {
				return 0, fmt.Errorf("pack: spool: %w", err)
			}
			os.Remove(f.Name()) // unlinked: it goes when it is closed, whatever happens
			s.f, s.w = f, bufio.NewWriterSize(f, 1<<20)
		}
		if _, err := s.w.Write(b); err != nil {
			return 0, fmt.Errorf("pack: spool: %w", err)
		}
		off = s.limit + s.size
		s.size += int64(len(b))
	}
	s.seen[sum] = off
	return off, nil
}

// readAt reads len(b) bytes kept at off.
func (s *spool) readAt(b []byte, off int64) error {
	if off < s.limit {
		copy(b, s.mem[off:])
		return nil
	}
	if s.w.Buffered() > 0 {
		if err := s.w.Flush(); err != nil {
			return fmt.Errorf("pack: spool: %w", err)
		}
	}
	if _, err := s.f.ReadAt(b, off-s.limit); err != nil {
		return fmt.Errorf("pack: spool: %w", err)
	}
	return nil
}

func (s *spool) close() {
	if s.f != nil {
		s.f.Close()
	}
	s.mem = nil
}
