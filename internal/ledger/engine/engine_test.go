package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cometbft/cometbft/types"

	"github.com/zosgrid/zos/internal/ledger"
)

// testTiming makes blocks fast enough for a test and rounds short enough
// that a stopped proposer costs little.
var testTiming = Timing{BlockTime: 100 * time.Millisecond, RoundTimeout: 400 * time.Millisecond}

// testLogger writes the engine's log to the test's output (shown with -v
// or on failure), at the level in ZOS_ENGINE_LOG (debug, info, warn;
// default warn). Lines logged after the test ends are dropped.
func testLogger(t *testing.T, name string) *slog.Logger {
	t.Helper()
	level := slog.LevelWarn
	if s := os.Getenv("ZOS_ENGINE_LOG"); s != "" {
		if err := level.UnmarshalText([]byte(s)); err != nil {
			t.Fatalf("ZOS_ENGINE_LOG: %v", err)
		}
	}
	w := &testWriter{w: t.Output()}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("node", name)
}

type testWriter struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	return w.w.Write(p)
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// eventually calls f until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %v", what, err, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustStart(t *testing.T, ctx context.Context, dir string, m ledger.Machine, o Options) *Node {
	t.Helper()
	n, err := Start(ctx, dir, m, o)
	if err != nil {
		t.Fatalf("start %s: %v", dir, err)
	}
	t.Cleanup(func() { n.Stop() })
	return n
}

func readFiles(t *testing.T, dir string, names ...string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = b
	}
	return out
}

var keyFiles = []string{
	"config/node_key.json", "config/priv_validator_key.json",
	"config/genesis.json", "config/config.toml",
}

func TestSingleValidator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	baseline := runtime.NumGoroutine()

	dir := t.TempDir()
	timing := testTiming
	timing.EmptyBlockInterval = -1 // no empty blocks: heights move only with transactions
	o := InitOptions{ChainID: "zos-test", P2PListen: "tcp://127.0.0.1:0", RPCListen: "none", Timing: timing}
	if err := Init(dir, o); err != nil {
		t.Fatal(err)
	}
	before := readFiles(t, dir, keyFiles...)
	if err := Init(dir, o); err != nil {
		t.Fatalf("second init: %v", err)
	}
	for name, b := range readFiles(t, dir, keyFiles...) {
		if !bytes.Equal(b, before[name]) {
			t.Errorf("second init changed %s", name)
		}
	}
	if err := Init(dir, InitOptions{ChainID: "other"}); err == nil {
		t.Error("init for another chain in the same dir: no error")
	}

	m := newKV()
	n := mustStart(t, ctx, dir, m, Options{Logger: testLogger(t, "v0")})
	if got := m.chain(); got != "zos-test" {
		t.Fatalf("machine's chain id after start: %q", got)
	}

	// Transactions one after the other commit in order, each with its result.
	var last int64
	for i, tx := range []string{"a=1", "b=2", "a=3"} {
		r, err := n.Broadcast(ctx, []byte(tx))
		if err != nil {
			t.Fatalf("broadcast %s: %v", tx, err)
		}
		k, _, _ := strings.Cut(tx, "=")
		if r.Code != 0 || r.Height <= last || len(r.Events) != 1 || r.Events[0] != (ledger.Event{Type: "kv.set", ID: k}) {
			t.Fatalf("tx %d %s: result %+v after height %d", i, tx, r, last)
		}
		if !bytes.Equal(r.Hash, types.Tx(tx).Hash()) {
			t.Errorf("tx %s: hash %X", tx, r.Hash)
		}
		last = r.Height
	}
	// Concurrent ones all commit too.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			tx := fmt.Sprintf("c%d=%d", i, i)
			r, err := n.Broadcast(ctx, []byte(tx))
			if err == nil && r.Code != 0 {
				err = fmt.Errorf("code %d: %s", r.Code, r.Log)
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", tx, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A transaction the Machine refuses is refused at CheckTx, with its reason.
	_, err := n.Broadcast(ctx, []byte("bad-tx"))
	var refused *RefusedError
	if !errors.Is(err, ErrRefused) || !errors.As(err, &refused) || refused.Code != CodeRefused || !strings.Contains(refused.Log, "bad transaction") {
		t.Fatalf("bad tx: %v", err)
	}
	// A refusal with a ledger sentinel keeps the ledger's code.
	if _, err := n.Broadcast(ctx, []byte("old=1")); !errors.As(err, &refused) || refused.Code != ledger.CodeNonce {
		t.Fatalf("stale tx: %v", err)
	}

	// The same transaction again: it is in the mempool's cache, and
	// Broadcast finds its committed result in the index.
	r, err := n.Broadcast(ctx, []byte("a=1"))
	if err != nil || r.Code != 0 || r.Height == 0 {
		t.Fatalf("rebroadcast: %+v %v", r, err)
	}

	// Queries see the committed state.
	if v, err := n.Query(ctx, "get", []byte("a")); err != nil || string(v) != "3" {
		t.Fatalf("query a: %q %v", v, err)
	}
	if v, err := n.Query(ctx, "get", []byte("c5")); err != nil || string(v) != "5" {
		t.Fatalf("query c5: %q %v", v, err)
	}
	if _, err := n.Query(ctx, "get", []byte("nope")); !errors.Is(err, ledger.ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("query missing key: %v", err)
	}
	eventually(t, 5*time.Second, "tx index", func() error {
		r, err := n.Tx(ctx, types.Tx("b=2").Hash())
		if err == nil && (r.Height == 0 || r.Code != 0) {
			err = fmt.Errorf("result %+v", r)
		}
		return err
	})
	if _, err := n.Tx(ctx, types.Tx("never").Hash()); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("tx never sent: %v", err)
	}

	st, err := n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ChainID != "zos-test" || st.CatchingUp || len(st.Validators) != 1 || st.Validators[0].Power != validatorPower || st.Height < last {
		t.Fatalf("status %+v", st)
	}

	// Stop, twice; then everything is closed and the dir starts again.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := n.Broadcast(ctx, []byte("z=1")); !errors.Is(err, ErrStopped) {
		t.Fatalf("broadcast after stop: %v", err)
	}
	if _, err := n.WaitHeight(ctx, 1<<40); !errors.Is(err, ErrStopped) {
		t.Fatalf("wait after stop: %v", err)
	}
	height, hash := m.Info()

	restart := func(name string, m *kvMachine) *Node {
		t.Helper()
		n := mustStart(t, ctx, dir, m, Options{Logger: testLogger(t, name)})
		if h := n.Height(); h != height {
			t.Fatalf("%s: height %d after restart, want %d", name, h, height)
		}
		if h, got := m.Info(); h != height || !bytes.Equal(got, hash) {
			t.Fatalf("%s: machine at %d %X, want %d %X", name, h, got, height, hash)
		}
		if v, err := n.Query(ctx, "get", []byte("a")); err != nil || string(v) != "3" {
			t.Fatalf("%s: query a: %q %v", name, v, err)
		}
		return n
	}

	// Same machine: nothing to replay.
	n = restart("same", m)
	if r, err := n.Broadcast(ctx, []byte("d=4")); err != nil || r.Code != 0 || r.Height <= height {
		t.Fatalf("broadcast after restart: %+v %v", r, err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	height, hash = m.Info()

	// The machine lost its last two commits: CometBFT replays them.
	m.forget(2)
	n = restart("forgot", m)
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}

	// A machine that lost everything (a wiped disk): it learns the chain
	// id again, and every block is replayed.
	wiped := newKV()
	n = restart("wiped", wiped)
	if got := wiped.chain(); got != "zos-test" {
		t.Fatalf("wiped machine's chain id: %q", got)
	}
	if v, err := n.Query(ctx, "get", []byte("d")); err != nil || string(v) != "4" {
		t.Fatalf("wiped: query d: %q %v", v, err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}

	// Every goroutine of the engine ended, but for CometBFT's known leaks
	// (see the package doc).
	eventually(t, 5*time.Second, "goroutines", func() error { return leftGoroutines(baseline) })

	// A machine that refuses the chain id does not start.
	refusing := newKV()
	refusing.refuseChain = true
	if n, err := Start(ctx, dir, refusing, Options{Logger: testLogger(t, "refusing")}); err == nil {
		n.Stop()
		t.Fatal("start over a machine refusing the chain id: no error")
	} else if !strings.Contains(err.Error(), "refuses every chain") {
		t.Fatalf("machine refusing the chain id: %v", err)
	}

	// A machine whose state is not the chain's is refused, not a crash.
	bad := newKV()
	bad.committed = append(bad.committed, kvState{height: height, hash: []byte("not the chain's hash"), kv: map[string]string{}})
	if n, err := Start(ctx, dir, bad, Options{Logger: testLogger(t, "bad")}); err == nil {
		n.Stop()
		t.Fatal("start over a machine with a wrong app hash: no error")
	} else {
		t.Logf("wrong app hash: %v", err)
	}

}

// knownLeaks are goroutines CometBFT v1.0.1 leaves behind a stopped node:
// the consensus WAL's head file watchers (autofile.Group.Close closes the
// file but not its AutoFile), the pruners, which notice the stop only
// after their sleep (storage.pruning.interval), and the signal loop the
// first signal.Notify starts, which the process keeps.
var knownLeaks = []string{
	"autofile.(*AutoFile).closeFileRoutine",
	"autofile.OpenAutoFile.func1",
	"state.(*Pruner).prune",
	"os/signal.loop",
}

// leftGoroutines reports goroutines beyond baseline that are not known
// leaks.
func leftGoroutines(baseline int) error {
	buf := make([]byte, 4<<20)
	stacks := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
	var left []string
	for _, st := range stacks {
		known := strings.Contains(st, "leftGoroutines")
		for _, k := range knownLeaks {
			known = known || strings.Contains(st, k)
		}
		if !known {
			left = append(left, st)
		}
	}
	if len(left) > baseline-1 {
		return fmt.Errorf("%d goroutines, %d before:\n%s", len(left), baseline-1, strings.Join(left, "\n\n"))
	}
	return nil
}

func TestFourValidators(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	baseline := runtime.NumGoroutine()

	dirs := make([]string, 4)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	timing := testTiming
	timing.EmptyBlockInterval = 300 * time.Millisecond
	o := TestnetOptions{ChainID: "zos-testnet", Timing: timing}
	if err := InitTestnet(dirs, o); err != nil {
		t.Fatal(err)
	}
	before := readFiles(t, dirs[2], keyFiles...)
	if err := InitTestnet(dirs, o); err != nil {
		t.Fatalf("second init: %v", err)
	}
	for name, b := range readFiles(t, dirs[2], keyFiles...) {
		if !bytes.Equal(b, before[name]) {
			t.Errorf("second init changed %s", name)
		}
	}

	// Every validator's proposals carry a transaction that never passed
	// CheckTx, until one block holds it: a faulty proposer.
	forced := []byte("bad-forced")
	var arm, seen atomic.Bool
	prepare := func(txs [][]byte) [][]byte {
		if arm.Load() && !seen.Load() {
			return append(txs, forced)
		}
		return txs
	}
	ms := make([]*kvMachine, 4)
	ns := make([]*Node, 4)
	for i, d := range dirs {
		ms[i] = newKV()
		ms[i].onFinalize = func(txs [][]byte) {
			for _, tx := range txs {
				if bytes.Equal(tx, forced) {
					seen.Store(true)
				}
			}
		}
		ns[i] = mustStart(t, ctx, d, ms[i], Options{Logger: testLogger(t, fmt.Sprint("v", i)), RPCListen: "none", prepare: prepare})
	}

	r, err := ns[0].Broadcast(ctx, []byte("x=1"))
	if err != nil || r.Code != 0 {
		t.Fatalf("broadcast: %+v %v", r, err)
	}
	for i, n := range ns {
		if _, err := n.WaitHeight(ctx, r.Height); err != nil {
			t.Fatalf("v%d: %v", i, err)
		}
		if v, err := n.Query(ctx, "get", []byte("x")); err != nil || string(v) != "1" {
			t.Fatalf("v%d: query x: %q %v", i, v, err)
		}
		// Every validator connects to the other three (persistent peers).
		eventually(t, 10*time.Second, fmt.Sprintf("v%d: status", i), func() error {
			st, err := n.Status(ctx)
			if err == nil && (len(st.Validators) != 4 || st.Peers != 3 || st.CatchingUp || st.Height < r.Height) {
				err = fmt.Errorf("status %+v", st)
			}
			return err
		})
	}

	// A refused transaction is refused by every validator's CheckTx.
	for i, n := range ns {
		if _, err := n.Broadcast(ctx, []byte("bad-forged")); !errors.Is(err, ErrRefused) {
			t.Fatalf("v%d: forged tx: %v", i, err)
		}
	}
	// Forced into a block, it gets the same non-zero code on every one.
	arm.Store(true)
	var want Result
	for i, n := range ns {
		var got Result
		eventually(t, 10*time.Second, fmt.Sprintf("v%d: forced tx", i), func() error {
			var err error
			got, err = n.Tx(ctx, types.Tx(forced).Hash())
			return err
		})
		if got.Code == 0 || !strings.Contains(got.Log, "bad transaction") {
			t.Fatalf("v%d: forced tx result %+v", i, got)
		}
		if i == 0 {
			want = got
		} else if got.Code != want.Code || got.Height != want.Height || got.Log != want.Log {
			t.Fatalf("v%d: forced tx result %+v, v0's %+v", i, got, want)
		}
	}
	sameHashes(t, ms)

	// Stop one: 3 of 4 is more than 2/3, the others keep committing.
	if err := ns[3].Stop(); err != nil {
		t.Fatal(err)
	}
	h := ns[0].Height()
	for i, tx := range []string{"y=2", "z=3", "w=4"} {
		r, err := ns[i].Broadcast(ctx, []byte(tx))
		if err != nil || r.Code != 0 || r.Height <= h {
			t.Fatalf("v%d: broadcast %s with v3 stopped: %+v %v", i, tx, r, err)
		}
	}
	// Past a full proposer rotation, so v3's turn came and went.
	target := ns[0].Height() + 5
	for i := range 3 {
		if _, err := ns[i].WaitHeight(ctx, target); err != nil {
			t.Fatalf("v%d: %v", i, err)
		}
	}
	sameHashes(t, ms[:3])
	for i := range 3 {
		if v, err := ns[i].Query(ctx, "get", []byte("w")); err != nil || string(v) != "4" {
			t.Fatalf("v%d: query w: %q %v", i, v, err)
		}
	}

	// Stopped with their peers connected: CometBFT's gossip routines
	// outlive Stop by a sleep and then read the closed stores once more,
	// which must not crash the process. Wait for them to end.
	for _, n := range ns {
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "goroutines", func() error { return leftGoroutines(baseline) })
}

// sameHashes checks that the machines committed the same app hash at
// every height they all reached.
func sameHashes(t *testing.T, ms []*kvMachine) {
	t.Helper()
	top := int64(1 << 62)
	for _, m := range ms {
		h, _ := m.Info()
		top = min(top, h)
	}
	if top < 1 {
		t.Fatalf("no common height")
	}
	for h := int64(1); h <= top; h++ {
		want, _ := ms[0].hashAt(h)
		for i, m := range ms[1:] {
			if got, _ := m.hashAt(h); !bytes.Equal(got, want) {
				t.Fatalf("height %d: v%d app hash %X, v0 %X", h, i+1, got, want)
			}
		}
	}
	t.Logf("%d machines agree up to height %d", len(ms), top)
}

func TestInitRefuses(t *testing.T) {
	o := InitOptions{ChainID: "zos-test", RPCListen: "none"}
	t.Run("no chain id", func(t *testing.T) {
		if err := Init(t.TempDir(), InitOptions{}); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("key without sign state", func(t *testing.T) {
		dir := t.TempDir()
		if err := Init(dir, o); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, "data/priv_validator_state.json")); err != nil {
			t.Fatal(err)
		}
		if err := Init(dir, o); err == nil || !strings.Contains(err.Error(), "sign state") {
			t.Fatalf("init: %v", err)
		}
		if _, err := Start(context.Background(), dir, newKV(), Options{}); err == nil {
			t.Fatal("start: no error")
		}
	})
	t.Run("testnet half set up", func(t *testing.T) {
		dirs := []string{t.TempDir(), t.TempDir()}
		if err := Init(dirs[0], o); err != nil {
			t.Fatal(err)
		}
		if err := InitTestnet(dirs, TestnetOptions{ChainID: "zos-test"}); err == nil {
			t.Fatal("no error")
		}
	})
}
