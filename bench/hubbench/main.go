// Command hubbench is the load generator of bench/hub.sh: N concurrent
// keep-alive clients GET random chunk paths from several servers for a
// fixed time each, servers alternated over rounds, and it prints a
// markdown table: requests/s, MB/s, p50 and p99 latency, and each
// server's throughput as a ratio to the reference server's.
//
// Usage:
//
//	hubbench -store DIR -c 64 -d 10s -rounds 3 -ref nginx zos=http://127.0.0.1:8080/chunks nginx=http://127.0.0.1:8081/chunks
//
// DIR is the dir store both servers serve (its files ROOT/h[0:2]/h give
// the paths and the expected sizes; every answer is checked for status 200
// and length). It is stdlib only, a module of its own, so it builds with
// nothing but the Go toolchain.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type target struct{ name, base string }

type blob struct {
	path string // /h[0:2]/h
	size int64
}

// run is one timed run against one server.
type run struct {
	Server   string        `json:"server"`
	Round    int           `json:"round"`
	Requests int64         `json:"requests"`
	Bytes    int64         `json:"bytes"`
	Errors   int64         `json:"errors"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	lat      []time.Duration
}

func main() {
	storeDir := flag.String("store", "", "dir store the servers serve (ROOT/h[0:2]/h)")
	conc := flag.Int("c", 64, "concurrent clients (one keep-alive connection each)")
	dur := flag.Duration("d", 10*time.Second, "duration of one run")
	warm := flag.Duration("warm", 2*time.Second, "unmeasured warm-up before each run")
	rounds := flag.Int("rounds", 3, "rounds; each runs every server once, in alternating order")
	ref := flag.String("ref", "nginx", "server the ratio column compares with")
	jsonOut := flag.String("json", "", "also write every run as JSON lines to this file")
	seed := flag.Uint64("seed", 1, "random seed of the path sequence")
	flag.Parse()
	if *storeDir == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: hubbench -store DIR [flags] NAME=URL...")
		os.Exit(2)
	}
	var targets []target
	for _, a := range flag.Args() {
		n, u, ok := strings.Cut(a, "=")
		if !ok {
			fail("argument %q: want NAME=URL", a)
		}
		targets = append(targets, target{n, strings.TrimSuffix(u, "/")})
	}
	blobs, total := list(*storeDir)
	if len(blobs) == 0 {
		fail("no blobs in %s", *storeDir)
	}
	fmt.Fprintf(os.Stderr, "hubbench: %d blobs, %.1f MiB, mean %.1f KiB; %d clients, %v per run, %d rounds\n",
		len(blobs), float64(total)/(1<<20), float64(total)/float64(len(blobs))/1024, *conc, *dur, *rounds)

	var runs []*run
	for r := 1; r <= *rounds; r++ {
		order := slices.Clone(targets)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		for _, t := range order {
			res := load(t, blobs, *conc, *warm, *dur, *seed+uint64(r))
			res.Round = r
			fmt.Fprintf(os.Stderr, "round %d %-8s %9.0f req/s %8.1f MB/s p50 %-9v p99 %-9v errors %d\n", r, t.name,
				float64(res.Requests)/res.Elapsed.Seconds(), float64(res.Bytes)/res.Elapsed.Seconds()/1e6,
				res.P50.Round(time.Microsecond), res.P99.Round(time.Microsecond), res.Errors)
			runs = append(runs, res)
		}
	}
	if *jsonOut != "" {
		f, err := os.Create(*jsonOut)
		if err != nil {
			fail("%v", err)
		}
		enc := json.NewEncoder(f)
		for _, r := range runs {
			enc.Encode(r)
		}
		f.Close()
	}
	report(os.Stdout, targets, runs, *ref, *conc, *dur)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "hubbench: "+format+"\n", args...)
	os.Exit(1)
}

func list(root string) ([]blob, int64) {
	var out []blob
	var total int64
	shards, err := os.ReadDir(root)
	if err != nil {
		fail("%v", err)
	}
	for _, sh := range shards {
		if !sh.IsDir() || len(sh.Name()) != 2 {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(root, sh.Name()))
		if err != nil {
			fail("%v", err)
		}
		for _, e := range ents {
			if len(e.Name()) != 64 || !strings.HasPrefix(e.Name(), sh.Name()) {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			out = append(out, blob{"/" + sh.Name() + "/" + e.Name(), fi.Size()})
			total += fi.Size()
		}
	}
	return out, total
}

// load runs conc clients against t: warm-up, then a measured run of dur.
func load(t target, blobs []blob, conc int, warm, dur time.Duration, seed uint64) *run {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conc,
		MaxIdleConnsPerHost: conc,
		MaxConnsPerHost:     conc,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var measuring atomic.Bool
	var reqs, bytes, errs atomic.Int64
	lats := make([][]time.Duration, conc)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	buf := make([][]byte, conc)
	for i := range conc {
		buf[i] = make([]byte, 256<<10)
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for ctx.Err() == nil {
				b := blobs[rng.IntN(len(blobs))]
				start := time.Now()
				n, err := get(ctx, cl, t.base+b.path, buf[i])
				el := time.Since(start)
				if ctx.Err() != nil {
					return
				}
				ok := err == nil && n == b.size
				if !measuring.Load() {
					continue
				}
				if !ok {
					errs.Add(1)
					continue
				}
				reqs.Add(1)
				bytes.Add(n)
				lats[i] = append(lats[i], el)
			}
		})
	}
	time.Sleep(warm)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(dur)
	measuring.Store(false)
	elapsed := time.Since(start)
	cancel()
	wg.Wait()

	r := &run{Server: t.name, Requests: reqs.Load(), Bytes: bytes.Load(), Errors: errs.Load(), Elapsed: elapsed}
	for _, l := range lats {
		r.lat = append(r.lat, l...)
	}
	slices.Sort(r.lat)
	r.P50, r.P99 = pct(r.lat, 0.50), pct(r.lat, 0.99)
	return r
}

func get(ctx context.Context, cl *http.Client, url string, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, buf)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return n, err
}

func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// report prints one row per server: throughput summed over its rounds,
// latency percentiles over all its requests, and the best round's rate.
func report(w io.Writer, targets []target, runs []*run, ref string, conc int, dur time.Duration) {
	type agg struct {
		reqs, bytes, errs int64
		elapsed           time.Duration
		lat               []time.Duration
		rounds            []float64
	}
	by := map[string]*agg{}
	for _, r := range runs {
		a := by[r.Server]
		if a == nil {
			a = &agg{}
			by[r.Server] = a
		}
		a.reqs += r.Requests
		a.bytes += r.Bytes
		a.errs += r.Errors
		a.elapsed += r.Elapsed
		a.lat = append(a.lat, r.lat...)
		a.rounds = append(a.rounds, float64(r.Requests)/r.Elapsed.Seconds())
	}
	rate := func(a *agg) float64 { return float64(a.reqs) / a.elapsed.Seconds() }
	fmt.Fprintf(w, "| server | requests/s | MB/s | p50 | p99 | rounds (req/s) | errors | throughput vs %s |\n", ref)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|---:|---:|")
	for _, t := range targets {
		a := by[t.name]
		slices.Sort(a.lat)
		ratio := "-"
		if rf := by[ref]; rf != nil && rf.reqs > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(a.bytes)/a.elapsed.Seconds()/(float64(rf.bytes)/rf.elapsed.Seconds()))
		}
		var rs []string
		for _, x := range a.rounds {
			rs = append(rs, fmt.Sprintf("%.0f", x))
		}
		fmt.Fprintf(w, "| %s | %.0f | %.1f | %s | %s | %s | %d | %s |\n", t.name, rate(a),
			float64(a.bytes)/a.elapsed.Seconds()/1e6, ms(pct(a.lat, .5)), ms(pct(a.lat, .99)), strings.Join(rs, ", "), a.errs, ratio)
	}
	fmt.Fprintf(w, "\n%d keep-alive clients, random chunks, %v per server per round, rounds alternate the order.", conc, dur)
	// Each round runs every server back to back: the ratio within a round
	// is the one least disturbed by whatever else the machine does.
	var per []string
	for _, t := range targets {
		if t.name == ref {
			continue
		}
		var rs []float64
		for _, r := range runs {
			if r.Server != t.name {
				continue
			}
			for _, q := range runs {
				if q.Server == ref && q.Round == r.Round && q.Bytes > 0 {
					rs = append(rs, (float64(r.Bytes)/r.Elapsed.Seconds())/(float64(q.Bytes)/q.Elapsed.Seconds()))
				}
			}
		}
		if len(rs) > 0 {
			slices.Sort(rs)
			var s []string
			for _, x := range rs {
				s = append(s, fmt.Sprintf("%.2f", x))
			}
			per = append(per, fmt.Sprintf("%s/%s per round: %s (median %.2fx)", t.name, ref, strings.Join(s, ", "), rs[len(rs)/2]))
		}
	}
	if len(per) > 0 {
		fmt.Fprintf(w, " Throughput ratio %s.", strings.Join(per, "; "))
	}
	fmt.Fprintln(w)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
