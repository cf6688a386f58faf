package spec

import (
	"bufio"
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/zosgrid/zos/internal/key"
)

// MaxKeysFile bounds a twins' keys file.
const MaxKeysFile = 16 << 20

// ParseKeys reads the twins' keys file format shared by `zos spec check
// --keys` and the node: one "TWIN ed25519:..." per line; '#' starts a
// comment. A twin listed twice is an error.
func ParseKeys(b []byte) (map[uint32]key.Public, error) {
	if len(b) > MaxKeysFile {
		return nil, fmt.Errorf("larger than %d bytes", MaxKeysFile)
	}
	keys := map[uint32]key.Public{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want TWIN ed25519:...", n)
		}
		t, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil || t == 0 {
			return nil, fmt.Errorf("line %d: %q is not a twin id", n, f[0])
		}
		k, err := key.ParsePublic(f[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if _, dup := keys[uint32(t)]; dup {
			return nil, fmt.Errorf("line %d: twin %d given twice", n, t)
		}
		keys[uint32(t)] = k
	}
	return keys, sc.Err()
}

// FormatKeys writes keys in ParseKeys' format, by twin id.
func FormatKeys(keys map[uint32]key.Public) []byte {
	ids := make([]uint32, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var b bytes.Buffer
	for _, id := range ids {
		fmt.Fprintf(&b, "%d %s\n", id, keys[id])
	}
	return b.Bytes()
}
