package ledger

import (
	"fmt"
	"testing"
)

// BenchmarkBlock: a block of 1000 node reports on one contract, the most
// frequent transaction, finalized and committed.
func BenchmarkBlock(b *testing.B) {
	a := openTest(b)
	run(b, a, scenario(b)[:3])
	node := Signer{Secret: testKey("n1"), Node: 1}
	nonce := uint64(100)
	for b.Loop() {
		b.StopTimer()
		txs := make([][]byte, 1000)
		for i := range txs {
			nonce++
			txs[i] = mustTx(b, node, nonce, &NodeReport{Contract: 1, State: ReportRunning, Detail: fmt.Sprint(i), Version: 1})
		}
		h, _ := a.Info()
		b.StartTimer()
		res, _ := a.FinalizeBlock(h+1, blockTimeOf(h+1), txs)
		if res[999].Code != 0 {
			b.Fatal(res[999].Log)
		}
		if err := a.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/tx")
}
