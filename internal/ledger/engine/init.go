package engine

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	cfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto"
	"github.com/cometbft/cometbft/crypto/ed25519"
	cmtjson "github.com/cometbft/cometbft/libs/json"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/types"
	cmttime "github.com/cometbft/cometbft/types/time"
)

// Default listen addresses of a single validator: loopback, CometBFT's
// usual ports. An embedded validator serves its own process; an operator
// who opens it to a grid edits config.toml or passes Options.
const (
	DefaultP2PListen = "tcp://127.0.0.1:26656"
	DefaultRPCListen = "tcp://127.0.0.1:26657"
)

// validatorPower is every validator's voting power. Validators are equal:
// any 2/3 of them by count commit blocks.
const validatorPower = 10

// InitOptions configures Init.
type InitOptions struct {
	// ChainID names the chain; required. Transactions and votes are
	// signed for one chain id, so two grids never mix.
	ChainID string
	// Moniker is the validator's human name; default "zos".
	Moniker string
	// P2PListen and RPCListen are the listen addresses written to
	// config.toml; default DefaultP2PListen and DefaultRPCListen. An
	// empty RPC address in config.toml turns the RPC server off; give
	// "none" here for that.
	P2PListen, RPCListen string
	// DBBackend is CometBFT's store; default DefaultDBBackend.
	DBBackend string
	Timing
}

// Init prepares dir as the home of a single validator, like `cometbft
// init`: config/config.toml, config/genesis.json naming this validator as
// the only one, config/node_key.json, config/priv_validator_key.json and
// data/priv_validator_state.json.
//
// Init is idempotent: it writes only what is missing and never replaces a
// key, a config or a genesis. It refuses a directory whose genesis is for
// another chain, and a validator key without its sign state (signing again
// from an empty state could sign twice at a height: restore the state
// file).
func Init(dir string, o InitOptions) error {
	if o.ChainID == "" {
		return errors.New("init: no chain id")
	}
	if o.Moniker == "" {
		o.Moniker = "zos"
	}
	c := newConfig(dir, o.Moniker, listenAddr(o.P2PListen, DefaultP2PListen),
		listenAddr(o.RPCListen, DefaultRPCListen), o.DBBackend, o.Timing)
	if err := ensureDirs(dir); err != nil {
		return err
	}
	if _, err := writeConfig(dir, c); err != nil {
		return err
	}
	if _, err := loadOrGenNodeKey(c); err != nil {
		return err
	}
	pub, err := loadOrGenValidatorKey(c)
	if err != nil {
		return err
	}
	gen := newGenesis(o.ChainID, []types.GenesisValidator{{
		Address: pub.Address(), PubKey: pub, Power: validatorPower, Name: o.Moniker,
	}})
	return ensureGenesis(c.GenesisFile(), gen)
}

// TestnetOptions configures InitTestnet.
type TestnetOptions struct {
	// ChainID names the chain; required.
	ChainID string
	// Host is the address the validators listen on and dial each other
	// at; default 127.0.0.1.
	Host string
	// Hosts, when set, puts validator i on machine Hosts[i] (an address
	// or name its peers reach it at; one per directory): it listens there
	// on P2PPort, and its peers dial it there. The directories are then
	// copied to their machines. Host is ignored.
	Hosts []string
	// P2PPort is the peer-to-peer port with Hosts; default 26656.
	P2PPort int
	// DBBackend is CometBFT's store; default DefaultDBBackend.
	DBBackend string
	Timing
}

// InitTestnet prepares one directory per validator of a chain: each its
// own keys, one genesis listing them all with equal power, and every
// validator a persistent peer of every other. By default they all run on
// one host, each on its own ports (free ports the kernel gives); with
// TestnetOptions.Hosts each goes to a machine of its own.
//
// Like Init it never replaces a key. A testnet's config and genesis are
// written together: when every directory has them they are kept, when
// none has they are written, and a mix is refused.
func InitTestnet(dirs []string, o TestnetOptions) error {
	if o.ChainID == "" {
		return errors.New("init testnet: no chain id")
	}
	if len(dirs) == 0 {
		return errors.New("init testnet: no directories")
	}
	host := o.Host
	if host == "" {
		host = "127.0.0.1"
	}
	have := 0
	for _, d := range dirs {
		_, errC := os.Stat(filepath.Join(d, configFile))
		_, errG := os.Stat(filepath.Join(d, "config", "genesis.json"))
		if (errC == nil) != (errG == nil) {
			return fmt.Errorf("init testnet: %s has only one of config.toml and genesis.json", d)
		}
		if errC == nil {
			have++
		}
	}
	if have != 0 && have != len(dirs) {
		return fmt.Errorf("init testnet: %d of %d directories are already set up", have, len(dirs))
	}

	if len(o.Hosts) > 0 && len(o.Hosts) != len(dirs) {
		return fmt.Errorf("init testnet: %d hosts for %d validators", len(o.Hosts), len(dirs))
	}
	var ports []int
	if len(o.Hosts) == 0 {
		var err error
		if ports, err = freePorts(host, 2*len(dirs)); err != nil {
			return fmt.Errorf("init testnet: %w", err)
		}
	}
	p2pPort := o.P2PPort
	if p2pPort == 0 {
		p2pPort = 26656
	}
	cs := make([]*cfg.Config, len(dirs))
	peers := make([]string, len(dirs))
	vals := make([]types.GenesisValidator, len(dirs))
	for i, d := range dirs {
		moniker := "validator" + strconv.Itoa(i)
		var p2pAddr, rpcAddr string
		if len(o.Hosts) > 0 {
			// A machine each: the usual ports, RPC on the machine's loopback.
			p2pAddr = net.JoinHostPort(o.Hosts[i], strconv.Itoa(p2pPort))
			rpcAddr = strings.TrimPrefix(DefaultRPCListen, "tcp://")
		} else {
			p2pAddr = net.JoinHostPort(host, strconv.Itoa(ports[2*i]))
			rpcAddr = net.JoinHostPort(host, strconv.Itoa(ports[2*i+1]))
		}
		c := newConfig(d, moniker, "tcp://"+p2pAddr, "tcp://"+rpcAddr, o.DBBackend, o.Timing)
		// Validators on one host share an IP and have loopback (or
		// private) addresses, which CometBFT refuses by default.
		c.P2P.AddrBookStrict = false
		c.P2P.AllowDuplicateIP = true
		// The peers are all known and persistent: no peer exchange.
		c.P2P.PexReactor = false
		if err := ensureDirs(d); err != nil {
			return err
		}
		key, err := loadOrGenNodeKey(c)
		if err != nil {
			return err
		}
		pub, err := loadOrGenValidatorKey(c)
		if err != nil {
			return err
		}
		cs[i] = c
		peers[i] = p2p.IDAddressString(key.ID(), p2pAddr)
		vals[i] = types.GenesisValidator{Address: pub.Address(), PubKey: pub, Power: validatorPower, Name: moniker}
	}
	if have == len(dirs) {
		return checkTestnetGenesis(dirs, vals)
	}
	gen := newGenesis(o.ChainID, vals)
	for i, c := range cs {
		others := make([]string, 0, len(peers)-1)
		for j, p := range peers {
			if j != i {
				others = append(others, p)
			}
		}
		c.P2P.PersistentPeers = strings.Join(others, ",")
		if _, err := writeConfig(dirs[i], c); err != nil {
			return err
		}
		if err := ensureGenesis(c.GenesisFile(), gen); err != nil {
			return err
		}
	}
	return nil
}

// checkTestnetGenesis checks that directories set up before all hold one
// genesis naming exactly their validators.
func checkTestnetGenesis(dirs []string, vals []types.GenesisValidator) error {
	var first []byte
	for i, d := range dirs {
		path := filepath.Join(d, "config", "genesis.json")
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if i == 0 {
			first = b
			g, err := types.GenesisDocFromJSON(b)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if len(g.Validators) != len(vals) {
				return fmt.Errorf("%s: %d validators, want %d", path, len(g.Validators), len(vals))
			}
			for j, v := range g.Validators {
				if !bytes.Equal(v.PubKey.Bytes(), vals[j].PubKey.Bytes()) {
					return fmt.Errorf("%s: validator %d is not %s's key", path, j, dirs[j])
				}
			}
		} else if !bytes.Equal(b, first) {
			return fmt.Errorf("%s differs from %s's", path, dirs[0])
		}
	}
	return nil
}

func newGenesis(chainID string, vals []types.GenesisValidator) *types.GenesisDoc {
	return &types.GenesisDoc{
		GenesisTime:     cmttime.Now(),
		ChainID:         chainID,
		InitialHeight:   1,
		ConsensusParams: types.DefaultConsensusParams(),
		Validators:      vals,
	}
}

// ensureGenesis writes gen to path unless a genesis is there; an existing
// one must be for the same chain.
func ensureGenesis(path string, gen *types.GenesisDoc) error {
	if old, err := types.GenesisDocFromFile(path); err == nil {
		if old.ChainID != gen.ChainID {
			return fmt.Errorf("%s is for chain %q, not %q", path, old.ChainID, gen.ChainID)
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("genesis: %w", err)
	}
	if err := gen.ValidateAndComplete(); err != nil {
		return fmt.Errorf("genesis: %w", err)
	}
	b, err := cmtjson.MarshalIndent(gen, "", "  ")
	if err != nil {
		return fmt.Errorf("genesis: %w", err)
	}
	if _, err := writeNew(path, b, 0o644); err != nil {
		return fmt.Errorf("genesis: %w", err)
	}
	return nil
}

func ensureDirs(dir string) error {
	for _, d := range []string{"config", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// loadOrGenNodeKey is p2p.LoadOrGenNodeKey with the write made atomic and
// never replacing a key.
func loadOrGenNodeKey(c *cfg.Config) (*p2p.NodeKey, error) {
	path := c.NodeKeyFile()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		b, err := cmtjson.Marshal(&p2p.NodeKey{PrivKey: ed25519.GenPrivKey()})
		if err != nil {
			return nil, fmt.Errorf("node key: %w", err)
		}
		if _, err := writeNew(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("node key: %w", err)
		}
	}
	k, err := p2p.LoadNodeKey(path)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	return k, nil
}

// loadOrGenValidatorKey makes sure the validator's key and sign state
// exist and returns its public key. privval.LoadOrGenFilePV would do it
// but exits the process on a bad file, and a key file without its state
// must be refused rather than given an empty one.
func loadOrGenValidatorKey(c *cfg.Config) (crypto.PubKey, error) {
	keyPath, statePath := c.PrivValidatorKeyFile(), c.PrivValidatorStateFile()
	_, errK := os.Stat(keyPath)
	_, errS := os.Stat(statePath)
	switch {
	case errK == nil && errS != nil:
		return nil, fmt.Errorf("validator key %s has no sign state %s: restore it", keyPath, statePath)
	case errK != nil && errS == nil:
		st, err := readSignState(statePath)
		if err != nil {
			return nil, err
		}
		// A state left by a crash between the two writes below is
		// empty and safe to keep; one that signed something belongs to
		// a key that is gone.
		if st.Height != 0 {
			return nil, fmt.Errorf("sign state %s is at height %d but its key %s is gone", statePath, st.Height, keyPath)
		}
	}
	if errK != nil {
		// The state first: a crash after it leaves an empty state, which
		// the case above accepts; the key is never without its state.
		b, err := cmtjson.MarshalIndent(&privval.FilePVLastSignState{}, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("validator state: %w", err)
		}
		if _, err := writeNew(statePath, b, 0o600); err != nil {
			return nil, fmt.Errorf("validator state: %w", err)
		}
		priv := ed25519.GenPrivKey()
		b, err = cmtjson.MarshalIndent(privval.FilePVKey{
			Address: priv.PubKey().Address(), PubKey: priv.PubKey(), PrivKey: priv,
		}, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("validator key: %w", err)
		}
		if _, err := writeNew(keyPath, b, 0o600); err != nil {
			return nil, fmt.Errorf("validator key: %w", err)
		}
	}
	k, err := readValidatorKey(keyPath)
	if err != nil {
		return nil, err
	}
	if _, err := readSignState(statePath); err != nil {
		return nil, err
	}
	return k.PrivKey.PubKey(), nil
}

func readValidatorKey(path string) (privval.FilePVKey, error) {
	var k privval.FilePVKey
	b, err := os.ReadFile(path)
	if err != nil {
		return k, fmt.Errorf("validator key: %w", err)
	}
	if err := cmtjson.Unmarshal(b, &k); err != nil {
		return k, fmt.Errorf("validator key %s: %w", path, err)
	}
	if k.PrivKey == nil {
		return k, fmt.Errorf("validator key %s: no private key", path)
	}
	return k, nil
}

func readSignState(path string) (privval.FilePVLastSignState, error) {
	var st privval.FilePVLastSignState
	b, err := os.ReadFile(path)
	if err != nil {
		return st, fmt.Errorf("validator state: %w", err)
	}
	if err := cmtjson.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("validator state %s: %w", path, err)
	}
	return st, nil
}

// loadPrivValidator loads the validator's key and sign state. Both files
// are read and parsed first because privval.LoadFilePV exits the process
// on a missing or bad file instead of returning an error.
func loadPrivValidator(c *cfg.Config) (*privval.FilePV, error) {
	keyPath, statePath := c.PrivValidatorKeyFile(), c.PrivValidatorStateFile()
	if _, err := readValidatorKey(keyPath); err != nil {
		return nil, err
	}
	if _, err := readSignState(statePath); err != nil {
		return nil, err
	}
	return privval.LoadFilePV(keyPath, statePath), nil
}

// freePorts asks the kernel for n distinct free TCP ports on host. They
// are free when asked; another process could take one before the
// validator listens, which on a test machine is rare enough.
func freePorts(host string, n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		// Held open until all are picked, so that they differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// listenAddr returns s, or def when s is empty, or no address (the
// listener off) when s is "none".
func listenAddr(s, def string) string {
	if s == "" {
		return def
	}
	if s == "none" {
		return ""
	}
	return s
}
