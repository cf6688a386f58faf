package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/spec"
)

// Twins gives the registered public key of every twin (an identity: a
// person or an organisation). The ledger will be the registry; until then
// a node reads a file.
type Twins interface {
	Keys(ctx context.Context) (map[uint32]key.Public, error)
}

// TwinsFile is a twins registry kept in a file of "TWIN ed25519:..." lines
// (spec.ParseKeys, the format of `zos spec check --keys`), read again on
// every call so an operator's edit takes effect at once. A missing file
// is an empty registry.
type TwinsFile string

// Keys reads the file.
func (f TwinsFile) Keys(context.Context) (map[uint32]key.Public, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return map[uint32]key.Public{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("twins: %w", err)
	}
	keys, err := spec.ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("twins %s: %w", f, err)
	}
	return keys, nil
}

// Add registers (or replaces) twin id's key, writing the file atomically.
func (f TwinsFile) Add(id uint32, k key.Public) error {
	if id == 0 {
		return errors.New("twin id must be >= 1")
	}
	keys, err := f.Keys(context.Background())
	if err != nil {
		return err
	}
	keys[id] = k
	if err := os.MkdirAll(filepath.Dir(string(f)), 0o700); err != nil {
		return err
	}
	return writeAtomic(string(f), spec.FormatKeys(keys))
}
