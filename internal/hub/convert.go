package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/oci"
	"github.com/zosgrid/zos/internal/pack"
)

// ConvertOptions configure hub-side conversion (docs/HUB.md, "Conversion").
type ConvertOptions struct {
	// Workers is how many jobs run at once; default one per CPU.
	Workers int
	// Queue is how many admitted jobs may wait for a worker; beyond it a
	// new job is refused with 429. Default 4 per worker.
	Queue int
	// AllowPrivate lets jobs fetch from registries at loopback, private,
	// link-local and other non-public addresses. Off by default: a hub
	// that fetches what its users name must not become their way into the
	// network it runs in.
	AllowPrivate bool
	// URL is the hub's public base URL; converted flists record URL/chunks
	// as their store. Default: the scheme and host of the convert request.
	URL string
	// TempDir is where conversions spool small files' content and
	// uploaded archives (default os.TempDir()).
	TempDir string
	// MaxUpload bounds an uploaded docker-archive (default 20 GiB): a
	// larger one is refused with 413, as soon as that is known.
	MaxUpload int64
	// NoDeltas stores every new chunk whole. By default a job that
	// replaces a tag stores new chunks as deltas against the flist the
	// tag held (pack.Options.Base), so a new version costs the store
	// little more than what changed.
	NoDeltas bool
	// Timeout bounds one job; default 2h.
	Timeout time.Duration
	// MaxBytes bounds the uncompressed layer bytes one job reads (a small
	// gzip stream can expand enormously); default 64 GiB.
	MaxBytes int64
	// Heartbeat is how often a job's state is written to the backend while
	// it waits or runs (default 2s); a job not written for StaleAfter
	// (default 2m) is reported failed: the hub running it is gone.
	Heartbeat, StaleAfter time.Duration
}

func (o ConvertOptions) withDefaults() ConvertOptions {
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Queue <= 0 {
		o.Queue = 4 * o.Workers
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Hour
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 30
	}
	if o.MaxUpload <= 0 {
		o.MaxUpload = 20 << 30
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 2 * time.Second
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = 2 * time.Minute
	}
	return o
}

// jobsPrefix holds conversion jobs: jobs/ID is the job's JSON, written by
// the hub that runs it, so that any hub over the backend answers for it.
const jobsPrefix = "jobs/"

func jobObj(id string) string { return jobsPrefix + id }

// jobsKeep is how long a job's record stays after its last write.
const jobsKeep = 7 * 24 * time.Hour

// converter runs the conversion jobs this hub admitted.
type converter struct {
	h     *Hub
	opt   ConvertOptions
	ctx   context.Context
	stop  context.CancelFunc
	slots chan struct{} // admitted jobs (running or queued)
	run   chan struct{} // running jobs
	tr    http.RoundTripper
	wg    sync.WaitGroup

	mu   sync.Mutex
	live map[string]*liveJob

	total    *prometheus.CounterVec   // result: done, failed, refused
	duration *prometheus.HistogramVec // result
	running  prometheus.Gauge
	queued   prometheus.Gauge
}

// liveJob is a job this hub runs; its state is written to the backend at
// every heartbeat and at the end.
type liveJob struct {
	mu sync.Mutex
	j  hubclient.Job
}

func (l *liveJob) snapshot() hubclient.Job {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.j
}

func (l *liveJob) update(f func(*hubclient.Job)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.j)
}

func newConverter(h *Hub, reg prometheus.Registerer) *converter {
	opt := h.opt.Convert.withDefaults()
	ctx, stop := context.WithCancel(context.Background())
	c := &converter{
		h: h, opt: opt, ctx: ctx, stop: stop,
		slots: make(chan struct{}, opt.Workers+opt.Queue),
		run:   make(chan struct{}, opt.Workers),
		live:  map[string]*liveJob{},
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zos_hub_conversion_jobs_total", Help: "Conversion jobs by result: done, failed, or refused (429, queue full).",
		}, []string{"result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "zos_hub_conversion_duration_seconds", Help: "Conversion jobs' time from admission to end, by result.",
			Buckets: []float64{1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600, 7200},
		}, []string{"result"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zos_hub_conversion_jobs_running", Help: "Conversion jobs running on this hub.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zos_hub_conversion_jobs_queued", Help: "Conversion jobs admitted by this hub and waiting for a worker.",
		}),
	}
	reg.MustRegister(c.total, c.duration, c.running, c.queued)
	c.sweepUploads()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if !opt.AllowPrivate {
		d.Control = refusePrivate
	}
	// No proxy: the address dialed is the registry's, so the check above
	// sees it (a proxy would hide it).
	c.tr = &http.Transport{
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		ExpectContinueTimeout: time.Second,
	}
	return c
}

// close cancels the jobs and waits for them to record their failure.
func (c *converter) close() {
	c.stop()
	c.wg.Wait()
}

// errPrivateAddr refuses a registry address that is not public.
var errPrivateAddr = errors.New("is not a public address: this hub converts from public registries only (start it with --convert-allow-private to allow others)")

// refusePrivate is a net.Dialer.Control that refuses non-public addresses.
// It sees the address actually dialed (after DNS, on every redirect and
// token fetch), so a name that resolves to an internal address, now or
// later, is refused too.
func refusePrivate(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("registry address %q: %w", host, err)
	}
	if !publicAddr(ip) {
		return fmt.Errorf("registry address %s %w", ip, errPrivateAddr)
	}
	return nil
}

// nonPublic are special-purpose ranges (RFC 6890 and successors) that the
// netip predicates do not cover.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("100::/64"),        // discard
}

// nat64 is the well-known NAT64 prefix: its addresses embed an IPv4 one.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// publicAddr reports whether ip is a public unicast address.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// convert answers POST /v1/convert: it admits a job and answers 202 with it.
func (h *Hub) convert(w http.ResponseWriter, r *http.Request) {
	c := h.conv
	var req hubclient.ConvertRequest
	var target hubclient.Ref
	k, _, err := h.signed(w, r, maxJSON, func(k key.Public, body []byte) error {
		err := decodeJSON(body, &req)
		if err == nil {
			target, err = convertTarget(req)
		}
		if err == nil {
			err = h.mayWrite(r.Context(), k, target.NS)
		}
		return err
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := c.slot(w); err != nil {
		h.fail(w, r, err)
		return
	}
	// The credentials stay in src, which only runJob holds: never in the
	// job record, never in a log line.
	src := jobSource{open: req.Source, shown: req.Source, username: req.Username, password: req.Password, platform: req.Platform}
	c.admit(w, r, k, target, src)
}

// jobSource is what a job converts: an oci.Open reference and how to
// open it. shown is the job's Source; spool, if set, is an uploaded
// archive (upload.go), which the job removes when it ends.
type jobSource struct {
	open, shown                  string
	username, password, platform string
	spool                        *spooled
}

// slot takes a place in the conversion queue, or refuses with 429; the
// caller gives it back with <-c.slots unless admit runs the job.
func (c *converter) slot(w http.ResponseWriter) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
		c.total.WithLabelValues("refused").Inc()
		w.Header().Set("Retry-After", "30")
		return errorf(http.StatusTooManyRequests, "the hub's conversion queue is full (%d jobs): try again later", cap(c.slots))
	}
}

// admit records a job for src, holding a slot, starts it and answers 202.
// From here the job owns the slot and src's spool, whatever happens.
func (c *converter) admit(w http.ResponseWriter, r *http.Request, k key.Public, target hubclient.Ref, src jobSource) {
	h := c.h
	var rnd [16]byte
	rand.Read(rnd[:])
	now := h.opt.Now().UTC()
	lj := &liveJob{j: hubclient.Job{
		ID: hex.EncodeToString(rnd[:]), State: hubclient.JobQueued, Source: src.shown, Target: target.String(),
		By: k, Created: now, Updated: now,
	}}
	if err := h.putJSON(r.Context(), jobObj(lj.j.ID), lj.j); err != nil {
		<-c.slots
		src.spool.remove()
		h.fail(w, r, err)
		return
	}
	admitted := lj.j
	c.mu.Lock()
	c.live[admitted.ID] = lj
	c.mu.Unlock()
	c.wg.Add(1)
	c.queued.Inc()
	go c.runJob(lj, src, storeURL(c.opt.URL, r))
	h.log.Info("conversion queued", "job", admitted.ID, "source", admitted.Source, "target", admitted.Target, "by", k)
	w.Header().Set("Location", "/v1/jobs/"+admitted.ID)
	writeJSON(w, http.StatusAccepted, admitted)
}

// convertTarget checks a request's source and target.
func convertTarget(req hubclient.ConvertRequest) (hubclient.Ref, error) {
	if strings.HasPrefix(req.Source, oci.DockerArchive) {
		return hubclient.Ref{}, errorf(http.StatusBadRequest, "source %q: a docker-archive is uploaded: POST /v1/convert/archive", req.Source)
	}
	if !strings.HasPrefix(req.Source, oci.Docker) || len(req.Source) == len(oci.Docker) {
		// oci: and docker-archive: name files, and the hub's files are
		// not its users' to read.
		return hubclient.Ref{}, errorf(http.StatusBadRequest, "source %q: the hub converts images from registries: docker://REF", req.Source)
	}
	if strings.ContainsAny(req.Source, " \t\r\n") || len(req.Source) > 1024 {
		return hubclient.Ref{}, errorf(http.StatusBadRequest, "source %q is not an image reference", req.Source)
	}
	if host, _, _ := strings.Cut(strings.TrimPrefix(req.Source, oci.Docker), "/"); strings.Contains(host, "@") {
		// USER:PASSWORD@HOST would be kept in the job record and the log;
		// the reference is not echoed back.
		return hubclient.Ref{}, errorf(http.StatusBadRequest, "source: credentials go in username and password, not in the reference")
	}
	return parseTarget(req.Target)
}

// parseTarget checks a conversion's target: NS/NAME[:TAG], latest by
// default.
func parseTarget(s string) (hubclient.Ref, error) {
	t, err := hubclient.ParseRef(s)
	if err != nil {
		return t, errorf(http.StatusBadRequest, "target: %v", err)
	}
	if !t.Digest.IsZero() {
		return t, errorf(http.StatusBadRequest, "target: convert to NS/NAME[:TAG], not to a digest")
	}
	if t.Tag == "" {
		t.Tag = hubclient.DefaultTag
	}
	return t, nil
}

// storeURL is the chunk store a converted flist records: the hub's.
func storeURL(base string, r *http.Request) string {
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host // a signed request's host, checked against Options.Hosts
	}
	return strings.TrimRight(base, "/") + "/chunks"
}

// runJob waits for a worker, converts, publishes, and records the end.
func (c *converter) runJob(lj *liveJob, src jobSource, store string) {
	defer c.wg.Done()
	defer func() { <-c.slots }()
	defer src.spool.remove()
	h := c.h
	start := time.Now()
	hbDone := make(chan struct{})
	hbStop := make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(c.opt.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-hbStop:
				return
			case <-t.C:
				lj.update(func(j *hubclient.Job) { j.Updated = h.opt.Now().UTC() })
				if err := h.putJSON(c.ctx, jobObj(lj.j.ID), lj.snapshot()); err != nil && c.ctx.Err() == nil {
					h.log.Warn("recording a conversion job", "job", lj.j.ID, "err", err)
				}
			}
		}
	}()

	pushed, err := c.convert(lj, src, store)
	src.spool.remove() // before anyone can read that the job is over

	close(hbStop)
	<-hbDone
	result := hubclient.JobDone
	if err != nil {
		result = hubclient.JobFailed
	}
	// Counted before anyone can read that the job is over.
	c.total.WithLabelValues(result).Inc()
	c.duration.WithLabelValues(result).Observe(time.Since(start).Seconds())
	lj.update(func(j *hubclient.Job) {
		now := h.opt.Now().UTC()
		j.State, j.Updated, j.Finished = result, now, now
		if err != nil {
			j.Error = err.Error()
			if src.spool != nil { // the hub's file names are not the user's business
				j.Error = strings.ReplaceAll(j.Error, src.spool.path, "upload")
			}
		} else {
			j.Result = &pushed
		}
	})
	final := lj.snapshot()
	// The end is written even while the hub shuts down: a reader must not
	// wait for the stale timeout to learn what it already knows.
	wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if werr := h.putJSON(wctx, jobObj(final.ID), final); werr != nil {
		h.log.Error("recording the end of a conversion job", "job", final.ID, "err", werr)
	}
	cancel()
	c.mu.Lock()
	delete(c.live, final.ID)
	c.mu.Unlock()
	if err != nil {
		h.log.Warn("conversion failed", "job", final.ID, "source", final.Source, "target", final.Target, "err", final.Error)
	} else {
		h.log.Info("conversion done", "job", final.ID, "source", final.Source, "ref", pushed.Ref, "digest", pushed.Digest,
			"layers", final.Progress.Layers, "bytes", final.Progress.Bytes, "seconds", time.Since(start).Seconds())
	}
}

// convert runs one job once a worker is free.
func (c *converter) convert(lj *liveJob, src jobSource, store string) (hubclient.Pushed, error) {
	select {
	case c.run <- struct{}{}:
	case <-c.ctx.Done():
		c.queued.Dec()
		return hubclient.Pushed{}, errors.New("the hub shut down before the job started")
	}
	c.queued.Dec()
	c.running.Inc()
	defer func() {
		<-c.run
		c.running.Dec()
	}()
	lj.update(func(j *hubclient.Job) {
		j.State = hubclient.JobRunning
		j.Started = c.h.opt.Now().UTC()
	})
	ctx, cancel := context.WithTimeoutCause(c.ctx, c.opt.Timeout, fmt.Errorf("the job ran for more than %v", c.opt.Timeout))
	defer cancel()
	pushed, err := c.convertImage(ctx, lj, src, store)
	if err != nil && c.ctx.Err() != nil {
		return pushed, fmt.Errorf("the hub shut down while converting: %w", err)
	}
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(err, cause) {
		err = fmt.Errorf("%w (%w)", cause, err)
	}
	return pushed, err
}

func (c *converter) convertImage(ctx context.Context, lj *liveJob, src jobSource, store string) (hubclient.Pushed, error) {
	h := c.h
	if src.spool != nil {
		if err := checkArchive(src.spool.path); err != nil {
			return hubclient.Pushed{}, err
		}
	}
	img, err := oci.Open(ctx, src.open, oci.Options{
		Username: src.username, Password: src.password, Platform: src.platform, Transport: c.tr,
	})
	if err != nil {
		// The registry client tries HTTPS, then HTTP, and joins both
		// refusals into one long line; one says it.
		var op *net.OpError
		if errors.As(err, &op) && errors.Is(op.Err, errPrivateAddr) {
			return hubclient.Pushed{}, fmt.Errorf("%s: %w", src.open, op.Err)
		}
		return hubclient.Pushed{}, err
	}
	ref, _ := hubclient.ParseRef(lj.snapshot().Target)
	var base *flist.Reader
	if !c.opt.NoDeltas {
		base = c.previous(ctx, ref)
	}
	if base != nil {
		lj.update(func(j *hubclient.Job) { j.Base = base.Digest() })
	}
	lj.update(func(j *hubclient.Job) {
		j.Progress.Layers = img.NumLayers()
		j.Progress.ImageBytes = img.Size()
	})
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	tooBig := fmt.Errorf("the image's layers hold more than %d bytes (the hub's limit)", c.opt.MaxBytes)
	fl, _, err := pack.Layers(ctx, img, h.b.Chunks, pack.Options{
		Meta:    img.Meta(),
		Stores:  []string{store},
		TempDir: c.opt.TempDir,
		Base:    base,
		Progress: func(s pack.Stats) {
			if s.Bytes > c.opt.MaxBytes {
				cancel(tooBig)
			}
			lj.update(func(j *hubclient.Job) {
				j.Progress.Layer, j.Progress.Layers = s.Layer, s.Layers
				j.Progress.Bytes, j.Progress.Chunks, j.Progress.NewChunks = s.Bytes, s.Chunks, s.NewChunks
				j.Progress.Stored, j.Progress.DeltaChunks = s.StoredBytes, s.DeltaChunks
			})
		},
	})
	if context.Cause(ctx) == tooBig {
		return hubclient.Pushed{}, tooBig
	}
	if err != nil {
		return hubclient.Pushed{}, err
	}
	pushed, result, err := h.publish(ctx, ref, fl, lj.j.By)
	h.metrics.pushes.WithLabelValues(result).Inc()
	return pushed, err
}

// previous returns the flist ref's tag holds, the base of a new
// version's deltas, or nil when there is none or it cannot be read (then
// the new chunks are stored whole; nothing else changes). A link is not
// followed: publishing over one fails anyway, and a base must be the
// target's own previous version. The base's chunks are in the hub's
// store, bases included: the hub named it (docs/HUB.md, "Push").
func (c *converter) previous(ctx context.Context, ref hubclient.Ref) *flist.Reader {
	h := c.h
	var t hubclient.TagRequest
	if err := h.getJSON(ctx, tagObj(ref.NS, ref.Name, ref.Tag), &t); err != nil {
		if !isNotFound(err) {
			h.log.Warn("conversion: reading the tag it replaces, to store deltas against", "ref", ref.String(), "err", err)
		}
		return nil
	}
	r, err := h.storedFlist(ctx, t.Digest)
	if err == nil {
		err = r.Validate()
	}
	if err != nil {
		h.log.Warn("conversion: the flist of the tag it replaces cannot be read; new chunks are stored whole", "ref", ref.String(), "digest", t.Digest, "err", err)
		return nil
	}
	return r
}

// getJob answers GET /v1/jobs/ID: readable by whoever may read the target
// namespace (the ID, 128 random bits, is not guessable).
func (h *Hub) getJob(w http.ResponseWriter, r *http.Request) {
	c := h.conv
	id := r.PathValue("id")
	if err := hubclient.JobID(id); err != nil {
		h.fail(w, r, errorf(http.StatusBadRequest, "%v", err))
		return
	}
	k, err := h.reader(w, r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	c.mu.Lock()
	lj := c.live[id]
	c.mu.Unlock()
	var j hubclient.Job
	if lj != nil {
		j = lj.snapshot()
	} else if err := h.getJSON(r.Context(), jobObj(id), &j); err != nil {
		if isNotFound(err) {
			err = errorf(http.StatusNotFound, "no job %s", id)
		}
		h.fail(w, r, err)
		return
	}
	ns, _, _ := strings.Cut(j.Target, "/")
	err = h.mayRead(r.Context(), k, ns)
	if err == nil {
		err = h.spend(r.Context(), k)
	}
	if err != nil {
		if isNotFound(err) {
			err = errorf(http.StatusNotFound, "no job %s", id)
		}
		h.fail(w, r, err)
		return
	}
	if !j.Over() && lj == nil {
		if last := j.Updated; h.opt.Now().Sub(last) > c.opt.StaleAfter {
			j.State = hubclient.JobFailed
			j.Error = fmt.Sprintf("the hub running this job stopped (no word from it since %s)", last.Format(time.RFC3339))
			j.Finished = h.opt.Now().UTC()
			if err := h.putJSON(r.Context(), jobObj(id), j); err != nil {
				h.log.Warn("recording a stale conversion job", "job", id, "err", err)
			}
		}
	}
	writeJSON(w, http.StatusOK, j)
}

// pruneJobs deletes job records not written for jobsKeep.
func pruneJobs(ctx context.Context, o object.Store, now time.Time) error {
	var old []string
	err := o.List(ctx, jobsPrefix, func(fi object.Info) error {
		if now.Sub(fi.ModTime) > jobsKeep {
			old = append(old, fi.Name)
		}
		return nil
	})
	for _, n := range old {
		err = errors.Join(err, o.Delete(ctx, n))
	}
	return err
}
