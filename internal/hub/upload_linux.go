package hub

import (
	"os"
	"syscall"
)

// lock takes an exclusive flock on f, held until f is closed (or the
// process dies).
func lock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) }

// tryLock reports whether an exclusive flock on f could be taken: no
// process holds the file.
func tryLock(f *os.File) bool { return lock(f) == nil }
