package lru

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// devIno names a file: its device's major and minor numbers and its inode.
type devIno struct {
	major, minor uint32
	ino          uint64
}

// sharedFlocks returns the files on which some process holds a shared
// flock, read from /proc/locks (lines such as
// "1: FLOCK  ADVISORY  READ  1234 08:01:131090 0 EOF"; waiters are marked
// "->" and hold nothing).
func sharedFlocks() (map[devIno]bool, error) {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[devIno]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || fs[1] != "FLOCK" || fs[3] != "READ" {
			continue
		}
		parts := strings.Split(fs[5], ":")
		if len(parts) != 3 {
			continue
		}
		major, err1 := strconv.ParseUint(parts[0], 16, 32)
		minor, err2 := strconv.ParseUint(parts[1], 16, 32)
		ino, err3 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		out[devIno{uint32(major), uint32(minor), ino}] = true
	}
	return out, sc.Err()
}
