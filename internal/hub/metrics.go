package hub

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/zosgrid/zos/internal/hub/hubclient"
)

// metrics are the hub's Prometheus series (docs/HUB.md lists them). Each
// Hub has its own registry: no package-level state.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec   // route, method, code
	duration     *prometheus.HistogramVec // route
	bytesOut     *prometheus.CounterVec   // route
	bytesIn      *prometheus.CounterVec   // route
	chunkLookups *prometheus.CounterVec   // result: hit, miss
	pushes       *prometheus.CounterVec   // result
	authRefused  prometheus.Counter
	limited      *prometheus.CounterVec // what: writes, failures
	gcRuns       *prometheus.CounterVec // result
	gcDeleted    prometheus.Counter
	gcFreed      prometheus.Counter

	recompressed    prometheus.Counter
	recompressSaved prometheus.Counter
	recompressQueue prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zos_hub_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "zos_hub_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zos_hub_response_bytes_total", Help: "Response body bytes sent, by route.",
		}, []string{"route"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zos_hub_request_bytes_total", Help: "Request body bytes received (as declared), by route.",
		}, []string{"route"}),
		chunkLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zos_hub_chunk_lookups_total", Help: "Chunk lookups (GET and HEAD requests, IDs of batched gets) by result: hit (found) or miss (not found).",
		}, []string{"result"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zos_hub_flist_pushes_total", Help: "Flist pushes and promotes by result: ok, invalid, missing_chunks, refused, busy, error.",
		}, []string{"result"}),
		authRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_hub_auth_refused_total", Help: "Requests refused for their signature (401) or permission (403).",
		}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zos_hub_rate_limited_total", Help: "Requests answered 429 by the rate limits, by what was over: writes (a key's write rate) or failures (a key's or an address's refusals).",
		}, []string{"what"}),
		gcRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zos_hub_gc_runs_total", Help: "Garbage collections run through this hub, by result.",
		}, []string{"result"}),
		gcDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_hub_gc_deleted_chunks_total", Help: "Chunks deleted by garbage collections run through this hub.",
		}),
		gcFreed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_hub_gc_deleted_bytes_total", Help: "Bytes of chunks deleted by garbage collections run through this hub.",
		}),
		recompressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_hub_recompressed_chunks_total", Help: "Chunks this hub re-sealed at its recompression level and replaced.",
		}),
		recompressSaved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_hub_recompress_saved_bytes_total", Help: "Bytes of blobs that recompression saved.",
		}),
		recompressQueue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zos_hub_recompress_pending_flists", Help: "Flists queued for recompression or being recompressed.",
		}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.bytesOut, m.bytesIn, m.chunkLookups, m.pushes,
		m.authRefused, m.limited, m.gcRuns, m.gcDeleted, m.gcFreed,
		m.recompressed, m.recompressSaved, m.recompressQueue,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// looked counts an ID a batched get answered.
func (m *metrics) looked(found bool) {
	if found {
		m.chunkLookups.WithLabelValues("hit").Inc()
	} else {
		m.chunkLookups.WithLabelValues("miss").Inc()
	}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// recorder captures the status and size of an answer.
type recorder struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ReadFrom keeps the ResponseWriter's own ReadFrom in reach, so a chunk
// sent from its file goes out with sendfile through the recorder too.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := io.Copy(r.ResponseWriter, src)
	r.bytes += n
	return n, err
}

// observe counts and logs every request. Chunk traffic is logged at debug
// level (it is most of the requests); everything else at info.
func (h *Hub) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		route := routeOf(r.Pattern)
		m := h.metrics
		m.requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.code)).Inc()
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		m.bytesOut.WithLabelValues(route).Add(float64(rec.bytes))
		if r.ContentLength > 0 {
			m.bytesIn.WithLabelValues(route).Add(float64(r.ContentLength))
		}
		if rec.code == http.StatusUnauthorized || rec.code == http.StatusForbidden {
			m.authRefused.Inc()
		}
		level := slogInfo
		if route == "chunks" {
			level = slogDebug
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				switch rec.code {
				case http.StatusOK:
					m.chunkLookups.WithLabelValues("hit").Inc()
				case http.StatusNotFound:
					m.chunkLookups.WithLabelValues("miss").Inc()
				}
			}
		}
		if h.log.Enabled(r.Context(), level) { // most chunk requests: spare building the line
			h.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "route", route,
				"status", rec.code, "bytes", rec.bytes, "ms", float64(time.Since(start).Microseconds())/1000, "remote", r.RemoteAddr)
		}
	})
}

func (m *metrics) countGC(st hubclient.GCStats, err error) {
	if err != nil {
		m.gcRuns.WithLabelValues("error").Inc()
	} else {
		m.gcRuns.WithLabelValues("ok").Inc()
	}
	if !st.DryRun {
		m.gcDeleted.Add(float64(st.Deleted))
		m.gcFreed.Add(float64(st.DeletedBytes))
	}
}
