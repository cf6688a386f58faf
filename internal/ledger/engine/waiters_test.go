package engine

import (
	"log/slog"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/types"
)

// A reader too slow for the subscription's buffer loses it; the waiters
// are told, and results flow again on the new subscription.
func TestTxWaitersLost(t *testing.T) {
	bus := types.NewEventBus()
	if err := bus.Start(); err != nil {
		t.Fatal(err)
	}
	w := newTxWaiters(slog.New(slog.DiscardHandler), bus)
	w.buffer = 1
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		w.run(ready)
	}()
	<-ready

	publish := func(tx string) {
		t.Helper()
		err := bus.PublishEventTx(types.EventDataTx{TxResult: abci.TxResult{Height: 3, Tx: []byte(tx), Result: abci.ExecTxResult{Code: 5, Log: "no"}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	results, lost, cancel := w.add(types.Tx("x").Hash())
	defer cancel()

	// Hold the dispatcher (deliver takes the lock) while more events come
	// than the buffer holds.
	w.mu.Lock()
	for i := range 5 {
		publish(string(rune('a' + i)))
	}
	w.mu.Unlock()
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("lost subscription not signalled")
	}

	publish("x")
	select {
	case r := <-results:
		if r.Height != 3 || r.Code != 5 || r.Log != "no" || string(r.Hash) != string(types.Tx("x").Hash()) {
			t.Fatalf("result %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result after resubscribing")
	}

	if err := bus.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("dispatcher still running after the bus stopped")
	}
}
