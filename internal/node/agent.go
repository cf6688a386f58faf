package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/node/nodeclient"
	"github.com/zosgrid/zos/internal/runtime"
)

// Runtime runs containers (internal/runtime.Runtime).
type Runtime interface {
	Start(ctx context.Context, s runtime.Spec) error
	State(ctx context.Context, id string) (runtime.State, error)
	List(ctx context.Context) ([]runtime.State, error)
	Stop(ctx context.Context, id string, grace time.Duration) error
	Delete(ctx context.Context, id string) error
}

// Networks makes private networks and container sandboxes
// (internal/network.Manager).
type Networks interface {
	EnsureNetwork(ctx context.Context, id string, subnet netip.Prefix) error
	RemoveNetwork(ctx context.Context, id string) error
	Networks(ctx context.Context) ([]string, error)
	Sandbox(ctx context.Context, id string) (string, error)
	Attach(ctx context.Context, sandbox, network string, ip netip.Addr) error
	RemoveSandbox(ctx context.Context, id string) error
	Sandboxes(ctx context.Context) ([]string, error)
}

// Gateway routes HTTP host names to containers (internal/network.Gateway).
type Gateway interface {
	Set(host, network string, target netip.AddrPort)
	Remove(host string)
	Hosts() map[string]string
}

// Mount asks for one of the two mounts a container's root is made of: its
// image, mounted lazily and read-only once per machine however many
// containers run it (Mounter.MountImage), and the container's writable
// root, an overlay over the image mount (Mounter.Overlay).
type Mount struct {
	Flist  string   // path of the verified flist file
	Dir    string   // mount point
	Image  string   // Overlay: where the image is mounted
	Layer  string   // Overlay: the writable layer's directory (kept across remounts)
	Stores []string // MountImage: chunk store URLs, in preference order
	Bundle string   // MountImage: URL of the image's start bundle, "" if none
	Cache  string   // MountImage: the machine's chunk cache
	Log    string   // MountImage: the image server's log file
}

// Mounter mounts images in server processes of their own, so that they
// survive the agent (cmd/zos runs `zos flist mount`), and stacks the
// containers' writable roots on them (internal/mount.Overlay).
type Mounter interface {
	// MountImage mounts image m.Flist read-only at m.Dir and returns once
	// it serves.
	MountImage(ctx context.Context, m Mount) error
	// Overlay mounts a writable overlay at m.Dir over the image mounted at
	// m.Image, its changes in m.Layer (bound to m.Flist's image).
	Overlay(ctx context.Context, m Mount) error
	// Unmount unmounts the image or overlay at dir (an overlay leaves its
	// image mounted); nil if nothing is mounted there.
	Unmount(ctx context.Context, dir string) error
	// Alive returns the unique ID of the mount at dir if it is mounted
	// and its server answers (MountAlive is the real check). points are
	// the mount points read at the start of the reconcile pass (nil: read
	// them), so a pass over n containers reads mountinfo once, not n
	// times.
	Alive(dir string, points map[string]bool) (id uint64, ok bool)
	// StackedOn returns the ID (as Alive returns it) of the image mount the
	// overlay of layer was last stacked on (internal/mount.StackedOn).
	StackedOn(layer string) (id uint64, ok bool)
}

// Options configure an Agent.
type Options struct {
	Data     string     // the node's directory (state, images, volumes, logs)
	Key      key.Secret // the node's identity
	KeyFile  string     // where Key is kept, for messages
	Twins    Twins
	Runtime  Runtime
	Network  Networks
	Gateway  Gateway // nil: gateway workloads fail
	Mounter  Mounter
	Cache    string   // chunk cache for mounts; default Data/cache
	Hosts    []string // names clients address the API by ("node.example:8070"); empty accepts any
	Interval time.Duration
	Logger   *slog.Logger
	HTTP     *http.Client // fetches flists; default a client with a 2 minute timeout
	// Backoff bounds a crashed container's restart delay (1s doubling up to
	// Backoff; default 1 minute).
	Backoff time.Duration
	// Now is the clock, default time.Now.
	Now func() time.Time
	// Ledger, when set, is watched: the node runs its active contracts,
	// removes cancelled ones and reports their state (docs/NODE.md,
	// "Ledger"). Twins then also holds the ledger's twins of those
	// contracts.
	Ledger Ledger
	// LedgerInterval is the time between reads of the ledger (default
	// DefaultLedgerInterval).
	LedgerInterval time.Duration
	// ReportEvery bounds a contract's reports to one per period, but for
	// its first, the one after "deployed", a new version and "removed"
	// (default DefaultReportEvery).
	ReportEvery time.Duration
}

// Agent is the node: the signed API and the reconcile loop.
type Agent struct {
	opts     Options
	db       *DB
	verifier auth.Verifier
	log      *slog.Logger
	kick     chan struct{}
	watch    *watcher // nil without a ledger

	mu     sync.Mutex
	status map[uint64]map[string]*nodeclient.WorkloadStatus
	crash  map[string]*crashState    // by container id
	images map[digest.ID]imageConfig // flists verified in Data/images
}

// New opens the node's state in opts.Data (creating it) and returns the
// agent; Run drives the workloads, Handler serves the API.
func New(opts Options) (*Agent, error) {
	if opts.Data == "" || opts.Twins == nil || opts.Runtime == nil || opts.Network == nil || opts.Mounter == nil {
		return nil, errors.New("node: Data, Twins, Runtime, Network and Mounter are required")
	}
	if opts.Cache == "" {
		opts.Cache = filepath.Join(opts.Data, "cache")
	}
	if opts.Interval == 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Timeout: 2 * time.Minute}
	}
	if opts.Backoff == 0 {
		opts.Backoff = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LedgerInterval == 0 {
		opts.LedgerInterval = DefaultLedgerInterval
	}
	if opts.ReportEvery == 0 {
		opts.ReportEvery = DefaultReportEvery
	}
	for _, d := range []string{opts.Data, filepath.Join(opts.Data, "images"), filepath.Join(opts.Data, "deployments"), filepath.Join(opts.Data, "volumes")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	db, err := OpenDB(filepath.Join(opts.Data, "state.db"), opts.Key, false, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("node: %w (is another agent running on %s?)", err, opts.Data)
	}
	db.now = opts.Now
	a := &Agent{
		opts: opts,
		db:   db,
		log:  opts.Logger,
		kick: make(chan struct{}, 1),
		verifier: auth.Verifier{
			Hosts:  opts.Hosts,
			Nonces: db,
			Now:    opts.Now,
		},
		status: map[uint64]map[string]*nodeclient.WorkloadStatus{},
		crash:  map[string]*crashState{},
		images: map[digest.ID]imageConfig{},
	}
	if opts.Ledger != nil {
		a.watch = newWatcher(a, opts)
		a.opts.Twins = ledgerTwins{local: opts.Twins, w: a.watch}
	}
	return a, nil
}

// Close closes the state database.
func (a *Agent) Close() error { return a.db.Close() }

// DB is the agent's state, for history commands and tests.
func (a *Agent) DB() *DB { return a.db }

// Kick asks the reconcile loop for a pass now.
func (a *Agent) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx ends: at once, then every Interval and after
// every accepted change. With a Ledger, it watches the ledger beside.
func (a *Agent) Run(ctx context.Context) error {
	t := time.NewTicker(a.opts.Interval)
	defer t.Stop()
	if a.watch != nil {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			a.watch.run(ctx)
		}()
	}
	for {
		a.reconcile(ctx)
		if a.watch != nil {
			a.watch.reconciled()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-a.kick:
		}
	}
}

// event records e in the history, logging a failure to do so (the
// history is the node's memory; failing to write it is an operator's
// problem, not the workload's).
func (a *Agent) event(dep uint64, workload, kind, detail string) {
	e, err := a.db.Record(nodeclient.Event{Deployment: dep, Workload: workload, Kind: kind, Detail: detail})
	if err != nil {
		a.log.Error("history", "deployment", dep, "workload", workload, "event", kind, "err", err)
		return
	}
	a.log.Info(kind, "deployment", dep, "workload", workload, "detail", detail, "seq", e.Seq)
}
