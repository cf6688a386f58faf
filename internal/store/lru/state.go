package lru

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// The state record (docs/CACHE.md).
const (
	stateMagic   = "zoscache"
	stateVersion = 1
	stateSize    = 128
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errNoState reports a state record that is missing, short or torn: the
// cache rebuilds it from a scan.
var errNoState = errors.New("no valid state record")

// state is the shared record: what the cache counts, machine-wide.
type state struct {
	budget     int64 // 0: DefaultBudget
	used       int64
	blobs      int64
	hits       int64
	misses     int64
	evictions  int64
	evicted    int64
	reconciled int64 // unix ns of the last full count
}

func (st *state) effectiveBudget() int64 {
	if st.budget > 0 {
		return st.budget
	}
	return DefaultBudget
}

func (st *state) encode() []byte {
	b := make([]byte, stateSize)
	copy(b, stateMagic)
	le := binary.LittleEndian
	le.PutUint32(b[8:], stateVersion)
	for i, v := range []int64{st.budget, st.used, st.blobs, st.hits, st.misses, st.evictions, st.evicted, st.reconciled} {
		le.PutUint64(b[16+8*i:], uint64(v))
	}
	le.PutUint32(b[stateSize-4:], crc32.Checksum(b[:stateSize-4], castagnoli))
	return b
}

func decodeState(b []byte) (state, error) {
	le := binary.LittleEndian
	if len(b) < stateSize || string(b[:8]) != stateMagic ||
		le.Uint32(b[stateSize-4:]) != crc32.Checksum(b[:stateSize-4], castagnoli) {
		return state{}, errNoState
	}
	if v := le.Uint32(b[8:]); v != stateVersion {
		return state{}, fmt.Errorf("cache state version %d, this zos knows %d", v, stateVersion)
	}
	var f [8]int64
	for i := range f {
		f[i] = int64(le.Uint64(b[16+8*i:]))
	}
	return state{budget: f[0], used: f[1], blobs: f[2], hits: f[3], misses: f[4], evictions: f[5], evicted: f[6], reconciled: f[7]}, nil
}

// stateFile is the open state record and its lock. The flock excludes other
// processes; mu excludes other goroutines of this one (a flock belongs to
// the open file, so it cannot tell them apart).
type stateFile struct {
	f *os.File
}

func (s *stateFile) read() (state, error) {
	b := make([]byte, stateSize)
	n, err := s.f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return state{}, fmt.Errorf("cache state: %w", err)
	}
	return decodeState(b[:n])
}

func (s *stateFile) write(st state) error {
	if _, err := s.f.WriteAt(st.encode(), 0); err != nil {
		return fmt.Errorf("cache state: %w", err)
	}
	return nil
}

// flock takes how (unix.LOCK_EX, LOCK_SH, optionally |LOCK_NB) on f,
// retrying on EINTR.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

func funlock(f *os.File) { unix.Flock(int(f.Fd()), unix.LOCK_UN) }
