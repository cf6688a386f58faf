package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/ledger/ledgerclient"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/network"
	"github.com/zosgrid/zos/internal/node"
	"github.com/zosgrid/zos/internal/runtime"
)

const defaultNodeData = "/var/lib/zos/node"

func nodeCmd() *cobra.Command {
	c := &cobra.Command{Use: "node", Short: "Run a node: signed deployments of isolated containers (docs/NODE.md)"}
	c.AddCommand(nodeRunCmd(), nodeTwinCmd(), nodeIDCmd(), nodeHistoryCmd())
	return c
}

// nodeKey loads the node's identity from path (default DATA/node.key),
// creating it on first use. A key kept outside the data directory
// (--key) survives a wiped directory: the node then rebuilds its
// workloads from the ledger under the same identity.
func nodeKey(data, path string, create bool) (key.Secret, error) {
	if path == "" {
		path = filepath.Join(data, "node.key")
	}
	s, err := key.Load(path)
	if err == nil || !create || !errors.Is(err, os.ErrNotExist) {
		return s, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return s, err
	}
	if s, err = key.Generate(); err != nil {
		return s, err
	}
	return s, s.Save(path)
}

func twinsPath(data string) string { return filepath.Join(data, "twins") }

func nodeRunCmd() *cobra.Command {
	var data, listen, gatewayAddr, cache, level, prefix, keyFile, chain string
	var hosts []string
	var interval, chainPoll time.Duration
	c := &cobra.Command{
		Use:   "run [--data DIR] [--listen ADDR] [--gateway ADDR]",
		Short: "Run the node agent: the signed API and the reconcile loop (root)",
		Long: `Run the node agent. It creates the node's ed25519 identity in DIR on first
start, serves the node API on --listen (every request signed by a registered
twin: 'zos node twin add'), and drives the accepted deployments: images
mounted lazily from their hubs and verified against the pinned digest,
containers (runc's libcontainer) with cgroup limits, private networks,
volumes and the HTTP gateway on --gateway. Workloads keep running when the
agent stops; the next agent finds them again.

With --chain (on by default) it also watches the grid ledger: once its owner
registered it ('zos chain node register'), it runs the contracts assigned to
it as soon as their approvals meet their requirement, removes cancelled ones
and records their state on the ledger, signed with its key. Started with the
same --key on an empty DIR, it rebuilds every active contract's workloads
from the ledger (volumes come back empty). See docs/NODE.md, "Ledger".`,
		Args: usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return &exitError{exitUsage, fmt.Errorf("--log-level: %w", err)}
			}
			log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
			if os.Geteuid() != 0 {
				return errors.New("the node runs containers, mounts and networks: run it as root")
			}
			data, _ = filepath.Abs(data)
			sec, err := nodeKey(data, keyFile, true)
			if err != nil {
				return err
			}
			rt, err := runtime.Open(runtime.Options{Root: filepath.Join(data, "runtime"), CgroupParent: "/" + prefix, Logger: log.With("part", "runtime")})
			if err != nil {
				return err
			}
			nw, err := network.New(network.Options{Prefix: prefix, Logger: log.With("part", "network")})
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			opts := node.Options{
				Data: data, Key: sec, Twins: node.TwinsFile(twinsPath(data)),
				Runtime: rt, Network: nw, Mounter: mounter{self: self},
				Cache: cache, Interval: interval, Logger: log, LedgerInterval: chainPoll,
				KeyFile: keyFile,
			}
			if keyFile == "" {
				opts.KeyFile = filepath.Join(data, "node.key")
			}
			if chain != "none" && chain != "" {
				lc, err := ledgerclient.New(chain, nil)
				if err != nil {
					return &exitError{exitUsage, fmt.Errorf("--chain: %w", err)}
				}
				opts.Ledger = chainLedger{lc}
			}
			ctx := c.Context()
			var gw *network.Gateway
			if gatewayAddr != "" {
				gw = network.NewGateway(nw, log.With("part", "gateway"))
				opts.Gateway = gw
				gln, err := net.Listen("tcp", gatewayAddr)
				if err != nil {
					return fmt.Errorf("--gateway: %w", err)
				}
				gsrv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second}
				go gsrv.Serve(gln)
				defer gsrv.Close()
				log.Info("gateway serving", "addr", gln.Addr().String())
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			if len(hosts) == 0 {
				hosts = listenHosts(listen, ln.Addr())
			}
			opts.Hosts = hosts
			a, err := node.New(opts)
			if err != nil {
				return err
			}
			defer a.Close()
			srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				srv.Shutdown(sctx)
			}()
			go a.Run(ctx)
			log.Info("node serving", "addr", ln.Addr().String(), "key", sec.Public().String(), "data", data, "hosts", hosts, "chain", chain)
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&data, "data", defaultNodeData, "the node's directory: identity, state, images, volumes, logs")
	c.Flags().StringVar(&keyFile, "key", "", "the node's identity (created if missing; default DIR/node.key): keep it outside DIR to survive a wiped DIR")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8070", "address of the node API")
	c.Flags().StringVar(&gatewayAddr, "gateway", "127.0.0.1:8081", "address of the HTTP gateway (\"\" for none)")
	c.Flags().StringVar(&cache, "cache", "", "chunk cache shared by the node's mounts (default DIR/cache)")
	c.Flags().StringArrayVar(&hosts, "host", nil, "a HOST[:PORT] clients address the node by; requests signed for others are refused (repeatable; replaces the default: the listen address, or for a wildcard every address of the machine and its host name)")
	c.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between reconcile passes")
	c.Flags().StringVar(&chain, "chain", envOr("ZOS_CHAIN", chainAPIDefault), "the grid ledger's chain API, watched for this node's contracts (\"none\": do not watch; default $ZOS_CHAIN, else where 'zos chain run' listens)")
	c.Flags().DurationVar(&chainPoll, "chain-poll", node.DefaultLedgerInterval, "time between reads of the ledger")
	c.Flags().StringVar(&prefix, "prefix", "zos", "names of this agent's links, namespaces, nftables table and cgroup parent (/PREFIX): a second agent on one machine (a test, a benchmark) needs its own, or each removes the other's as orphans")
	c.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	return c
}

// chainLedger is the ledger's HTTP client as the node's watcher wants it.
type chainLedger struct{ c *ledgerclient.Client }

var _ node.Ledger = chainLedger{}

func (l chainLedger) ChainID(ctx context.Context) (string, error) {
	i, err := l.c.Info(ctx)
	return i.Chain, err
}

func (l chainLedger) Nodes(ctx context.Context) ([]ledger.NodeView, error) { return l.c.Nodes(ctx) }

func (l chainLedger) Twin(ctx context.Context, id uint32) (ledger.TwinView, error) {
	return l.c.Twin(ctx, id)
}

func (l chainLedger) Contracts(ctx context.Context, f ledger.ContractFilter) ([]ledger.ContractView, error) {
	return l.c.Contracts(ctx, f)
}

func (l chainLedger) Submit(ctx context.Context, tx []byte) error {
	_, err := l.c.Submit(ctx, tx)
	return err
}

// mounter mounts images with this binary's `flist mount`, in server
// processes of their own that outlive the agent, and the containers'
// roots as overlays over them (the kernel keeps those without us).
type mounter struct{ self string }

func (m mounter) MountImage(ctx context.Context, mt node.Mount) error {
	args := []string{"flist", "mount", mt.Flist, mt.Dir, "--cache", mt.Cache, "--log", mt.Log, "--nodev"}
	for _, s := range mt.Stores {
		args = append(args, "--store", s)
	}
	if mt.Bundle != "" {
		args = append(args, "--bundle", mt.Bundle)
	}
	out, err := exec.CommandContext(ctx, m.self, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (m mounter) Overlay(_ context.Context, mt node.Mount) error {
	b, err := os.ReadFile(mt.Flist)
	if err != nil {
		return err
	}
	r, err := flist.Open(b)
	if err != nil {
		return err
	}
	return mount.Overlay(mt.Dir, mt.Image, mt.Layer, r, mount.OverlayOptions{Name: "zos:" + r.Digest().Short(), Suid: true})
}

func (m mounter) Alive(dir string, points map[string]bool) (uint64, bool) {
	return node.MountAlive(dir, points)
}

func (m mounter) StackedOn(layer string) (uint64, bool) { return mount.StackedOn(layer) }

func (m mounter) Unmount(_ context.Context, dir string) error {
	err := mount.Unmount(dir, false)
	if errors.Is(err, syscall.EBUSY) {
		err = mount.Unmount(dir, true)
	}
	if err != nil && !errors.Is(err, mount.ErrNotMounted) && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func nodeTwinCmd() *cobra.Command {
	var data string
	c := &cobra.Command{
		Use:   "twin",
		Short: "The twins (identities) this node accepts requests from",
	}
	add := &cobra.Command{
		Use:   "add ID KEY|KEYFILE",
		Short: "Register twin ID's public key (ed25519:..., or a key file whose public half is taken)",
		Args:  usageArgs(2, "ID and KEY"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil || id == 0 {
				return &exitError{exitUsage, fmt.Errorf("twin id %q: want a number >= 1", args[0])}
			}
			k, err := key.ParsePublic(args[1])
			if err != nil {
				s, ferr := key.Load(args[1])
				if ferr != nil {
					return &exitError{exitUsage, fmt.Errorf("%q is neither a public key (%v) nor a key file (%v)", args[1], err, ferr)}
				}
				k = s.Public()
			}
			if err := node.TwinsFile(twinsPath(data)).Add(uint32(id), k); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "twin %d: %s\n", id, k)
			return nil
		},
	}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the registered twins",
		Args:  usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			b, err := os.ReadFile(twinsPath(data))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			c.OutOrStdout().Write(b)
			return nil
		},
	}
	c.PersistentFlags().StringVar(&data, "data", defaultNodeData, "the node's directory")
	c.AddCommand(add, ls)
	return c
}

func nodeIDCmd() *cobra.Command {
	var data, keyFile string
	c := &cobra.Command{
		Use:   "id",
		Short: "Print the node's public key (creating its identity if needed)",
		Args:  usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := nodeKey(data, keyFile, true)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), s.Public())
			return nil
		},
	}
	c.Flags().StringVar(&data, "data", defaultNodeData, "the node's directory")
	c.Flags().StringVar(&keyFile, "key", "", "the node's identity (default DIR/node.key)")
	return c
}

func nodeHistoryCmd() *cobra.Command {
	var data, nodeURL, keyFile string
	var asJSON bool
	var dep uint64
	c := &cobra.Command{
		Use:   "history [--data DIR] [--node URL] [--deployment ID] [--json]",
		Short: "Print the node's hash-chained history and verify the chain",
		Long: `Print every transition the node recorded (requested, verified, refused,
image fetched, mounted, started, exited, restarted, deleted, ...) and verify
the chain: each record's hash, its link to the record before, and the node's
signature. A changed, removed or inserted record is reported (exit 3). The
state file is read directly when the agent is stopped; while it runs, the
history is asked from its API (--node) with the node's own key.`,
		Args: usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			sec, err := nodeKey(data, keyFile, false)
			if err != nil {
				return fmt.Errorf("node identity in %s: %w", data, err)
			}
			var events []node.Event
			db, err := node.OpenDB(filepath.Join(data, "state.db"), sec, true, 200*time.Millisecond)
			if err == nil {
				events, err = db.History(0)
				db.Close()
			} else if errors.Is(err, node.ErrLocked) {
				err = nil
			}
			if events == nil && err == nil {
				cl, cerr := newNodeClient(nodeURL, sec)
				if cerr != nil {
					return cerr
				}
				events, err = cl.History(c.Context())
			}
			if err != nil {
				return err
			}
			n, verr := node.VerifyEvents(events, sec.Public())
			out := c.OutOrStdout()
			shown := events
			if dep != 0 {
				shown = nil
				for _, e := range events {
					if e.Deployment == dep {
						shown = append(shown, e)
					}
				}
			}
			if asJSON {
				if err := printJSON(out, map[string]any{"events": shown, "verified": n, "ok": verr == nil, "error": errString(verr)}); err != nil {
					return err
				}
			} else {
				for _, e := range shown {
					where := ""
					if e.Deployment != 0 {
						where = fmt.Sprintf(" deployment %d", e.Deployment)
						if e.Workload != "" {
							where += "/" + e.Workload
						}
					}
					fmt.Fprintf(out, "%6d %s %-16s%s %s\n", e.Seq, e.Time.Format(time.RFC3339), e.Kind, where, e.Detail)
				}
				if verr == nil {
					fmt.Fprintf(out, "chain verified: %d records, head %s\n", n, head(events))
				}
			}
			if verr != nil {
				return &exitError{exitSignature, verr}
			}
			return nil
		},
	}
	c.Flags().StringVar(&data, "data", defaultNodeData, "the node's directory")
	c.Flags().StringVar(&nodeURL, "node", "http://127.0.0.1:8070", "the running agent's API, when the state file is locked")
	c.Flags().StringVar(&keyFile, "key", "", "the node's identity (default DIR/node.key)")
	c.Flags().Uint64Var(&dep, "deployment", 0, "show only this deployment's records (the whole chain is verified)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func head(ev []node.Event) string {
	if len(ev) == 0 {
		return "(empty)"
	}
	return ev[len(ev)-1].Hash
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
