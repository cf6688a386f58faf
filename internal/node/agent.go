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

// Mount asks for a writable root filesystem: the flist mounted lazily,
// read-only, under an overlay whose upper layer is Upper, at Dir.
type Mount struct {
	Flist  string   // path of the verified flist file
	Dir    string   // mount point
	Upper  string   // the writable layer (kept across remounts)
	Stores []string // chunk store URLs, in preference order
	Cache  string   // the machine's chunk cache
}

// Mounter mounts root filesystems in processes of their own, so that they
// survive the agent (cmd/zos runs `zos flist mount --rw`).
type Mounter interface {
	// Mount mounts m and returns once it serves.
	Mount(ctx context.Context, m Mount) error
	// Unmount unmounts what Mount mounted (both layers, or what is left of
	// them: only m.Dir and m.Upper are used); nil if nothing is mounted.
	Unmount(ctx context.Context, m Mount) error
	// Alive reports whether m is mounted and its image still answers
	// (MountAlive is the real check). points are the mount points read at
	// the start of the reconcile pass (nil: read them), so a pass over n
	// containers reads mountinfo once, not n times.
	Alive(m Mount, points map[string]bool) bool
}

// Options configure an Agent.
type Options struct {
	Data     string     // the node's directory (state, images, volumes, logs)
	Key      key.Secret // the node's identity
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
}

// Agent is the node: the signed API and the reconcile loop.
type Agent struct {
	opts     Options
	db       *DB
	verifier auth.Verifier
	log      *slog.Logger
	kick     chan struct{}

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
// every accepted change.
func (a *Agent) Run(ctx context.Context) error {
	t := time.NewTicker(a.opts.Interval)
	defer t.Stop()
	for {
		a.reconcile(ctx)
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
