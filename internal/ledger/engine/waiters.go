package engine

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cometbft/cometbft/types"
)

// txWaiters hands committed transactions' results to the Broadcasts
// waiting for them.
//
// One subscription to every transaction event serves all of them: a
// subscription per transaction would make CometBFT's event bus match every
// event against every waiting query, quadratic in a busy block. The
// subscription is buffered, so that a slow reader can never hold up
// consensus; CometBFT cancels it if the buffer overflows. Then it is made
// again, and every waiter is told (lost) to look in the transaction index
// for a result it may have missed meanwhile.
type txWaiters struct {
	log    *slog.Logger
	bus    *types.EventBus
	buffer int

	mu      sync.Mutex
	waiting map[string][]chan Result // by transaction hash
	lost    chan struct{}            // closed and replaced when the subscription is lost
}

const (
	txSubscriber = "engine-tx-waiters"
	// txBuffer is the subscription's buffer: a few blocks of transactions
	// even on a fast chain.
	txBuffer = 10000
)

var txQuery = types.EventQueryTx

func newTxWaiters(log *slog.Logger, bus *types.EventBus) *txWaiters {
	return &txWaiters{log: log, bus: bus, buffer: txBuffer, waiting: map[string][]chan Result{}, lost: make(chan struct{})}
}

// run subscribes and dispatches until the event bus stops (at Node.Stop).
// It is not stopped by its own signal: the bus must stay drained until it
// stops. ready is closed once the first subscription is made.
func (w *txWaiters) run(ready chan<- struct{}) {
	first := true
	for {
		s, err := w.bus.Subscribe(context.Background(), txSubscriber, txQuery, w.buffer)
		if err != nil {
			if !w.bus.IsRunning() {
				if first {
					close(ready)
				}
				return
			}
			w.log.Warn("transaction subscription", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if first {
			close(ready)
			first = false
		} else {
			w.signalLost()
		}
		for done := false; !done; {
			select {
			case msg := <-s.Out():
				if ev, ok := msg.Data().(types.EventDataTx); ok {
					w.deliver(txResult(ev.Tx, ev.Height, ev.Result.Code, ev.Result.Log, ev.Result.Events))
				}
			case <-s.Canceled():
				done = true
			}
		}
		if !w.bus.IsRunning() {
			return
		}
		w.log.Warn("transaction subscription lost; resubscribing", "err", s.Err())
		_ = w.bus.UnsubscribeAll(context.Background(), txSubscriber)
	}
}

func (w *txWaiters) deliver(r Result) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.waiting[string(r.Hash)] {
		select {
		case ch <- r:
		default: // already has a result
		}
	}
}

func (w *txWaiters) signalLost() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.lost)
	w.lost = make(chan struct{})
}

// add registers a wait for hash's result; the returned channel receives
// it, lost is closed if a result may have been missed, and cancel ends the
// wait.
func (w *txWaiters) add(hash []byte) (results <-chan Result, lost <-chan struct{}, cancel func()) {
	ch := make(chan Result, 1)
	key := string(hash)
	w.mu.Lock()
	w.waiting[key] = append(w.waiting[key], ch)
	lost = w.lost
	w.mu.Unlock()
	return ch, lost, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		chs := w.waiting[key]
		for i, c := range chs {
			if c == ch {
				chs = append(chs[:i], chs[i+1:]...)
				break
			}
		}
		if len(chs) == 0 {
			delete(w.waiting, key)
		} else {
			w.waiting[key] = chs
		}
	}
}
