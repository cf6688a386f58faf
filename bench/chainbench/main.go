// Command chainbench measures the grid ledger on CometBFT: transactions
// per second and commit latency with 1 and with 4 validators, all in this
// process on loopback (internal/ledger/engine over internal/ledger.App),
// side by side in one run. It prints a markdown table; bench/chain.sh runs
// it.
//
// Each setting starts fresh validators (engine.InitTestnet, the default
// timing unless -block-time says otherwise), waits for the first block,
// then:
//   - idle latency: -idle transactions one at a time, each from submit
//     (Node.Broadcast: CheckTx, then waiting for the block) to committed;
//   - load: -txs transactions, -inflight at a time, submitted round-robin
//     to the validators; throughput is transactions committed over the
//     time from the first submit to the last commit, and each one's
//     latency is recorded.
//
// The transactions are twin.create, each signed by a fresh key (made
// before the clock starts): independent of each other, and checked like
// every ledger transaction (strict decoding, an ed25519 signature, a
// nonce), in CheckTx and again in FinalizeBlock on every validator.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/ledger/engine"
)

type result struct {
	validators int
	blockTime  time.Duration
	idle       []time.Duration
	load       []time.Duration
	refused    int
	firstErr   string
	tps        float64
	height     int64
	elapsed    time.Duration
}

func main() {
	vals := flag.String("validators", "1,4", "validator counts to measure, comma-separated")
	txs := flag.Int("txs", 2000, "transactions of the load phase")
	inflight := flag.Int("inflight", 200, "transactions in flight at once in the load phase")
	idle := flag.Int("idle", 20, "transactions of the idle-latency phase, one at a time")
	blockTime := flag.Duration("block-time", engine.DefaultBlockTime, "consensus timeout_commit")
	dir := flag.String("dir", "", "scratch directory (default: a temporary one, removed)")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "chainbench-")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	var results []result
	for _, v := range strings.Split(*vals, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			fail(fmt.Errorf("-validators: %q", v))
		}
		r, err := run(filepath.Join(*dir, fmt.Sprintf("v%d", n)), n, *txs, *inflight, *idle, *blockTime)
		if err != nil {
			fail(fmt.Errorf("%d validators: %w", n, err))
		}
		results = append(results, r)
	}
	report(results, *txs, *inflight)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "chainbench:", err)
	os.Exit(1)
}

func run(dir string, n, txs, inflight, idle int, blockTime time.Duration) (result, error) {
	res := result{validators: n, blockTime: blockTime}
	const chain = "chainbench"
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = filepath.Join(dir, fmt.Sprintf("val%d", i))
	}
	timing := engine.Timing{BlockTime: blockTime}
	if err := engine.InitTestnet(dirs, engine.TestnetOptions{ChainID: chain, Host: "127.0.0.1", Timing: timing}); err != nil {
		return res, err
	}
	ctx := context.Background()
	nodes := make([]*engine.Node, n)
	for i, d := range dirs {
		app, err := ledger.Open(filepath.Join(d, "ledger.db"))
		if err != nil {
			return res, err
		}
		defer app.Close()
		if err := app.InitChain(chain); err != nil {
			return res, err
		}
		nd, err := engine.Start(ctx, d, app, engine.Options{Logger: slog.New(slog.DiscardHandler), RPCListen: "none"})
		if err != nil {
			return res, err
		}
		defer nd.Stop()
		nodes[i] = nd
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, nd := range nodes {
		if _, err := nd.WaitHeight(wctx, 1); err != nil {
			return res, fmt.Errorf("first block: %w", err)
		}
	}
	// Transactions, made before any clock starts.
	all := make([][]byte, idle+txs)
	for i := range all {
		sec, err := key.Generate()
		if err != nil {
			return res, err
		}
		if all[i], err = ledger.NewTx(chain, ledger.Signer{Secret: sec}, 1, &ledger.TwinCreate{}); err != nil {
			return res, err
		}
	}
	submit := func(i int) (time.Duration, error) {
		t0 := time.Now()
		bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		r, err := nodes[i%n].Broadcast(bctx, all[i])
		if err == nil && r.Code != 0 {
			err = fmt.Errorf("refused in its block: code %d: %s", r.Code, r.Log)
		}
		return time.Since(t0), err
	}
	for i := range idle {
		d, err := submit(i)
		if err != nil {
			return res, fmt.Errorf("idle tx %d: %w", i, err)
		}
		res.idle = append(res.idle, d)
	}
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		next    atomic.Int64
		refused atomic.Int64
	)
	next.Store(int64(idle))
	h0 := nodes[0].Height()
	t0 := time.Now()
	for range inflight {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(all) {
					return
				}
				d, err := submit(i)
				if err != nil {
					if refused.Add(1) == 1 {
						mu.Lock()
						res.firstErr = err.Error()
						mu.Unlock()
					}
					continue
				}
				mu.Lock()
				res.load = append(res.load, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(t0)
	res.height = nodes[0].Height() - h0
	res.refused = int(refused.Load())
	res.tps = float64(len(res.load)) / res.elapsed.Seconds()
	// Every validator agrees on the outcome.
	for _, nd := range nodes[1:] {
		if _, err := nd.WaitHeight(wctx, nodes[0].Height()); err != nil {
			return res, err
		}
	}
	return res, nil
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func report(rs []result, txs, inflight int) {
	fmt.Printf("| validators | block time | idle latency p50 / p90 | load: txs, in flight | committed | refused | blocks | TPS | latency under load p50 / p90 / p99 |\n")
	fmt.Printf("|---:|---:|---|---|---:|---:|---:|---:|---|\n")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/1e6) }
	for _, r := range rs {
		fmt.Printf("| %d | %s | %s / %s ms | %d, %d | %d | %d | %d | **%.0f** | %s / %s / %s ms |\n",
			r.validators, r.blockTime, ms(pct(r.idle, 0.5)), ms(pct(r.idle, 0.9)), txs, inflight,
			len(r.load), r.refused, r.height, r.tps, ms(pct(r.load, 0.5)), ms(pct(r.load, 0.9)), ms(pct(r.load, 0.99)))
	}
	for _, r := range rs {
		if r.refused > 0 {
			fmt.Printf("\n%d validators: %d transactions not committed; the first error: %s\n", r.validators, r.refused, r.firstErr)
		}
	}
}
