package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"
	cfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/service"
	"github.com/cometbft/cometbft/mempool"
	nm "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	"github.com/cometbft/cometbft/rpc/core"
	rpctypes "github.com/cometbft/cometbft/rpc/jsonrpc/types"
	"github.com/cometbft/cometbft/types"

	"github.com/zosgrid/zos/internal/ledger"
)

// Errors of a Node.
var (
	// ErrStopped reports a call to a Node that stopped (or is stopping).
	ErrStopped = errors.New("engine stopped")
	// ErrRefused reports a transaction the Machine's CheckTx refused: it
	// entered no mempool and no block. Broadcast returns it as a
	// *RefusedError.
	ErrRefused = errors.New("transaction refused")
)

// RefusedError is a transaction refused at CheckTx, with the Machine's
// reason.
type RefusedError struct {
	Code uint32 // ledger.Code of the Machine's error
	Log  string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("transaction refused (code %d): %s", e.Code, e.Log)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Options configures Start.
type Options struct {
	// Logger receives the engine's log and CometBFT's (a level lower, see
	// cmtLogger). Nil discards it.
	Logger *slog.Logger
	// P2PListen overrides config.toml's p2p.laddr ("tcp://host:port").
	P2PListen string
	// RPCListen overrides config.toml's rpc.laddr; "none" turns the RPC
	// server off (the Node's methods do not need it).
	RPCListen string

	// prepare, when set, rewrites the transactions of blocks this
	// validator proposes (tests: a faulty proposer).
	prepare func(txs [][]byte) [][]byte
}

// Node is a running validator: CometBFT in-process over a ledger.Machine.
// Its methods are safe for concurrent use.
type Node struct {
	log *slog.Logger
	m   ledger.Machine
	cmt *nm.Node
	env *core.Environment
	app *app
	dbs *dbSet

	txs      *txWaiters
	txsDone  chan struct{} // closed when txs's subscription ends
	done     chan struct{} // closed by Stop
	stopOnce sync.Once
	stopErr  error
}

// Result is a committed transaction's outcome.
type Result struct {
	Hash   []byte // the transaction's hash (SHA-256), as CometBFT names it
	Height int64  // the block that holds it
	Code   uint32 // 0: applied; otherwise the Machine refused it in the block
	Log    string
	Events []ledger.Event
}

// Start runs the validator whose home is dir (see Init) over m. CometBFT
// first asks m where it stands (Info) and replays the stored blocks m has
// not committed, then joins consensus. ctx bounds the start, replay
// included; the Node runs until Stop.
//
// m must be the only user of its state while the Node runs, and dir must
// not be in use by another Node.
func Start(ctx context.Context, dir string, m ledger.Machine, o Options) (n *Node, err error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := loadConfig(dir)
	if err != nil {
		return nil, err
	}
	if o.P2PListen != "" {
		c.P2P.ListenAddress = o.P2PListen
	}
	if o.RPCListen != "" {
		c.RPC.ListenAddress = listenAddr(o.RPCListen, "")
	}
	key, err := p2p.LoadNodeKey(c.NodeKeyFile())
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	pv, err := loadPrivValidator(c)
	if err != nil {
		return nil, err
	}

	a := newApp(m, log)
	a.prepare = o.prepare
	dbs := &dbSet{log: log.With("module", "pebble")}
	from, _ := a.last()

	// CometBFT panics, rather than return an error, when the Machine's
	// state does not match the chain at start (an app hash that differs
	// from the one stored for its height). For a process that embeds the
	// engine that is a refused start, not a crash.
	defer func() {
		if r := recover(); r != nil {
			dbs.close()
			n, err = nil, fmt.Errorf("start: %s", panicText(r))
		}
	}()
	cn, err := nm.NewNode(ctx, c, pv, key,
		// Each ABCI connection (consensus, mempool, query) is serialised
		// on its own; a query need not wait for a block to execute.
		proxy.NewConnSyncLocalClientCreator(a),
		nm.DefaultGenesisDocProviderFunc(c),
		dbs.open,
		nm.DefaultMetricsProvider(c.Instrumentation),
		cmtLogger{l: log}, // CometBFT names its modules itself (module=consensus, ...)
	)
	if err != nil {
		dbs.close()
		return nil, fmt.Errorf("start: %w", err)
	}
	if err := cn.Start(); err != nil {
		_ = cn.ProxyApp().Stop()
		dbs.close()
		return nil, fmt.Errorf("start: %w", err)
	}
	// The RPC environment is the in-process RPC client's backend
	// (rpc/client/local wraps the same); taken directly, its setup error
	// is seen instead of logged.
	env, err := cn.ConfigureRPC()
	if err != nil {
		_ = cn.Stop()
		cn.Wait()
		_ = cn.ProxyApp().Stop()
		dbs.close()
		return nil, fmt.Errorf("start: %w", err)
	}
	n = &Node{log: log, m: m, cmt: cn, env: env, app: a, dbs: dbs, done: make(chan struct{}),
		txs: newTxWaiters(log, cn.EventBus()), txsDone: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(n.txsDone)
		n.txs.run(ready)
	}()
	<-ready
	h := n.Height()
	log.Info("ledger engine started", "dir", dir, "chain", cn.GenesisDoc().ChainID,
		"node", key.ID(), "height", h, "replayed", h-from, "p2p", c.P2P.ListenAddress, "rpc", c.RPC.ListenAddress)
	return n, nil
}

// panicText is the first paragraph of a CometBFT panic, on one line: its
// app hash mismatch goes on with a dump of the whole consensus state.
func panicText(r any) string {
	s := fmt.Sprint(r)
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[:i]
	}
	return strings.Join(strings.Fields(s), " ")
}

// Stop stops the validator and waits for it: CometBFT's services and
// goroutines end and its stores close, so the same directory can be
// started again, in this process or another. Stop is idempotent.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		close(n.done)
		var errs []error
		if err := n.cmt.Stop(); err != nil && !errors.Is(err, service.ErrAlreadyStopped) {
			errs = append(errs, err)
		}
		n.cmt.Wait()
		<-n.txsDone // ends with the event bus
		// CometBFT's Node leaves its ABCI connections running, and with
		// them a goroutine that watches them.
		if err := n.cmt.ProxyApp().Stop(); err != nil && !errors.Is(err, service.ErrAlreadyStopped) {
			errs = append(errs, err)
		}
		if err := n.dbs.close(); err != nil {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			n.stopErr = fmt.Errorf("stop: %w", errors.Join(errs...))
		}
		n.log.Info("ledger engine stopped", "height", n.Height())
	})
	return n.stopErr
}

func (n *Node) stopped() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// Broadcast submits tx and waits until a block holding it commits, or ctx
// ends. A transaction the Machine's CheckTx refuses gives a *RefusedError
// (errors.Is ErrRefused); a committed one gives its Result, whose Code may
// still be non-zero when the Machine refused it in the block.
//
// The wait is registered before the transaction is submitted, so a commit
// cannot slip between the two. A transaction submitted before (it is in
// the mempool's cache: pending, or committed already) is also looked up in
// the transaction index, once a second.
func (n *Node) Broadcast(ctx context.Context, tx []byte) (Result, error) {
	if n.stopped() {
		return Result{}, ErrStopped
	}
	hash := types.Tx(tx).Hash()
	results, lost, cancel := n.txs.add(hash)
	defer cancel()
	var (
		ticker *time.Ticker
		poll   <-chan time.Time
	)
	startPolling := func() {
		if ticker == nil {
			ticker = time.NewTicker(time.Second)
			poll = ticker.C
		}
	}
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()

	res, err := n.checkTx(ctx, tx)
	switch {
	case errors.Is(err, mempool.ErrTxInCache):
		if r, err := n.Tx(ctx, hash); err == nil {
			return r, nil
		}
		startPolling()
	case err != nil:
		return Result{}, fmt.Errorf("broadcast: %w", err)
	case res.Code != CodeOK:
		return Result{}, &RefusedError{Code: res.Code, Log: res.Log}
	}
	for {
		select {
		case r := <-results:
			return r, nil
		case <-lost:
			lost = nil
			startPolling()
			if r, err := n.Tx(ctx, hash); err == nil {
				return r, nil
			}
		case <-poll:
			if r, err := n.Tx(ctx, hash); err == nil {
				return r, nil
			}
		case <-n.done:
			return Result{}, ErrStopped
		case <-ctx.Done():
			return Result{}, fmt.Errorf("broadcast: %w", ctx.Err())
		}
	}
}

type checkResult struct {
	Code uint32
	Log  string
}

// checkTx runs tx through the mempool (CheckTx). A validator that is
// still catching up with its peers closes its mempool; checkTx waits for
// it to open rather than fail a transaction that would pass a moment
// later.
func (n *Node) checkTx(ctx context.Context, tx []byte) (checkResult, error) {
	var t *time.Ticker
	for {
		r, err := n.env.BroadcastTxSync(&rpctypes.Context{}, tx)
		if err == nil {
			return checkResult{Code: r.Code, Log: r.Log}, nil
		}
		// CometBFT v1's mempool reports a refusal as an error.
		var invalid mempool.ErrInvalidTx
		if errors.As(err, &invalid) {
			return checkResult{Code: invalid.Code, Log: invalid.Log}, nil
		}
		if !errors.Is(err, core.ErrEndpointClosedCatchingUp) {
			return checkResult{}, err
		}
		if t == nil {
			t = time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
		}
		select {
		case <-t.C:
		case <-n.done:
			return checkResult{}, ErrStopped
		case <-ctx.Done():
			return checkResult{}, ctx.Err()
		}
	}
}

// Tx returns the result of the committed transaction with the given hash,
// or an error wrapping ledger.ErrNotFound. The index behind it is written
// just after the block commits: Broadcast's result can come a moment
// before Tx knows the transaction.
func (n *Node) Tx(ctx context.Context, hash []byte) (Result, error) {
	if n.stopped() {
		return Result{}, ErrStopped
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	r, err := n.env.TxIndexer.Get(hash)
	if err != nil {
		return Result{}, fmt.Errorf("tx %X: %w", hash, err)
	}
	if r == nil {
		return Result{}, fmt.Errorf("tx %X: %w", hash, ledger.ErrNotFound)
	}
	return txResult(r.Tx, r.Height, r.Result.Code, r.Result.Log, r.Result.Events), nil
}

func txResult(tx []byte, height int64, code uint32, log string, evs []abci.Event) Result {
	return Result{
		Hash:   types.Tx(tx).Hash(),
		Height: height,
		Code:   code,
		Log:    log,
		Events: fromABCIEvents(evs),
	}
}

// Query reads the Machine's committed state through ABCI, the path a
// remote client takes too. A missing object gives an error wrapping
// ledger.ErrNotFound.
func (n *Node) Query(ctx context.Context, path string, data []byte) ([]byte, error) {
	if n.stopped() {
		return nil, ErrStopped
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := n.env.ABCIQuery(&rpctypes.Context{}, path, data, 0, false)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", path, err)
	}
	if r.Response.Code != CodeOK {
		return nil, &queryError{code: r.Response.Code, log: r.Response.Log}
	}
	return r.Response.Value, nil
}

// queryError is a query the Machine answered with an error: its message,
// and ledger.ErrNotFound when that is what it was.
type queryError struct {
	code uint32
	log  string
}

func (e *queryError) Error() string { return e.log }

func (e *queryError) Unwrap() error {
	if e.code == CodeNotFound {
		return ledger.ErrNotFound
	}
	return nil
}

// Height returns the height of the last block the Machine committed.
func (n *Node) Height() int64 {
	h, _ := n.app.height()
	return h
}

// WaitHeight waits until the Machine has committed height h (a query then
// sees its state) and returns the height reached, or ctx's error, or
// ErrStopped. A watcher loops on WaitHeight(ctx, last+1).
//
// Blocks come when there are transactions, and on an idle chain once per
// Timing.EmptyBlockInterval (none when empty blocks are off).
func (n *Node) WaitHeight(ctx context.Context, h int64) (int64, error) {
	for {
		cur, changed := n.app.height()
		if cur >= h {
			return cur, nil
		}
		select {
		case <-changed:
		case <-n.done:
			return cur, ErrStopped
		case <-ctx.Done():
			return cur, ctx.Err()
		}
	}
}

// Status is a validator's view of the chain.
type Status struct {
	ChainID    string
	NodeID     string // p2p node id: peers name it in id@host:port
	P2PListen  string
	Height     int64  // the Machine's last committed block
	AppHash    []byte // the Machine's app hash at Height
	CatchingUp bool   // block-syncing from peers; Broadcast waits for it
	Peers      int
	Validators []Validator // the validator set for the next block
}

// Validator is one member of the validator set.
type Validator struct {
	Address string // hex, as CometBFT prints it
	Power   int64
}

// Status returns the validator's view of the chain.
func (n *Node) Status(ctx context.Context) (Status, error) {
	if n.stopped() {
		return Status{}, ErrStopped
	}
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	rs, err := n.env.Status(&rpctypes.Context{})
	if err != nil {
		return Status{}, fmt.Errorf("status: %w", err)
	}
	h, hash := n.app.last()
	st := Status{
		ChainID:    rs.NodeInfo.Network,
		NodeID:     string(rs.NodeInfo.ID()),
		P2PListen:  rs.NodeInfo.ListenAddr,
		Height:     h,
		AppHash:    hash,
		CatchingUp: rs.SyncInfo.CatchingUp,
		Peers:      n.cmt.Switch().Peers().Size(),
	}
	vals, err := n.env.Validators(&rpctypes.Context{}, nil, nil, nil)
	if err != nil {
		return Status{}, fmt.Errorf("status: validators: %w", err)
	}
	for _, v := range vals.Validators {
		st.Validators = append(st.Validators, Validator{Address: v.Address.String(), Power: v.VotingPower})
	}
	return st, nil
}

// dbSet opens CometBFT's stores and closes every one of them at Stop.
// CometBFT's Node closes the block and state stores and the evidence
// store, but not the transaction index; and when it fails to start it
// closes none. A store left open keeps its lock, and the directory could
// not be started again in the same process.
type dbSet struct {
	log *slog.Logger
	mu  sync.Mutex
	dbs []*guardedDB
}

func (s *dbSet) open(ctx *cfg.DBContext) (dbm.DB, error) {
	var (
		db  dbm.DB
		err error
	)
	if dbm.BackendType(ctx.Config.DBBackend) == dbm.PebbleDBBackend {
		// CometBFT's default opens pebble with its default logger, which
		// writes every store's WAL replay to the standard logger.
		db, err = dbm.NewPebbleDBWithOpts(ctx.ID, ctx.Config.DBDir(),
			&pebble.Options{Logger: pebbleLogger{s.log.With("store", ctx.ID)}})
	} else {
		db, err = cfg.DefaultDBProvider(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", ctx.ID, err)
	}
	d := &guardedDB{db: db}
	s.mu.Lock()
	s.dbs = append(s.dbs, d)
	s.mu.Unlock()
	return d, nil
}

func (s *dbSet) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, d := range s.dbs {
		if err := d.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.dbs = nil
	return errors.Join(errs...)
}

// guardedDB is a store that stays safe to call after Close.
//
// CometBFT's Node.Stop does not wait for every goroutine that reads its
// stores: the consensus reactor's per-peer gossip routines sleep between
// passes and read the block store once more after waking, up to
// consensus.peer_query_maj23_sleep_duration after Stop returned; and
// pebble panics on a read from a closed store (CometBFT panics on the read
// error of any other). So Close waits for reads in flight, and after it
// reads find nothing (the gossip routines then give up: a peer that
// stopped needs nothing) and writes fail. CometBFT itself closes some
// stores, the engine closes all: Close is idempotent.
type guardedDB struct {
	mu     sync.RWMutex
	db     dbm.DB
	closed bool
	err    error
}

var _ dbm.DB = (*guardedDB)(nil)

var errStoreClosed = errors.New("store closed")

// emptyDB is a store with nothing in it, whose iterators stand in for a
// closed store's.
var emptyDB = dbm.NewMemDB()

func (d *guardedDB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		d.err = d.db.Close()
	}
	return d.err
}

func (d *guardedDB) Get(key []byte) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, nil
	}
	return d.db.Get(key)
}

func (d *guardedDB) Has(key []byte) (bool, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return false, nil
	}
	return d.db.Has(key)
}

func (d *guardedDB) Iterator(start, end []byte) (dbm.Iterator, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return emptyDB.Iterator(start, end)
	}
	return d.db.Iterator(start, end)
}

func (d *guardedDB) ReverseIterator(start, end []byte) (dbm.Iterator, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return emptyDB.ReverseIterator(start, end)
	}
	return d.db.ReverseIterator(start, end)
}

func (d *guardedDB) write(f func() error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return errStoreClosed
	}
	return f()
}

func (d *guardedDB) Set(k, v []byte) error {
	return d.write(func() error { return d.db.Set(k, v) })
}

func (d *guardedDB) SetSync(k, v []byte) error {
	return d.write(func() error { return d.db.SetSync(k, v) })
}

func (d *guardedDB) Delete(k []byte) error {
	return d.write(func() error { return d.db.Delete(k) })
}

func (d *guardedDB) DeleteSync(k []byte) error {
	return d.write(func() error { return d.db.DeleteSync(k) })
}

func (d *guardedDB) Compact(start, end []byte) error {
	return d.write(func() error { return d.db.Compact(start, end) })
}

func (d *guardedDB) Print() error {
	return d.write(d.db.Print)
}

func (d *guardedDB) Stats() map[string]string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil
	}
	return d.db.Stats()
}

func (d *guardedDB) NewBatch() dbm.Batch {
	return &guardedBatch{Batch: d.db.NewBatch(), db: d}
}

// guardedBatch writes to its store only while the store is open.
type guardedBatch struct {
	dbm.Batch
	db *guardedDB
}

func (b *guardedBatch) Write() error     { return b.db.write(b.Batch.Write) }
func (b *guardedBatch) WriteSync() error { return b.db.write(b.Batch.WriteSync) }

// pebbleLogger hands pebble's log to slog: its Info lines (WAL replays,
// compactions) at Debug. Fatalf is for a broken invariant inside the
// store, where pebble's own logger exits the process; this one logs and
// panics, which shows where.
type pebbleLogger struct {
	l *slog.Logger
}

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic("pebble: " + msg)
}
