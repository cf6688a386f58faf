// Command mountbench is the network half of bench/mount.sh: a toxiproxy
// server with two extra toxics, and a static file server.
//
// It lives in its own module so that toxiproxy and its dependencies stay out
// of zos's go.mod.
//
//	mountbench proxy -api 127.0.0.1:8474
//	mountbench serve -root DIR -listen 127.0.0.1:8080
//
// The file server counts the requests it serves: GET /.mountbench/requests
// answers the count, POST resets it.
//
// # Toxics
//
// Toxiproxy's own bandwidth toxic limits each connection separately, so a
// client that opens eight connections gets eight times the rate. A link of
// 100 Mbit/s is one limit shared by every connection; the shared_bandwidth
// toxic is that: one pacing clock per toxic, whatever the number of
// connections (attribute "rate" in KB/s, 1 KB = 1000 bytes, as for
// toxiproxy's bandwidth toxic). It paces without bursts: idle time is not
// saved up.
//
// The count toxic passes data through unchanged and counts it; its attribute
// "bytes" (read with GET /proxies/NAME/toxics/TOXIC) is the number of bytes
// that went through it since it was added.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/stream"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
)

// SharedBandwidth passes data at Rate KB/s summed over every connection of
// the proxy it is on.
type SharedBandwidth struct {
	Rate int64 `json:"rate"` // KB/s, 1 KB = 1000 bytes

	mu   sync.Mutex
	next time.Time // when the link is free again
}

// Pipe sends each chunk when the shared link has carried everything queued
// before it.
func (t *SharedBandwidth) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			if t.Rate > 0 {
				for _, part := range split(c, 16<<10) {
					if !t.wait(stub, len(part.Data)) {
						stub.Output <- part // don't drop data on the floor
						return
					}
					stub.Output <- part
				}
				continue
			}
			stub.Output <- c
		}
	}
}

// slack is how far behind schedule the link may fall before it counts as
// idle: the largest burst it lets through after idling.
const slack = 2 * time.Millisecond

// wait books n bytes on the link and sleeps until they have gone through.
// It returns false if the stub was interrupted.
func (t *SharedBandwidth) wait(stub *toxics.ToxicStub, n int) bool {
	now := time.Now()
	t.mu.Lock()
	// A link that was idle starts now; one that is only behind by a timer's
	// oversleep keeps its schedule (else every oversleep would be lost time).
	if floor := now.Add(-slack); t.next.Before(floor) {
		t.next = floor
	}
	t.next = t.next.Add(time.Duration(n) * time.Millisecond / time.Duration(t.Rate))
	until := t.next
	t.mu.Unlock()
	d := time.Until(until)
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-stub.Interrupt:
		return false
	}
}

// split cuts a chunk into pieces of at most max bytes, so that a large read
// does not hold the link in one step.
func split(c *stream.StreamChunk, max int) []*stream.StreamChunk {
	if len(c.Data) <= max {
		return []*stream.StreamChunk{c}
	}
	var out []*stream.StreamChunk
	for d := c.Data; len(d) > 0; {
		n := min(max, len(d))
		out = append(out, &stream.StreamChunk{Data: d[:n], Timestamp: c.Timestamp})
		d = d[n:]
	}
	return out
}

// Count passes data through and counts the bytes.
type Count struct {
	Bytes counter `json:"bytes"`
}

type counter struct{ n atomic.Int64 }

func (c *counter) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatInt(c.n.Load(), 10)), nil
}

func (c *counter) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	c.n.Store(n)
	return nil
}

// Pipe forwards every chunk, adding its length to the count.
func (t *Count) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			t.Bytes.n.Add(int64(len(c.Data)))
			stub.Output <- c
		}
	}
}

// GetBufferSize keeps the counter from becoming a one-chunk bottleneck.
func (t *Count) GetBufferSize() int { return 1024 }

func init() {
	toxics.Register("shared_bandwidth", new(SharedBandwidth))
	toxics.Register("count", new(Count))
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "proxy":
		err = runProxy(os.Args[2:])
	case "serve":
		err = runServe(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mountbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mountbench proxy -api HOST:PORT | mountbench serve -root DIR -listen HOST:PORT")
	os.Exit(2)
}

// runProxy serves toxiproxy's HTTP API (proxies and toxics are created
// through it) until SIGTERM or SIGINT.
func runProxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	api := fs.String("api", "127.0.0.1:8474", "toxiproxy API address")
	fs.Parse(args)
	host, port, err := net.SplitHostPort(*api)
	if err != nil {
		return err
	}
	logger := zerolog.New(os.Stderr).Level(zerolog.WarnLevel)
	zerolog.SetGlobalLevel(zerolog.WarnLevel)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), logger)
	go exitOnSignal()
	srv.Listen(host, port) // blocks
	return nil
}

// runServe serves the files under root read-only (a static HTTP chunk store).
func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	root := fs.String("root", ".", "directory to serve")
	listen := fs.String("listen", "127.0.0.1:8080", "address")
	fs.Parse(args)
	go exitOnSignal()
	s := &http.Server{Addr: *listen, Handler: countRequests(http.FileServer(http.Dir(*root)))}
	return s.ListenAndServe()
}

// countRequests counts the requests h serves (each chunk a client fetches is
// one, so the count is the number of round trips it paid). GET
// /.mountbench/requests answers the count, and POST resets it; neither is
// counted.
func countRequests(h http.Handler) http.Handler {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.mountbench/requests" {
			if r.Method == http.MethodPost {
				n.Store(0)
			}
			fmt.Fprintln(w, n.Load())
			return
		}
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

func exitOnSignal() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
	os.Exit(0)
}
