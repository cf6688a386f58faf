package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"
	cfg "github.com/cometbft/cometbft/config"
	"github.com/mitchellh/mapstructure"
)

// Timing tunes how fast the chain makes blocks. The zero value takes the
// defaults below, chosen for validators on one machine or a LAN; a grid
// spread over a WAN wants CometBFT's own (1 s blocks, 3 s rounds), which an
// operator sets in config.toml.
type Timing struct {
	// BlockTime is how long a validator waits after a commit before it
	// proposes the next block (consensus.timeout_commit). It bounds the
	// block rate and so a transaction's commit latency on a busy chain.
	// CometBFT v1.0 has no next_block_delay (it came in a later version),
	// so this is the knob. Default DefaultBlockTime.
	BlockTime time.Duration
	// RoundTimeout is how long validators wait for a proposal before they
	// vote for none and move to the next round (consensus.timeout_propose);
	// the prevote and precommit waits are a third of it. It is the pause
	// a stopped validator costs each time its turn to propose comes.
	// Default DefaultRoundTimeout.
	RoundTimeout time.Duration
	// EmptyBlockInterval is how long an idle chain waits before it makes
	// an empty block (consensus.create_empty_blocks_interval). Zero takes
	// DefaultEmptyBlockInterval; a negative value turns empty blocks off
	// entirely (create_empty_blocks = false). See the Blocks section of
	// the package doc for why there is a heartbeat at all.
	EmptyBlockInterval time.Duration
}

// Timing defaults.
const (
	DefaultBlockTime          = 500 * time.Millisecond
	DefaultRoundTimeout       = 1 * time.Second
	DefaultEmptyBlockInterval = 30 * time.Second
)

// DefaultDBBackend is CometBFT v1's default store, pure Go. goleveldb,
// the other pure-Go store, is on its way out of CometBFT; rocksdb and
// cleveldb need C libraries and build tags.
const DefaultDBBackend = "pebbledb"

// Paths inside a validator's directory, as CometBFT lays them out.
const (
	configFile = "config/config.toml"
)

func (t Timing) withDefaults() Timing {
	if t.BlockTime <= 0 {
		t.BlockTime = DefaultBlockTime
	}
	if t.RoundTimeout <= 0 {
		t.RoundTimeout = DefaultRoundTimeout
	}
	if t.EmptyBlockInterval == 0 {
		t.EmptyBlockInterval = DefaultEmptyBlockInterval
	}
	return t
}

// newConfig returns CometBFT's default configuration tuned for the
// engine: an in-process app (no ABCI socket), loopback listeners, no
// metrics server, and t's timing.
func newConfig(dir, moniker, p2pListen, rpcListen, dbBackend string, t Timing) *cfg.Config {
	t = t.withDefaults()
	c := cfg.DefaultConfig()
	c.SetRoot(dir)
	c.Moniker = moniker
	// The app is in-process (proxy.NewConnSyncLocalClientCreator); the
	// socket address is never dialled, and an empty one says so.
	c.ProxyApp = ""
	c.DBBackend = dbBackend
	if c.DBBackend == "" {
		c.DBBackend = DefaultDBBackend
	}
	c.P2P.ListenAddress = p2pListen
	c.RPC.ListenAddress = rpcListen
	c.Instrumentation.Prometheus = false
	// The kv indexer answers Node.Tx and lets Broadcast find a transaction
	// that committed before it started waiting.
	c.TxIndex.Indexer = "kv"

	cs := c.Consensus
	cs.TimeoutCommit = t.BlockTime
	cs.TimeoutPropose = t.RoundTimeout
	part := func(d int64) time.Duration { return (t.RoundTimeout / time.Duration(d)).Round(time.Millisecond) }
	cs.TimeoutProposeDelta = part(4)
	cs.TimeoutPrevote = part(3)
	cs.TimeoutPrevoteDelta = part(6)
	cs.TimeoutPrecommit = part(3)
	cs.TimeoutPrecommitDelta = part(6)
	// Gossip sooner than the default 100 ms: on a LAN a vote waiting for
	// the next gossip pass is most of a block's latency.
	cs.PeerGossipSleepDuration = 20 * time.Millisecond
	if t.EmptyBlockInterval < 0 {
		cs.CreateEmptyBlocks = false
		cs.CreateEmptyBlocksInterval = 0
	} else {
		cs.CreateEmptyBlocks = true
		cs.CreateEmptyBlocksInterval = t.EmptyBlockInterval
	}
	return c
}

// loadConfig reads dir's config.toml over CometBFT's defaults, the way
// the cometbft command does through viper (TOML, then mapstructure with
// the same duration and list hooks), without viper's dependencies.
func loadConfig(dir string) (*cfg.Config, error) {
	path := filepath.Join(dir, configFile)
	var raw map[string]any
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c := cfg.DefaultConfig()
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           c,
		WeaklyTypedInput: true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
	})
	if err != nil {
		return nil, fmt.Errorf("config decoder: %w", err)
	}
	if err := dec.Decode(raw); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	c.SetRoot(dir)
	if err := c.ValidateBasic(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// writeConfig writes c as dir's config.toml unless one is there already.
//
// cfg.WriteConfigFile renders CometBFT's own commented template, so the
// file reads like any CometBFT config; but it exits the process when the
// write fails. It is only given a file that was just created in the same
// directory, so the write cannot fail for want of a directory or a
// permission; the file is then linked into place, which fails rather
// than overwrite an existing config.
func writeConfig(dir string, c *cfg.Config) (bool, error) {
	path := filepath.Join(dir, configFile)
	if _, err := os.Stat(path); err == nil {
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.toml")
	if err != nil {
		return false, fmt.Errorf("write config: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cfg.WriteConfigFile(tmp.Name(), c)
	return linkNew(tmp.Name(), path)
}

// writeNew writes data to path unless path exists; it reports whether it
// wrote. The data goes to a temporary file first and is linked into place,
// so a crash leaves either no file or a whole one, and an existing file
// (a key above all) is never replaced.
func writeNew(path string, data []byte, perm fs.FileMode) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	return linkNew(tmp.Name(), path)
}

func linkNew(tmp, path string) (bool, error) {
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
