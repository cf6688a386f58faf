package network

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Gateway is an http.Handler: a reverse proxy from a Host name to a
// container's port, reached through the container's network namespace (see
// the package doc, "Gateway"). Safe for concurrent use.
type Gateway struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	log  *slog.Logger
	// DialWait is how long a request waits for a backend that refuses
	// connections (a container starting, or restarting after a crash)
	// before the gateway answers 502; set before serving.
	DialWait time.Duration

	mu     sync.RWMutex
	routes map[string]*route // by canonical host
}

var _ http.Handler = (*Gateway)(nil)

// route is one host's backend. Its transport is its own: connection pools
// are keyed by ip:port, and two networks may well both have 10.1.0.2:80.
type route struct {
	network   string
	target    netip.AddrPort
	transport *http.Transport
	proxy     *httputil.ReverseProxy
}

// NewGateway returns a Gateway that reaches containers through m.
func NewGateway(m *Manager, logger *slog.Logger) *Gateway {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Gateway{dial: m.DialContext, log: logger, routes: make(map[string]*route), DialWait: DefaultDialWait}
}

// DefaultDialWait is Gateway.DialWait unless set: long enough for a
// service to start listening, short enough that a client is not kept
// hanging by one that never will.
const DefaultDialWait = 5 * time.Second

// dialWaiting dials, and while the backend refuses (nothing listens yet)
// or cannot be routed to (its sandbox is being attached) tries again with
// a growing pause, for up to DialWait, or until the request ends.
func (g *Gateway) dialWaiting(ctx context.Context, network, addr string) (net.Conn, error) {
	deadline := time.Now().Add(g.DialWait)
	pause := 20 * time.Millisecond
	for {
		c, err := g.dial(ctx, network, addr)
		left := time.Until(deadline)
		if err == nil || !transient(err) || left <= 0 {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(min(pause, left)):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// transient reports a dial error that a backend coming up clears.
func transient(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// Set routes host (a name, any port in requests ignored, case-insensitive) to
// target in network, replacing what host had.
func (g *Gateway) Set(host string, network string, target netip.AddrPort) {
	host = canonicalHost(host)
	g.mu.Lock()
	defer g.mu.Unlock()
	if old := g.routes[host]; old != nil {
		if old.network == network && old.target == target {
			return
		}
		old.transport.CloseIdleConnections()
	}
	g.routes[host] = g.newRoute(host, network, target)
}

// Remove drops host's route; its requests get 404 from now on.
func (g *Gateway) Remove(host string) {
	host = canonicalHost(host)
	g.mu.Lock()
	defer g.mu.Unlock()
	if old := g.routes[host]; old != nil {
		old.transport.CloseIdleConnections()
		delete(g.routes, host)
	}
}

// Hosts returns the routes, host -> "network ip:port", for status.
func (g *Gateway) Hosts() map[string]string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make(map[string]string, len(g.routes))
	for h, r := range g.routes {
		out[h] = r.network + " " + r.target.String()
	}
	return out
}

// ServeHTTP proxies r to the container its Host names: 404 for an unknown
// host, 502 when the container does not answer (after waiting up to
// DialWait for one that refuses connections). Upgrades (websockets) pass.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.RLock()
	rt := g.routes[canonicalHost(r.Host)]
	g.mu.RUnlock()
	if rt == nil {
		http.Error(w, "unknown host", http.StatusNotFound)
		return
	}
	rt.proxy.ServeHTTP(w, r)
}

func (g *Gateway) newRoute(host, network string, target netip.AddrPort) *route {
	addr := target.String()
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return g.dialWaiting(ctx, network, addr)
		},
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	p := &httputil.ReverseProxy{
		Transport: t,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = addr
			pr.Out.Host = pr.In.Host
			// The gateway is the edge: what a client claims in X-Forwarded-*
			// is replaced, not extended.
			if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
				pr.Out.Header.Set("X-Forwarded-For", ip)
			}
			pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
			proto := "http"
			if pr.In.TLS != nil {
				proto = "https"
			}
			pr.Out.Header.Set("X-Forwarded-Proto", proto)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				return // the client went away
			}
			g.log.Warn("gateway: backend unreachable", "host", host, "network", network, "target", addr, "err", err)
			http.Error(w, "backend unreachable", http.StatusBadGateway)
		},
	}
	return &route{network: network, target: target, transport: t, proxy: p}
}

// canonicalHost is host without a port or trailing dot, lower-case.
func canonicalHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}
