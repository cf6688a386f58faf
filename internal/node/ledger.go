package node

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/node/nodeclient"
	"github.com/zosgrid/zos/internal/spec"
)

// Ledger is the grid ledger as the node's watcher uses it
// (internal/ledger/ledgerclient over HTTP in cmd/zos; a ledger.App in
// tests). Implementations are safe for concurrent use. A missing twin is
// an error wrapping ledger.ErrNotFound; any other error means the ledger
// could not be asked, and the watcher changes nothing on it.
type Ledger interface {
	// ChainID returns the chain's id (transactions name it).
	ChainID(ctx context.Context) (string, error)
	// Nodes returns every registered node (all pages): the watcher finds
	// its own record by its public key.
	Nodes(ctx context.Context) ([]ledger.NodeView, error)
	// Twin returns twin id.
	Twin(ctx context.Context, id uint32) (ledger.TwinView, error)
	// Contracts returns every contract f selects (all pages).
	Contracts(ctx context.Context, f ledger.ContractFilter) ([]ledger.ContractView, error)
	// Submit sends a transaction and returns once it is committed and
	// applied; a refusal (CheckTx or in its block) is an error.
	Submit(ctx context.Context, tx []byte) error
}

// Defaults of the ledger watcher.
const (
	DefaultLedgerInterval = time.Second
	DefaultReportEvery    = 30 * time.Second
	// MaxReportsPerStep bounds the node.report transactions sent after one
	// reconcile pass: a node with many contracts changing at once spreads
	// its reports over several passes instead of flooding the chain.
	MaxReportsPerStep = 16
	// twinRefresh is how often the twins of the node's contracts are read
	// again for the API (a rotated key is honoured within this time).
	twinRefresh   = 30 * time.Second
	submitTimeout = 30 * time.Second
	syncTimeout   = 30 * time.Second // a ledger that hangs is an unreachable one
)

var bucketLinks = []byte("ledger")

// link ties a ledger contract to the local deployment made from it
// (bucket "ledger", contract id -> link), so that a contract becomes one
// deployment however many times the watcher sees it.
type link struct {
	Chain      string `json:"chain"`
	Contract   uint64 `json:"contract"`
	Deployment uint64 `json:"deployment"`
	Version    uint64 `json:"version"`   // of the spec accepted
	Cancelled  bool   `json:"cancelled"` // no longer active on the ledger: being removed, then reported removed
}

// links returns the links by contract id.
func (db *DB) links() (map[uint64]link, error) {
	out := map[uint64]link{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLinks)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var l link
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("ledger link %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out[l.Contract] = l
			return nil
		})
	})
	return out, err
}

func putLink(tx *bolt.Tx, l link) error {
	b, err := tx.CreateBucketIfNotExists(bucketLinks)
	if err != nil {
		return err
	}
	v, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return b.Put(u64(l.Contract), v)
}

// adopt stores a new deployment made from contract l.Contract and its
// link, with events, in one transaction.
func (db *DB) adopt(l link, r record, events ...nodeclient.Event) (record, error) {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		var err error
		if r, err = db.createIn(tx, r, events); err != nil {
			return err
		}
		l.Deployment = r.ID
		return putLink(tx, l)
	})
	return r, err
}

// relink changes deployment l.Deployment with fn and stores l, in one
// transaction.
func (db *DB) relink(l link, fn func(r *record) ([]nodeclient.Event, error)) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDeployments).Get(u64(l.Deployment))
		if v == nil {
			return errNoDeployment
		}
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("deployment %d: %w", l.Deployment, err)
		}
		ev, err := fn(&r)
		if err != nil {
			return err
		}
		if err := db.put(tx, r, ev); err != nil {
			return err
		}
		return putLink(tx, l)
	})
}

// unlink forgets contract id's link.
func (db *DB) unlink(id uint64) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketLinks); b != nil {
			return b.Delete(u64(id))
		}
		return nil
	})
}

// sentReport is the last report the node sent (or found on the ledger)
// for a contract.
type sentReport struct {
	state   string
	version uint64
	at      time.Time
}

// watcher makes the node follow its contracts on the ledger
// (docs/NODE.md, "Ledger"). Its fields are the watcher goroutine's, but
// for twins, which the API reads.
type watcher struct {
	a      *Agent
	l      Ledger
	log    *slog.Logger
	every  time.Duration // poll interval
	limit  time.Duration // ReportEvery
	passed chan struct{} // a reconcile pass ended: time to report

	chain        string
	node         uint32                          // this node's id; 0 until it is registered
	nonce        uint64                          // the last nonce used (or read from the ledger)
	nonceStale   bool                            // a submit failed: read the node's nonce again
	down         bool                            // the ledger could not be read: logged once per outage
	failing      bool                            // reports could not be submitted: logged once per streak
	unregistered bool                            // "not registered" was logged
	refused      map[uint64]string               // contract -> digest refused (recorded once)
	active       map[uint64]*ledger.ContractView // the node's active contracts at the last sync
	sent         map[uint64]sentReport

	mu      sync.Mutex
	twins   map[uint32]ledger.TwinView // twins of the node's contracts: owners and signers
	twinsAt time.Time
}

func newWatcher(a *Agent, opts Options) *watcher {
	return &watcher{
		a: a, l: opts.Ledger, log: a.log.With("part", "ledger"),
		every: opts.LedgerInterval, limit: opts.ReportEvery,
		passed:  make(chan struct{}, 1),
		refused: map[uint64]string{}, active: map[uint64]*ledger.ContractView{},
		sent: map[uint64]sentReport{}, twins: map[uint32]ledger.TwinView{},
	}
}

// run syncs every interval and reports after every reconcile pass, until
// ctx ends. Nothing here blocks the reconcile loop or the API.
func (w *watcher) run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	w.step(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.step(ctx)
		case <-w.passed:
			w.report(ctx)
		}
	}
}

// reconciled tells the watcher a pass ended.
func (w *watcher) reconciled() {
	select {
	case w.passed <- struct{}{}:
	default:
	}
}

// step reads the ledger once and makes the deployments follow it; a
// change asks the reconcile loop for a pass.
func (w *watcher) step(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, syncTimeout)
	changed, err := w.sync(sctx)
	cancel()
	switch {
	case err != nil && ctx.Err() != nil:
	case err != nil && !w.down:
		w.down = true
		w.log.Warn("ledger unreachable: retrying every poll; workloads and the API carry on", "err", err)
	case err != nil:
		w.log.Debug("ledger unreachable", "err", err)
	case w.down:
		w.down = false
		w.log.Info("ledger reachable again", "chain", w.chain)
	}
	if changed {
		w.a.Kick()
	}
}

// sync makes the accepted deployments follow the node's active contracts:
// a new one (verified here) becomes a deployment, a revision that became
// active an update, one that is no longer active is deleted. It reports
// whether it changed anything. An error reading the ledger stops it where
// it is: nothing is removed or changed on an answer it did not get, and
// what it did before stays (each change is one bbolt transaction).
func (w *watcher) sync(ctx context.Context) (bool, error) {
	// The chain id, every sync: a chain replaced behind the URL has other
	// nodes under the same ids, and the watcher must not take another
	// machine's contracts for its own.
	id, err := w.l.ChainID(ctx)
	if err != nil {
		return false, fmt.Errorf("chain id: %w", err)
	}
	if id != w.chain {
		if w.chain != "" {
			w.log.Warn("the ledger is another chain now: looking for this node again", "was", w.chain, "chain", id)
		}
		w.chain, w.node, w.unregistered = id, 0, false
		w.active, w.sent = map[uint64]*ledger.ContractView{}, map[uint64]sentReport{}
	}
	if w.node == 0 || w.nonceStale {
		nodes, err := w.l.Nodes(ctx)
		if err != nil {
			return false, fmt.Errorf("nodes: %w", err)
		}
		me := w.a.opts.Key.Public()
		i := slices.IndexFunc(nodes, func(n ledger.NodeView) bool { return n.Key == me })
		if i < 0 {
			if !w.unregistered {
				w.unregistered = true
				kf := w.a.opts.KeyFile
				if kf == "" {
					kf = "NODE_KEY_FILE"
				}
				w.log.Warn("this node is not registered on the ledger: its owner registers it, on this machine, with `zos chain node register --key OWNER_KEY --twin OWNER --node-key "+kf+" --endpoint URL --cpu N --memory SIZE --disk SIZE`; looking again every poll", "chain", w.chain, "key", me.String())
			}
			return false, nil
		}
		if w.node == 0 {
			w.log.Info("node found on the ledger", "chain", w.chain, "node", nodes[i].ID, "owner", nodes[i].Owner)
		}
		w.node, w.nonce, w.nonceStale = nodes[i].ID, max(w.nonce, nodes[i].Nonce), false
	}
	cs, err := w.l.Contracts(ctx, ledger.ContractFilter{Node: w.node, State: ledger.StateActive})
	if err != nil {
		return false, fmt.Errorf("contracts of node %d: %w", w.node, err)
	}
	links, err := w.a.db.links()
	if err != nil {
		return false, err
	}
	recs, err := w.a.db.list()
	if err != nil {
		return false, err
	}
	byID := map[uint64]record{}
	for _, r := range recs {
		byID[r.ID] = r
	}
	active := map[uint64]*ledger.ContractView{}
	for i := range cs {
		if c := &cs[i]; c.Node == w.node && c.State == ledger.StateActive {
			active[c.ID] = c
		}
	}
	changed := false
	// Cancellations first: a link of another chain frees its contract id.
	for id, l := range links {
		if l.Chain == w.chain && (l.Cancelled || active[id] != nil) {
			continue
		}
		if err := w.cancel(l); err != nil {
			return changed, err
		}
		changed = true
		if l.Chain != w.chain {
			delete(links, id) // nothing to report to a chain we no longer watch
		} else {
			l.Cancelled = true
			links[id] = l
		}
	}
	var fresh map[uint32]ledger.TwinView // twins read this sync, for verification
	for _, id := range sortedKeys(active) {
		c := active[id]
		l, linked := links[id]
		r, exists := byID[l.Deployment]
		switch {
		case linked && l.Cancelled && exists && r.State != nodeclient.StateDeleted:
			continue // still being removed; a contract cancelled is final anyway
		case linked && !l.Cancelled && exists && c.Version <= l.Version:
			continue // deployed already
		}
		if fresh == nil {
			fresh = map[uint32]ledger.TwinView{}
		}
		d, ch, err := w.verify(ctx, c, fresh)
		if errors.Is(err, errLedgerRead) {
			return changed, err
		}
		if err != nil {
			if w.refused[c.ID] != c.Digest.String() {
				w.refused[c.ID] = c.Digest.String()
				w.a.event(0, "", "ledger-refused", fmt.Sprintf("contract %d version %d on %s: %v", c.ID, c.Version, w.chain, err))
			}
			continue
		}
		delete(w.refused, c.ID)
		canon, err := d.Canonical()
		if err != nil {
			return changed, err
		}
		if !linked || l.Cancelled || !exists || r.State != nodeclient.StateActive {
			nl := link{Chain: w.chain, Contract: c.ID, Version: c.Version}
			r, err := w.a.db.adopt(nl, record{Owner: d.Owner, Version: d.Version, State: nodeclient.StateActive, Accepted: w.a.opts.Now().UTC(), Spec: canon, Contract: c.ID},
				nodeclient.Event{Kind: "ledger-accepted", Detail: fmt.Sprintf("contract %d on %s: owner %d version %d, active since height %d", c.ID, w.chain, d.Owner, d.Version, c.Since)},
				nodeclient.Event{Kind: "verified", Detail: "challenge " + ch + ", signature requirement met by the ledger's approvals and twin keys"})
			if err != nil {
				return changed, err
			}
			w.log.Info("contract deployed", "contract", c.ID, "deployment", r.ID, "version", d.Version)
			delete(w.sent, c.ID)
		} else {
			old := l.Version
			l.Version = c.Version
			err := w.a.db.relink(l, func(r *record) ([]nodeclient.Event, error) {
				r.Version, r.Spec = d.Version, canon
				return []nodeclient.Event{{Kind: "ledger-updated", Detail: fmt.Sprintf("contract %d: version %d -> %d, challenge %s, signature requirement met", c.ID, old, d.Version, ch)}}, nil
			})
			if err != nil {
				return changed, err
			}
		}
		changed = true
	}
	w.active = active
	w.refreshTwins(ctx, fresh)
	return changed, nil
}

// errLedgerRead marks a verification that could not read the ledger (as
// opposed to one that failed).
var errLedgerRead = errors.New("reading the ledger")

// verify checks contract c itself: the spec parses, belongs to the
// contract's owner at the contract's version and digest, and its approvals
// meet its signature requirement against the twins' keys read from the
// ledger (ContractView.Verify), not the contract's state.
func (w *watcher) verify(ctx context.Context, c *ledger.ContractView, twins map[uint32]ledger.TwinView) (*spec.Deployment, string, error) {
	d, err := c.Deployment()
	if err != nil {
		return nil, "", err
	}
	for _, q := range d.Requirement.Requests {
		if _, ok := twins[q.Twin]; ok {
			continue
		}
		t, err := w.l.Twin(ctx, q.Twin)
		if errors.Is(err, ledger.ErrNotFound) {
			continue // counts as unsigned
		}
		if err != nil {
			return nil, "", fmt.Errorf("%w: twin %d: %w", errLedgerRead, q.Twin, err)
		}
		twins[q.Twin] = t
	}
	res, err := c.Verify(twins)
	if err != nil {
		return nil, "", err
	}
	switch {
	case !res.Met:
		return nil, "", errors.New("signature requirement not met")
	case res.Challenge != c.Digest:
		return nil, "", fmt.Errorf("spec challenge %s is not the contract's digest %s", res.Challenge, c.Digest)
	case d.Owner != c.Owner:
		return nil, "", fmt.Errorf("spec owner %d is not the contract's owner %d", d.Owner, c.Owner)
	case d.Version != c.Version:
		return nil, "", fmt.Errorf("spec version %d is not the contract's version %d", d.Version, c.Version)
	}
	return d, res.Challenge.String(), nil
}

// cancel deletes the deployment of a contract that is no longer active,
// as the API's delete does.
func (w *watcher) cancel(l link) error {
	why := fmt.Sprintf("contract %d is no longer active on %s", l.Contract, w.chain)
	if l.Chain != w.chain {
		why = fmt.Sprintf("contract %d of chain %s: the ledger is now chain %s", l.Contract, l.Chain, w.chain)
	}
	err := w.a.db.bolt.Update(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketDeployments).Get(u64(l.Deployment)); v != nil {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("deployment %d: %w", l.Deployment, err)
			}
			var ev []nodeclient.Event
			if r.State == nodeclient.StateActive {
				r.State = nodeclient.StateDeleting
				ev = append(ev, nodeclient.Event{Kind: "ledger-cancelled", Detail: why})
			}
			if err := w.a.db.put(tx, r, ev); err != nil {
				return err
			}
		}
		if l.Chain != w.chain {
			if b := tx.Bucket(bucketLinks); b != nil {
				return b.Delete(u64(l.Contract))
			}
			return nil
		}
		l.Cancelled = true
		return putLink(tx, l)
	})
	if err != nil {
		return err
	}
	w.log.Info("contract cancelled: removing its deployment", "contract", l.Contract, "deployment", l.Deployment, "why", why)
	return nil
}

// refreshTwins keeps the twins of the node's contracts (owners and the
// signers their requirements list) for the API: all of them read again
// every twinRefresh, an owner not known yet at once. fresh holds twins
// read during this sync.
func (w *watcher) refreshTwins(ctx context.Context, fresh map[uint32]ledger.TwinView) {
	now := w.a.opts.Now()
	w.mu.Lock()
	next := maps.Clone(w.twins)
	stale := now.Sub(w.twinsAt) >= twinRefresh
	w.mu.Unlock()
	maps.Copy(next, fresh)
	want := map[uint32]bool{}
	for _, c := range w.active {
		want[c.Owner] = true
		if !stale {
			continue
		}
		if d, err := spec.Parse(c.Spec); err == nil {
			for _, q := range d.Requirement.Requests {
				want[q.Twin] = true
			}
		}
	}
	for id := range want {
		if _, ok := fresh[id]; ok {
			continue
		}
		if _, ok := next[id]; ok && !stale {
			continue
		}
		t, err := w.l.Twin(ctx, id)
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			delete(next, id)
		case err != nil:
			w.log.Debug("twin", "twin", id, "err", err) // keep what we had
		default:
			next[id] = t
		}
	}
	if stale {
		maps.DeleteFunc(next, func(id uint32, _ ledger.TwinView) bool { return !want[id] })
	}
	w.mu.Lock()
	w.twins = next
	if stale {
		w.twinsAt = now
	}
	w.mu.Unlock()
}

// report submits a node.report for each contract whose state (running,
// failed, removed...) or version differs from the last report, at most
// one per contract per ReportEvery (but for the first report, one after
// "deployed", and "removed", which go at once) and MaxReportsPerStep per
// call. A failure is logged once per streak and retried after the next
// pass; it never holds up the reconcile loop.
func (w *watcher) report(ctx context.Context) {
	if w.node == 0 {
		return
	}
	links, err := w.a.db.links()
	if err != nil {
		w.log.Error("ledger links", "err", err)
		return
	}
	now := w.a.opts.Now()
	budget := MaxReportsPerStep
	for _, id := range sortedKeys(links) {
		l := links[id]
		if l.Chain != w.chain {
			continue
		}
		r, err := w.a.db.get(l.Deployment)
		if err != nil {
			continue
		}
		state, detail, ok := w.a.reportOf(r)
		if !ok {
			continue
		}
		last, sent := w.sent[id]
		if !sent {
			if c := w.active[id]; c != nil && c.Report != nil {
				last = sentReport{state: c.Report.State, version: c.Report.Version}
			}
		}
		if last.state == state && last.version == r.Version {
			if l.Cancelled && state == ledger.ReportRemoved {
				w.forget(id)
			}
			continue
		}
		if sent && now.Sub(last.at) < w.limit && last.version == r.Version && last.state != ledger.ReportDeployed && state != ledger.ReportRemoved {
			continue // no storm: the next pass after the limit sends the state then
		}
		if budget == 0 {
			return
		}
		budget--
		if err := w.submit(ctx, &ledger.NodeReport{Contract: id, State: state, Detail: detail, Version: r.Version}); err != nil {
			if !w.failing {
				w.failing = true
				w.log.Warn("node report not recorded: retrying after the next pass", "contract", id, "state", state, "err", err)
			}
			w.nonceStale = true
			return
		}
		if w.failing {
			w.failing = false
			w.log.Info("node reports recorded again")
		}
		w.log.Info("reported", "contract", id, "state", state, "version", r.Version, "detail", detail)
		w.sent[id] = sentReport{state: state, version: r.Version, at: now}
		if l.Cancelled && state == ledger.ReportRemoved {
			w.forget(id)
		}
	}
}

// forget drops the link of a contract whose removal is on the ledger.
func (w *watcher) forget(id uint64) {
	if err := w.a.db.unlink(id); err != nil {
		w.log.Error("ledger link", "contract", id, "err", err)
		return
	}
	delete(w.sent, id)
}

// submit signs body with the node's key, with a time-based nonce above
// every nonce used before, and sends it.
func (w *watcher) submit(ctx context.Context, body ledger.Body) error {
	n := max(uint64(w.a.opts.Now().UnixNano()), w.nonce+1)
	tx, err := ledger.NewTx(w.chain, ledger.Signer{Secret: w.a.opts.Key, Node: w.node}, n, body)
	if err != nil {
		return err
	}
	w.nonce = n // used, even if refused: the next is higher anyway
	sctx, cancel := context.WithTimeout(ctx, submitTimeout)
	defer cancel()
	return w.l.Submit(sctx, tx)
}

// reportOf is what the node reports of deployment r: removed once it is
// deleted, failed (with the first failing workload and why), running once
// every workload runs or is in place, deployed while some are still being
// made. ok is false while there is nothing to say yet (being deleted, or
// no reconcile pass has looked at it).
func (a *Agent) reportOf(r record) (state, detail string, ok bool) {
	switch r.State {
	case nodeclient.StateDeleted:
		return ledger.ReportRemoved, "", true
	case nodeclient.StateDeleting:
		return "", "", false
	}
	a.mu.Lock()
	seen := a.status[r.ID] != nil
	a.mu.Unlock()
	if !seen {
		return "", "", false
	}
	state = ledger.ReportRunning
	for _, ws := range a.statusOf(r).Workloads {
		switch ws.State {
		case nodeclient.WorkloadFailed:
			return ledger.ReportFailed, reportDetail(ws.Name + ": " + ws.Detail), true
		case nodeclient.WorkloadRestarting:
			return ledger.ReportFailed, reportDetail(ws.Name + ": restarting after " + ws.Detail), true
		case nodeclient.WorkloadPending:
			state = ledger.ReportDeployed
		}
	}
	return state, "", true
}

// reportDetail makes s a valid report detail: no control characters, at
// most ledger.MaxDetail bytes of UTF-8.
func reportDetail(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	for len(s) > ledger.MaxDetail {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// ledgerTwins is the twins registry of a node that watches the ledger:
// the local file's twins, and over them the ledger's twins of the node's
// contracts (owners and signers), so that the owner of a contract reads
// its deployment with the key the ledger holds for it. Twin numbers are
// one space: a number the ledger knows is the ledger's.
type ledgerTwins struct {
	local Twins
	w     *watcher
}

func (t ledgerTwins) Keys(ctx context.Context) (map[uint32]key.Public, error) {
	keys, err := t.local.Keys(ctx)
	if err != nil {
		return nil, err
	}
	t.w.mu.Lock()
	defer t.w.mu.Unlock()
	for id, tw := range t.w.twins {
		keys[id] = tw.Key
	}
	return keys, nil
}

func sortedKeys[K uint64 | uint32, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
