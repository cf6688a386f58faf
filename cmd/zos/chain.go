package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/ledger/engine"
	"github.com/zosgrid/zos/internal/ledger/ledgerapi"
	"github.com/zosgrid/zos/internal/ledger/ledgerclient"
	"github.com/zosgrid/zos/internal/spec"
)

const (
	defaultChainHome = "/var/lib/zos/chain"
	chainAPIDefault  = "http://127.0.0.1:8090"
	// chainSubmitWait bounds a write command's wait for its block (the
	// server answers within its own 30 s; the client then looks the
	// transaction up by hash for the rest).
	chainSubmitWait = 2 * time.Minute
)

func chainCmd() *cobra.Command {
	c := &cobra.Command{Use: "chain", Short: "Run the grid ledger's validator, read and write the ledger (docs/LEDGER.md)"}
	c.AddCommand(chainInitCmd(), chainTestnetCmd(), chainRunCmd(), chainStatusCmd(),
		chainTwinCmd(), chainNodeCmd(), chainContractCmd(),
		chainTwinsCmd(), chainNodesCmd(), chainContractsCmd(), chainTxCmd())
	return c
}

// chainFlags are the flags of the commands that talk to a chain API.
type chainFlags struct {
	url, keyFile string
	twin         uint32
	json         bool
}

func (f *chainFlags) addRead(c *cobra.Command) {
	c.Flags().StringVar(&f.url, "chain", envOr("ZOS_CHAIN", chainAPIDefault), "the chain API (zos chain run; default $ZOS_CHAIN or "+chainAPIDefault+")")
	c.Flags().BoolVar(&f.json, "json", false, "print the result as JSON")
}

// addWrite adds the signer's flags; twinHelp "" leaves --twin out.
func (f *chainFlags) addWrite(c *cobra.Command, twinHelp string) {
	f.addRead(c)
	c.Flags().StringVar(&f.keyFile, "key", os.Getenv("ZOS_KEY"), "secret key file that signs the transaction (zos key gen; default $ZOS_KEY)")
	if twinHelp != "" {
		c.Flags().Uint32Var(&f.twin, "twin", 0, twinHelp)
	}
}

func (f *chainFlags) client() (*ledgerclient.Client, error) {
	cl, err := ledgerclient.New(f.url, nil)
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	return cl, nil
}

func (f *chainFlags) secret() (key.Secret, error) {
	if f.keyFile == "" {
		return key.Secret{}, &exitError{exitUsage, errors.New("every ledger transaction is signed: pass --key FILE or set ZOS_KEY (make one with 'zos key gen FILE')")}
	}
	return key.Load(f.keyFile)
}

// submit signs the body that build makes for the chain's id and a fresh
// nonce, sends it and waits for its block. The nonce is the time in
// nanoseconds: strictly increasing per signer without asking the ledger
// for the last one (docs/LEDGER.md allows gaps), so two commands of one
// signer must not run at once, and a clock set back refuses the signer's
// transactions until it catches up.
func submit(ctx context.Context, cl *ledgerclient.Client, s ledger.Signer, build func(chain string, nonce uint64) (ledger.Body, error)) (ledgerclient.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, chainSubmitWait)
	defer cancel()
	info, err := cl.Info(ctx)
	if err != nil {
		return ledgerclient.Result{}, chainErr(cl, err)
	}
	nonce := uint64(time.Now().UnixNano())
	body, err := build(info.Chain, nonce)
	if err != nil {
		return ledgerclient.Result{}, err
	}
	tx, err := ledger.NewTx(info.Chain, s, nonce, body)
	if err != nil {
		return ledgerclient.Result{}, &exitError{exitUsage, err}
	}
	r, err := cl.Submit(ctx, tx)
	if err != nil {
		return r, chainErr(cl, err)
	}
	return r, nil
}

// chainErr gives client errors their exit status and, for a chain that
// does not answer, the address asked.
func chainErr(cl *ledgerclient.Client, err error) error {
	var re *ledgerclient.RefusedError
	switch {
	case errors.As(err, &re) && re.Code == ledger.CodeSignature:
		return &exitError{exitSignature, err}
	case errors.As(err, &re):
		return err
	case errors.Is(err, ledgerclient.ErrPending):
		return fmt.Errorf("%w (zos chain tx HASH tells later)", err)
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &oe) || errors.As(err, &ne) {
		return fmt.Errorf("chain API at %s: %w (is 'zos chain run' up? --chain URL or $ZOS_CHAIN)", cl.URL(), err)
	}
	return err
}

func idArg(s, what string, max uint64) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || n > max {
		return 0, &exitError{exitUsage, fmt.Errorf("%s id %q: want a number >= 1", what, s)}
	}
	return n, nil
}

// genesisChainID reads the chain id of home's genesis, "" when it has none.
func genesisChainID(home string) (string, error) {
	b, err := os.ReadFile(filepath.Join(home, "config", "genesis.json"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var g struct {
		ChainID string `json:"chain_id"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Join(home, "config", "genesis.json"), err)
	}
	return g.ChainID, nil
}

// newChainID names a new chain: "zos-" and random hex, so that two grids
// set up with the defaults never accept each other's transactions.
func newChainID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "zos-" + hex.EncodeToString(b)
}

func chainInitCmd() *cobra.Command {
	var home, chainID, p2p, rpc string
	var timing engine.Timing
	c := &cobra.Command{
		Use:   "init [--home DIR] [--chain-id ID]",
		Short: "Prepare the home of a single embedded validator (idempotent)",
		Long: `Prepare DIR as the home of a chain with one validator, this machine: CometBFT's
config/ (config.toml, genesis.json, the validator's and the peer keys) and
data/. Running it again keeps every key and file; a different --chain-id for
an existing home is refused. Without --chain-id a new chain gets a random id
(zos-XXXXXXXX). Then: zos chain run --home DIR.`,
		Args: usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			home, _ = filepath.Abs(home)
			have, err := genesisChainID(home)
			if err != nil {
				return err
			}
			switch {
			case chainID == "" && have != "":
				chainID = have
			case chainID == "":
				chainID = newChainID()
			}
			if err := engine.Init(home, engine.InitOptions{ChainID: chainID, P2PListen: p2p, RPCListen: rpc, Timing: timing}); err != nil {
				return err
			}
			verb := "initialised"
			if have != "" {
				verb = "already initialised"
			}
			fmt.Fprintf(c.OutOrStdout(), "chain %s %s in %s (run it: zos chain run --home %s)\n", chainID, verb, home, home)
			return nil
		},
	}
	c.Flags().StringVar(&home, "home", defaultChainHome, "the validator's directory")
	c.Flags().StringVar(&chainID, "chain-id", "", "the chain's name, 1..50 of [A-Za-z0-9._-] (default: the home's, or a new random one)")
	c.Flags().StringVar(&p2p, "p2p", "", "peer-to-peer listen address written to config.toml (default "+engine.DefaultP2PListen+")")
	c.Flags().StringVar(&rpc, "rpc", "", `CometBFT RPC listen address written to config.toml, "none" for none (default `+engine.DefaultRPCListen+")")
	c.Flags().DurationVar(&timing.BlockTime, "block-time", 0, "pause after each block (default 500ms)")
	c.Flags().DurationVar(&timing.RoundTimeout, "round-timeout", 0, "wait for a proposal before moving to the next round (default 1s)")
	return c
}

func chainTestnetCmd() *cobra.Command {
	var home, chainID, host string
	var hosts []string
	var p2pPort int
	var timing engine.Timing
	c := &cobra.Command{
		Use:   "testnet N --home DIR [--chain-id ID] [--hosts H1,...,HN [--p2p-port P]]",
		Short: "Prepare N validator homes DIR/v0..v{N-1} of one chain, on this machine or on N machines",
		Long: `Prepare N validators of one chain, each in DIR/vI with its own keys, every
other one a persistent peer, one genesis listing them all with equal power. Any
group of more than 2/3 of them commits blocks: 4 survive one stopped validator.

On this machine (default): free ports on --host; run each with its own API:
zos chain run --home DIR/vI --listen 127.0.0.1:PORT.

On N machines (--hosts, the address or name each machine is reached at, in
order): validator I listens at HOST_I:--p2p-port (26656) and its peers dial it
there. Copy DIR/vI to machine I (it holds that validator's private keys: copy it
over a trusted channel, and keep no other copy) and run zos chain run --home
there; open the p2p port between the machines.`,
		Args: usageArgs(1, "the number of validators N"),
		RunE: func(c *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 || n > 64 {
				return &exitError{exitUsage, fmt.Errorf("validators %q: want 1..64", args[0])}
			}
			if home == "" {
				return &exitError{exitUsage, errors.New("testnet needs --home DIR")}
			}
			home, _ = filepath.Abs(home)
			dirs := make([]string, n)
			for i := range dirs {
				dirs[i] = filepath.Join(home, fmt.Sprintf("v%d", i))
			}
			if chainID == "" {
				if chainID, err = genesisChainID(dirs[0]); err != nil {
					return err
				}
				if chainID == "" {
					chainID = newChainID()
				}
			}
			if len(hosts) > 0 && len(hosts) != n {
				return &exitError{exitUsage, fmt.Errorf("--hosts names %d machines for %d validators", len(hosts), n)}
			}
			if err := engine.InitTestnet(dirs, engine.TestnetOptions{ChainID: chainID, Host: host, Hosts: hosts, P2PPort: p2pPort, Timing: timing}); err != nil {
				return err
			}
			out := c.OutOrStdout()
			fmt.Fprintf(out, "chain %s: %d validators\n", chainID, n)
			for i, d := range dirs {
				if len(hosts) > 0 {
					fmt.Fprintf(out, "  on %s: zos chain run --home %s (copy %s there)\n", hosts[i], d, d)
					continue
				}
				fmt.Fprintf(out, "  zos chain run --home %s --listen 127.0.0.1:%d\n", d, 8090+i)
			}
			return nil
		},
	}
	c.Flags().StringVar(&home, "home", "", "the directory that holds the validators' homes")
	c.Flags().StringVar(&chainID, "chain-id", "", "the chain's name (default: a new random one)")
	c.Flags().StringVar(&host, "host", "127.0.0.1", "the address the validators listen on and dial each other at (all on this machine)")
	c.Flags().StringSliceVar(&hosts, "hosts", nil, "one machine per validator: the addresses or names they are reached at, in order")
	c.Flags().IntVar(&p2pPort, "p2p-port", 26656, "the peer-to-peer port of validators on --hosts")
	c.Flags().DurationVar(&timing.BlockTime, "block-time", 0, "pause after each block (default 500ms)")
	c.Flags().DurationVar(&timing.RoundTimeout, "round-timeout", 0, "wait for a proposal before moving to the next round (default 1s)")
	return c
}

func chainRunCmd() *cobra.Command {
	var home, listen, p2p, rpc, level string
	var wait time.Duration
	c := &cobra.Command{
		Use:   "run [--home DIR] [--listen ADDR]",
		Short: "Run the validator with the ledger, and serve the chain API and page",
		Long: `Run the validator whose home is DIR (zos chain init) in this process, over the
ledger in DIR/ledger.db, and serve the chain API (/v1/...) and the web page
that lists twins, nodes and contracts on --listen. At start the ledger
catches up with the blocks stored in DIR (a deleted ledger.db is rebuilt from
them). SIGTERM or Ctrl-C stops it cleanly.`,
		Args: usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return &exitError{exitUsage, fmt.Errorf("--log-level: %w", err)}
			}
			log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
			home, _ = filepath.Abs(home)
			if id, err := genesisChainID(home); err != nil {
				return err
			} else if id == "" {
				return &exitError{exitUsage, fmt.Errorf("%s is not a validator's home: run 'zos chain init --home %s' first", home, home)}
			}
			ctx := c.Context()
			// Listen first: a taken port fails before the chain starts.
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			defer ln.Close()
			app, err := ledger.Open(filepath.Join(home, "ledger.db"))
			if err != nil {
				return err
			}
			defer app.Close()
			n, err := engine.Start(ctx, home, app, engine.Options{Logger: log, P2PListen: p2p, RPCListen: rpc})
			if err != nil {
				return err
			}
			defer n.Stop()
			srv := &http.Server{
				Handler:           ledgerapi.New(n, ledgerapi.Options{Logger: log.With("part", "api"), CommitWait: wait}),
				ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			}
			go func() {
				<-ctx.Done()
				// Posts in flight wait for their blocks; give them a
				// moment, then cut them: their clients look the
				// transactions up by hash.
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if srv.Shutdown(sctx) != nil {
					srv.Close()
				}
			}()
			log.Info("chain API serving", "addr", ln.Addr().String(), "home", home, "chain", app.ChainID(), "height", n.Height())
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			log.Info("chain stopping")
			return nil
		},
	}
	c.Flags().StringVar(&home, "home", defaultChainHome, "the validator's directory (zos chain init)")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8090", "address of the chain API and page")
	c.Flags().StringVar(&p2p, "p2p", "", "override config.toml's peer-to-peer listen address (tcp://HOST:PORT)")
	c.Flags().StringVar(&rpc, "rpc", "", `override config.toml's CometBFT RPC listen address ("none": off; the chain API does not need it)`)
	c.Flags().DurationVar(&wait, "commit-wait", 0, "how long POST /v1/tx waits for the block before answering 504 (default 30s)")
	c.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	return c
}

func chainStatusCmd() *cobra.Command {
	var f chainFlags
	c := &cobra.Command{
		Use:   "status [--chain URL] [--json]",
		Short: "Print the chain's id, height, app hash and validators",
		Args:  usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client()
			if err != nil {
				return err
			}
			st, err := cl.Status(c.Context())
			if err != nil {
				return chainErr(cl, err)
			}
			out := c.OutOrStdout()
			if f.json {
				return printJSON(out, st)
			}
			fmt.Fprintf(out, "chain %s at height %d (%s)\napp hash %s\n", st.Chain, st.Height, st.Time.UTC().Format(time.RFC3339), st.AppHash)
			fmt.Fprintf(out, "validator %s, %d peers", st.Node, st.Peers)
			if st.CatchingUp {
				fmt.Fprint(out, ", catching up")
			}
			fmt.Fprintf(out, "\n%d validators:\n", len(st.Validators))
			for _, v := range st.Validators {
				fmt.Fprintf(out, "  %s power %d\n", v.Address, v.Power)
			}
			return nil
		},
	}
	f.addRead(c)
	return c
}

// printResult prints what a write did: the id of what it made or touched
// on stdout (scripts read it), or the whole result as JSON.
func printResult(w io.Writer, f *chainFlags, r ledgerclient.Result, id string) error {
	if f.json {
		return printJSON(w, map[string]any{"id": id, "result": r})
	}
	_, err := fmt.Fprintln(w, id)
	return err
}

func chainTwinCmd() *cobra.Command {
	c := &cobra.Command{Use: "twin", Short: "Create twins (identities) on the ledger"}
	var f chainFlags
	create := &cobra.Command{
		Use:   "create --key K",
		Short: "Register K's public key as a new twin; print its id",
		Long: `Register the public key of the secret key file K as a new twin, signed by K
itself (proof that you hold it). Prints the new twin's id. A key can be a
twin's only once, ever.`,
		Args: usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			sec, err := f.secret()
			if err != nil {
				return err
			}
			cl, err := f.client()
			if err != nil {
				return err
			}
			r, err := submit(c.Context(), cl, ledger.Signer{Secret: sec}, func(string, uint64) (ledger.Body, error) {
				return &ledger.TwinCreate{}, nil
			})
			if err != nil {
				return err
			}
			return printResult(c.OutOrStdout(), &f, r, r.Event("twin.created"))
		},
	}
	f.addWrite(create, "")
	c.AddCommand(create)
	return c
}

// parseCPU reads cores ("4", "0.5") or millicores ("2500m").
func parseCPU(s string) (uint64, error) {
	if m, ok := strings.CutSuffix(s, "m"); ok {
		n, err := strconv.ParseUint(m, 10, 64)
		if err == nil && n >= 1 && n <= ledger.MaxCPU {
			return n, nil
		}
	} else if v, err := strconv.ParseFloat(s, 64); err == nil && v*1000 >= 1 && v*1000 <= ledger.MaxCPU {
		return uint64(v * 1000), nil
	}
	return 0, fmt.Errorf("--cpu %q: want cores (4, 0.5) or millicores (2500m)", s)
}

func chainNodeCmd() *cobra.Command {
	c := &cobra.Command{Use: "node", Short: "Register nodes (machines) on the ledger"}
	var f chainFlags
	var nodeKeyFile, endpoint, cpu, memory, disk string
	register := &cobra.Command{
		Use:   "register --key OWNER --twin ID --node-key FILE --endpoint URL --cpu N --memory SIZE --disk SIZE",
		Short: "Register a node owned by your twin; print its id",
		Long: `Register a node owned by twin ID (signed with its key OWNER). The node's
identity is its own ed25519 key; the ledger wants proof that whoever
registers it holds that key, so --node-key is the node's SECRET key file:
DATA/node.key of 'zos node run' (default ` + defaultNodeData + `/node.key; 'zos node id'
prints its public half). Run this on the node's machine, or copy the proof's
work there: the secret never leaves this command. --endpoint is the node's
API (http(s)://host:port), --cpu in cores or millicores (2500m), --memory
and --disk as sizes (16G, 1.5T).`,
		Args: usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			if f.twin == 0 || endpoint == "" || cpu == "" || memory == "" || disk == "" {
				return &exitError{exitUsage, errors.New("register needs --twin, --endpoint, --cpu, --memory and --disk")}
			}
			sec, err := f.secret()
			if err != nil {
				return err
			}
			nodeSec, err := key.Load(nodeKeyFile)
			if err != nil {
				return fmt.Errorf("--node-key: %w", err)
			}
			capa := ledger.Capacity{}
			if capa.CPU, err = parseCPU(cpu); err != nil {
				return &exitError{exitUsage, err}
			}
			for _, s := range []struct {
				flag, v string
				to      *uint64
			}{{"--memory", memory, &capa.Memory}, {"--disk", disk, &capa.Disk}} {
				n, err := parseSize(s.v)
				if err != nil {
					return &exitError{exitUsage, fmt.Errorf("%s: %w", s.flag, err)}
				}
				*s.to = uint64(n)
			}
			cl, err := f.client()
			if err != nil {
				return err
			}
			r, err := submit(c.Context(), cl, ledger.Signer{Secret: sec, Twin: f.twin}, func(chain string, nonce uint64) (ledger.Body, error) {
				return &ledger.NodeRegister{
					Key:      nodeSec.Public(),
					Proof:    ledger.KeyProof(nodeSec, chain, ledger.TypeNodeRegister, f.twin, nonce),
					Capacity: capa, Endpoint: endpoint,
				}, nil
			})
			if err != nil {
				return err
			}
			return printResult(c.OutOrStdout(), &f, r, r.Event("node.registered"))
		},
	}
	f.addWrite(register, "the owner's twin id")
	register.Flags().StringVar(&nodeKeyFile, "node-key", filepath.Join(defaultNodeData, "node.key"), "the node's secret key file (DATA/node.key of zos node run)")
	register.Flags().StringVar(&endpoint, "endpoint", "", "the node's API URL")
	register.Flags().StringVar(&cpu, "cpu", "", "CPU offered: cores or millicores (2500m)")
	register.Flags().StringVar(&memory, "memory", "", "memory offered (16G)")
	register.Flags().StringVar(&disk, "disk", "", "disk offered (1T)")
	c.AddCommand(register)
	return c
}

func chainContractCmd() *cobra.Command {
	c := &cobra.Command{Use: "contract", Short: "Create, approve, update, cancel and show deployment contracts"}
	c.AddCommand(contractCreateCmd(), contractApproveCmd(), contractUpdateCmd(), contractCancelCmd(), contractShowCmd())
	return c
}

// specSigner is the --twin of a command that sends a spec: by default the
// spec's owner, the only twin the ledger lets send it.
func specSigner(f *chainFlags, d *spec.Deployment) uint32 {
	if f.twin != 0 {
		return f.twin
	}
	return d.Owner
}

func contractCreateCmd() *cobra.Command {
	var f chainFlags
	var node uint32
	c := &cobra.Command{
		Use:   "create SPEC --node N --key K [--twin ID]",
		Short: "Ask node N to run a deployment; print the contract's id",
		Long: `Create a contract asking node N to run the deployment SPEC (YAML or JSON, as
for zos deploy), signed by the spec's owner (--twin, default the spec's
owner, with its key K). The spec's signatures (zos sign) travel with it as its
first approvals: the contract is active at once when they meet its signature
requirement, pending otherwise until the other twins approve it
(zos chain contract approve).`,
		Args: usageArgs(1, "one SPEC file"),
		RunE: func(c *cobra.Command, args []string) error {
			if node == 0 {
				return &exitError{exitUsage, errors.New("create needs --node N")}
			}
			d, err := readSpec(args[0])
			if err != nil {
				return &exitError{exitUsage, err}
			}
			sec, err := f.secret()
			if err != nil {
				return err
			}
			cl, err := f.client()
			if err != nil {
				return err
			}
			r, err := submit(c.Context(), cl, ledger.Signer{Secret: sec, Twin: specSigner(&f, d)}, func(string, uint64) (ledger.Body, error) {
				return &ledger.ContractCreate{Node: node, Spec: d}, nil
			})
			if err != nil {
				return err
			}
			return contractOutcome(c, &f, cl, r, r.Event("contract.created"))
		},
	}
	f.addWrite(c, "the twin that signs (default: the spec's owner)")
	c.Flags().Uint32Var(&node, "node", 0, "the node that is to run it")
	return c
}

// contractOutcome prints the id of the contract a write touched, and its
// state on stderr.
func contractOutcome(c *cobra.Command, f *chainFlags, cl *ledgerclient.Client, r ledgerclient.Result, id string) error {
	if err := printResult(c.OutOrStdout(), f, r, id); err != nil {
		return err
	}
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return nil
	}
	cv, err := cl.Contract(c.Context(), n)
	if err != nil {
		return nil // the write is done; this was only a summary
	}
	chk, err := ledgerclient.Approvals(c.Context(), cl, &cv)
	if err != nil {
		return nil
	}
	fmt.Fprintf(c.ErrOrStderr(), "contract %d: %s\n", cv.ID, stateLine(&cv, chk))
	return nil
}

// stateLine is a contract's state and how far its approvals are.
func stateLine(cv *ledger.ContractView, chk spec.Result) string {
	s := cv.State
	switch {
	case cv.State == ledger.StatePending:
		s += fmt.Sprintf(", weight %d of %d", chk.Weight, chk.WeightRequired)
		if len(chk.Missing) > 0 {
			s += ", missing required " + twinList(chk.Missing)
		}
	case cv.State == ledger.StateActive && cv.Revision != nil:
		s += fmt.Sprintf(", revision to version %d pending", cv.Revision.Version)
	}
	if len(cv.CancelVotes) > 0 && cv.State == ledger.StateActive {
		s += ", cancel votes of " + twinList(cv.CancelVotes)
	}
	return s
}

func twinList(ids []uint32) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = "twin " + strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(parts, ", ")
}

func contractApproveCmd() *cobra.Command {
	var f chainFlags
	c := &cobra.Command{
		Use:   "approve ID --key K --twin T",
		Short: "Approve a pending contract (or an active one's pending revision) as twin T",
		Long: `Approve contract ID as twin T: fetch the spec waiting for approvals (the
contract's while it is pending, its revision's while an active contract has
one), check that its challenge is the one the ledger recorded, sign it with K
(as zos sign does) and send the signature. The contract turns active in the
block where its requirement is met.`,
		Args: usageArgs(1, "a contract ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := idArg(args[0], "contract", 1<<64-1)
			if err != nil {
				return err
			}
			if f.twin == 0 {
				return &exitError{exitUsage, errors.New("approve needs --twin T")}
			}
			sec, err := f.secret()
			if err != nil {
				return err
			}
			cl, err := f.client()
			if err != nil {
				return err
			}
			ctx := c.Context()
			cv, err := cl.Contract(ctx, id)
			if err != nil {
				return chainErr(cl, err)
			}
			var d *spec.Deployment
			var want = cv.Digest
			switch {
			case cv.State == ledger.StatePending:
				d, err = cv.Deployment()
			case cv.State == ledger.StateActive && cv.Revision != nil:
				d, err = cv.Revision.Deployment()
				want = cv.Revision.Digest
			default:
				return fmt.Errorf("contract %d is %s with no pending revision: nothing to approve", id, cv.State)
			}
			if err != nil {
				return err
			}
			if ch, err := d.Challenge(); err != nil || ch != want {
				return fmt.Errorf("contract %d: the spec's challenge %s is not the recorded %s: refusing to sign", id, ch, want)
			}
			tw, err := cl.Twin(ctx, f.twin)
			if err != nil {
				return chainErr(cl, fmt.Errorf("twin %d: %w", f.twin, err))
			}
			if tw.Key != sec.Public() {
				return &exitError{exitSignature, fmt.Errorf("%s holds %s, not twin %d's key %s", f.keyFile, sec.Public(), f.twin, tw.Key)}
			}
			sig, err := spec.Sign(d, sec, f.twin)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			r, err := submit(ctx, cl, ledger.Signer{Secret: sec, Twin: f.twin}, func(string, uint64) (ledger.Body, error) {
				return &ledger.ContractApprove{Contract: id, Approval: sig}, nil
			})
			if err != nil {
				return err
			}
			return contractOutcome(c, &f, cl, r, args[0])
		},
	}
	f.addWrite(c, "the approving twin")
	return c
}

func contractUpdateCmd() *cobra.Command {
	var f chainFlags
	c := &cobra.Command{
		Use:   "update ID SPEC --key K [--twin ID]",
		Short: "Propose a higher version of a contract's spec (its owner only)",
		Long: `Propose SPEC, a higher version of contract ID's deployment, as its owner. A
pending contract's spec is replaced (approvals start again); an active
contract keeps running its spec until the new one's own approvals meet its
requirement. SPEC's signatures travel with it as its first approvals.`,
		Args: usageArgs(2, "a contract ID and a SPEC file"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := idArg(args[0], "contract", 1<<64-1)
			if err != nil {
				return err
			}
			d, err := readSpec(args[1])
			if err != nil {
				return &exitError{exitUsage, err}
			}
			sec, err := f.secret()
			if err != nil {
				return err
			}
			cl, err := f.client()
			if err != nil {
				return err
			}
			r, err := submit(c.Context(), cl, ledger.Signer{Secret: sec, Twin: specSigner(&f, d)}, func(string, uint64) (ledger.Body, error) {
				return &ledger.ContractUpdate{Contract: id, Spec: d}, nil
			})
			if err != nil {
				return err
			}
			return contractOutcome(c, &f, cl, r, args[0])
		},
	}
	f.addWrite(c, "the twin that signs (default: the spec's owner)")
	return c
}

func contractCancelCmd() *cobra.Command {
	var f chainFlags
	c := &cobra.Command{
		Use:   "cancel ID --key K --twin T",
		Short: "Cancel a pending contract (its owner), or vote to cancel an active one",
		Long: `Cancel contract ID. A pending contract is cancelled by its owner alone. An
active one is cancelled only when the cancel votes of the twins its
requirement lists meet that requirement, as its approvals did: this records
T's vote. An unlisted twin is refused.`,
		Args: usageArgs(1, "a contract ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := idArg(args[0], "contract", 1<<64-1)
			if err != nil {
				return err
			}
			if f.twin == 0 {
				return &exitError{exitUsage, errors.New("cancel needs --twin T")}
			}
			sec, err := f.secret()
			if err != nil {
				return err
			}
			cl, err := f.client()
			if err != nil {
				return err
			}
			r, err := submit(c.Context(), cl, ledger.Signer{Secret: sec, Twin: f.twin}, func(string, uint64) (ledger.Body, error) {
				return &ledger.ContractCancel{Contract: id}, nil
			})
			if err != nil {
				return err
			}
			return contractOutcome(c, &f, cl, r, args[0])
		},
	}
	f.addWrite(c, "the cancelling twin")
	return c
}

// approvalsJSON is a requirement's state for contract show --json.
type approvalsJSON struct {
	Met            bool          `json:"met"`
	Weight         uint64        `json:"weight"`
	WeightRequired uint64        `json:"weight_required"`
	Missing        []uint32      `json:"missing"`
	Requests       []requestJSON `json:"requests"`
	Ignored        []ignoredJSON `json:"ignored"`
}

func toApprovalsJSON(r spec.Result) approvalsJSON {
	j := approvalsJSON{Met: r.Met, Weight: r.Weight, WeightRequired: r.WeightRequired,
		Missing: r.Missing, Requests: []requestJSON{}, Ignored: []ignoredJSON{}}
	if j.Missing == nil {
		j.Missing = []uint32{}
	}
	for _, q := range r.Requests {
		j.Requests = append(j.Requests, requestJSON{q.Twin, q.Weight, q.Required, q.Signed})
	}
	for _, ig := range r.Ignored {
		j.Ignored = append(j.Ignored, ignoredJSON(ig))
	}
	return j
}

func contractShowCmd() *cobra.Command {
	var f chainFlags
	c := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "Print a contract: state, approvals, weight reached and required, missing signers",
		Long: `Print contract ID. Its approvals are checked here, as its node checks them,
against the keys the ledger holds for the twins its requirement lists.`,
		Args: usageArgs(1, "a contract ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := idArg(args[0], "contract", 1<<64-1)
			if err != nil {
				return err
			}
			cl, err := f.client()
			if err != nil {
				return err
			}
			ctx := c.Context()
			cv, err := cl.Contract(ctx, id)
			if err != nil {
				return chainErr(cl, err)
			}
			chk, err := ledgerclient.Approvals(ctx, cl, &cv)
			if err != nil {
				return chainErr(cl, err)
			}
			var rev *spec.Result
			if cv.Revision != nil {
				r, err := ledgerclient.Approvals(ctx, cl, &ledger.ContractView{Spec: cv.Revision.Spec, Approvals: cv.Revision.Approvals})
				if err != nil {
					return chainErr(cl, err)
				}
				rev = &r
			}
			out := c.OutOrStdout()
			if f.json {
				j := map[string]any{"contract": cv, "approvals": toApprovalsJSON(chk), "revision_approvals": nil}
				if rev != nil {
					j["revision_approvals"] = toApprovalsJSON(*rev)
				}
				return printJSON(out, j)
			}
			printContract(out, &cv, chk, rev)
			return nil
		},
	}
	f.addRead(c)
	return c
}

func printContract(w io.Writer, cv *ledger.ContractView, chk spec.Result, rev *spec.Result) {
	fmt.Fprintf(w, "contract %d: %s\n", cv.ID, cv.State)
	fmt.Fprintf(w, "  owner twin %d, node %d, version %d\n", cv.Owner, cv.Node, cv.Version)
	fmt.Fprintf(w, "  challenge %s\n", cv.Digest)
	fmt.Fprintf(w, "  created at height %d (%s), updated at %d", cv.Created.Height, cv.Created.Time.UTC().Format(time.RFC3339), cv.Updated.Height)
	if cv.Since > 0 {
		fmt.Fprintf(w, ", active since %d", cv.Since)
	}
	fmt.Fprintln(w)
	printRequirement(w, "approvals", chk)
	if cv.Revision != nil && rev != nil {
		fmt.Fprintf(w, "  revision to version %d (challenge %s), proposed at height %d:\n", cv.Revision.Version, cv.Revision.Digest, cv.Revision.Created.Height)
		printRequirement(w, "revision approvals", *rev)
	}
	if len(cv.CancelVotes) > 0 {
		fmt.Fprintf(w, "  cancel votes: %s\n", twinList(cv.CancelVotes))
	}
	if r := cv.Report; r != nil {
		fmt.Fprintf(w, "  node report: %s, version %d, at height %d", r.State, r.Version, r.At.Height)
		if r.Detail != "" {
			fmt.Fprintf(w, ": %q", r.Detail)
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "  node report: none yet")
	}
}

func printRequirement(w io.Writer, what string, r spec.Result) {
	verdict := "met"
	if !r.Met {
		verdict = "not met"
	}
	fmt.Fprintf(w, "  %s: weight %d of %d required, %s\n", what, r.Weight, r.WeightRequired, verdict)
	for _, q := range r.Requests {
		req, st := "", "not approved"
		if q.Required {
			req = " required"
		}
		if q.Signed {
			st = "approved"
		}
		fmt.Fprintf(w, "    twin %d weight %d%s: %s\n", q.Twin, q.Weight, req, st)
	}
	if len(r.Missing) > 0 {
		fmt.Fprintf(w, "    missing required: %s\n", twinList(r.Missing))
	}
	for _, ig := range r.Ignored {
		fmt.Fprintf(w, "    approval of twin %d does not count: %s\n", ig.Twin, ig.Reason)
	}
}

func chainTxCmd() *cobra.Command {
	var f chainFlags
	c := &cobra.Command{
		Use:   "tx HASH [--json]",
		Short: "Look up a committed transaction by its hash (a write whose outcome was unknown)",
		Args:  usageArgs(1, "a transaction HASH (64 hex digits)"),
		RunE: func(c *cobra.Command, args []string) error {
			hash, err := hex.DecodeString(args[0])
			if err != nil || len(hash) != 32 {
				return &exitError{exitUsage, fmt.Errorf("hash %q: want 64 hex digits", args[0])}
			}
			cl, err := f.client()
			if err != nil {
				return err
			}
			r, err := cl.Tx(c.Context(), hash)
			if errors.Is(err, ledger.ErrNotFound) {
				return fmt.Errorf("transaction %X is in no block (yet): %w", hash, err)
			}
			if err != nil {
				return chainErr(cl, err)
			}
			out := c.OutOrStdout()
			if f.json {
				return printJSON(out, r)
			}
			if r.Code == 0 {
				fmt.Fprintf(out, "applied at height %d\n", r.Height)
			} else {
				fmt.Fprintf(out, "refused at height %d: %v\n", r.Height, &ledgerclient.RefusedError{Code: r.Code, Log: r.Log})
			}
			for _, e := range r.Events {
				fmt.Fprintf(out, "  %s %s\n", e.Type, e.ID)
			}
			return nil
		},
	}
	f.addRead(c)
	return c
}

func chainTwinsCmd() *cobra.Command {
	var f chainFlags
	c := &cobra.Command{
		Use:   "twins [--json]",
		Short: "List the ledger's twins",
		Args:  usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client()
			if err != nil {
				return err
			}
			ts, err := cl.Twins(c.Context())
			if err != nil {
				return chainErr(cl, err)
			}
			if f.json {
				return printJSON(c.OutOrStdout(), ts)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TWIN\tKEY\tKEYS\tNONCE")
			for _, t := range ts {
				fmt.Fprintf(tw, "%d\t%s\t%d\t%d\n", t.ID, t.Key, len(t.Keys), t.Nonce)
			}
			return tw.Flush()
		},
	}
	f.addRead(c)
	return c
}

func chainNodesCmd() *cobra.Command {
	var f chainFlags
	c := &cobra.Command{
		Use:   "nodes [--json]",
		Short: "List the ledger's nodes",
		Args:  usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client()
			if err != nil {
				return err
			}
			ns, err := cl.Nodes(c.Context())
			if err != nil {
				return chainErr(cl, err)
			}
			if f.json {
				return printJSON(c.OutOrStdout(), ns)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tOWNER\tENDPOINT\tCPU\tMEMORY\tDISK\tKEY")
			for _, n := range ns {
				fmt.Fprintf(tw, "%d\t%d\t%s\t%dm\t%s\t%s\t%s\n", n.ID, n.Owner, n.Endpoint, n.CPU, human(int64(n.Memory)), human(int64(n.Disk)), n.Key)
			}
			return tw.Flush()
		},
	}
	f.addRead(c)
	return c
}

func chainContractsCmd() *cobra.Command {
	var f chainFlags
	var filter ledger.ContractFilter
	c := &cobra.Command{
		Use:   "contracts [--node N] [--owner T] [--state S] [--json]",
		Short: "List contracts, filtered by node, owner or state",
		Args:  usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			switch filter.State {
			case "", ledger.StatePending, ledger.StateActive, ledger.StateCancelled:
			default:
				return &exitError{exitUsage, fmt.Errorf("--state %q: want pending, active or cancelled", filter.State)}
			}
			cl, err := f.client()
			if err != nil {
				return err
			}
			ctx := c.Context()
			cs, err := cl.Contracts(ctx, filter)
			if err != nil {
				return chainErr(cl, err)
			}
			if f.json {
				return printJSON(c.OutOrStdout(), cs)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CONTRACT\tOWNER\tNODE\tSTATE\tVERSION\tAPPROVALS\tWEIGHT\tREPORT")
			for i := range cs {
				cv := &cs[i]
				weight := "?"
				if chk, err := ledgerclient.Approvals(ctx, cl, cv); err == nil {
					weight = fmt.Sprintf("%d/%d", chk.Weight, chk.WeightRequired)
				}
				report := "-"
				if r := cv.Report; r != nil {
					report = fmt.Sprintf("%s v%d @%d", r.State, r.Version, r.At.Height)
				}
				fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n", cv.ID, cv.Owner, cv.Node, cv.State, cv.Version, len(cv.Approvals), weight, report)
			}
			return tw.Flush()
		},
	}
	f.addRead(c)
	c.Flags().Uint32Var(&filter.Node, "node", 0, "only contracts of this node")
	c.Flags().Uint32Var(&filter.Owner, "owner", 0, "only contracts of this owner twin")
	c.Flags().StringVar(&filter.State, "state", "", "only contracts in this state: pending, active or cancelled")
	return c
}
