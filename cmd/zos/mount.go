package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/cache"
	"github.com/zosgrid/zos/internal/store/lru"
)

type mountFlags struct {
	stores        []string
	cacheDir      string
	cacheSize     string
	logFile       string
	foreground    bool
	debug         bool
	noDev, noSUID bool
	readyFD       int
	rw            bool
	upper         string
	trace         string
	noTrace       bool
	bundle        string
	noBundle      bool
	noLoader      bool
	prefetchers   int
	fetchers      int
	filePrefetch  string
	keepWhole     string
	fetchTimeout  time.Duration
}

// mountCmds are the commands of this file, for 'zos flist'.
func mountCmds() []*cobra.Command {
	return []*cobra.Command{mountCmd(), umountCmd(), traceCmd(), bundleCmd(), warmCmd(), traceExecCmd()}
}

// mountReadyTimeout bounds how long the background mount may take to come up.
const mountReadyTimeout = 2 * time.Minute

func mountCmd() *cobra.Command {
	var f mountFlags
	c := &cobra.Command{
		Use:   "mount FL MNT [--store URL...] [--cache DIR] [--rw --upper DIR] [--trace FILE] [--foreground]",
		Short: "Mount an flist; each chunk is fetched and verified on first read",
		Long: `Mount an flist at MNT, read-only unless --rw. Only the metadata is read at mount
time; a chunk is fetched from the stores, and verified, the first time a read
needs it. A store error that may pass (refused connection, 5xx, timeout) is
retried with backoff for up to --fetch-timeout; a chunk that is missing, fails
verification or is still failing then makes that read fail with EIO, and is
logged. Without --foreground the command returns once the mount is ready and a
background server keeps serving it (logging to --log) until 'zos flist umount
MNT'. A stale mount left at MNT by a server that died is detached first.

--rw --upper DIR makes MNT writable: a kernel overlayfs whose changes live in
DIR (created if missing; bound to this flist, refused for another) over the
image mounted read-only at DIR/lower. Changes persist across mounts.

A trace recorded by 'zos flist trace' (FL.trace beside the flist, or --trace
FILE) makes the mount fetch the chunks it lists in the background, in order,
from mount time on; reads always come first.

A start bundle built with the trace (FL.bundle beside the flist, or --bundle
FILE or URL) carries only the bytes the traced run read, each verified against
the flist: the mount streams it from mount time on and serves those reads from
it, then fetches the chunks it lists whole (docs/BUNDLE.md).`,
		Args: usageArgs(2, "FL and MNT"),
		RunE: func(c *cobra.Command, args []string) error {
			if f.rw != (f.upper != "") {
				return &exitError{exitUsage, errors.New("--rw and --upper DIR go together: the writable layer needs a directory for its changes")}
			}
			if f.trace != "" && f.noTrace {
				return &exitError{exitUsage, errors.New("--trace and --no-trace exclude each other")}
			}
			if f.bundle != "" && (f.noBundle || f.noTrace) {
				return &exitError{exitUsage, errors.New("--bundle excludes --no-bundle and --no-trace (a bundle needs its trace)")}
			}
			if !f.foreground {
				return mountBackground(c, args, f)
			}
			return mountForeground(c, args, f)
		},
	}
	fl := c.Flags()
	fl.StringArrayVar(&f.stores, "store", nil, "chunk store URL (default: the stores the flist records)")
	fl.StringVar(&f.cacheDir, "cache", "", "keep fetched chunks in this directory, shared by every mount (e.g. "+lru.DefaultDir+"; see 'zos cache')")
	fl.StringVar(&f.cacheSize, "cache-size", "", "budget of the --cache directory, for all its users (e.g. 512M, 10G; default: the last one set, else 10G)")
	fl.BoolVar(&f.foreground, "foreground", false, "serve in this process until unmounted or interrupted")
	fl.StringVar(&f.logFile, "log", "", "log file of the server (default: standard error in the foreground, else "+defaultMountLog()+")")
	fl.BoolVar(&f.debug, "debug", false, "log every FUSE request")
	fl.BoolVar(&f.noDev, "nodev", false, "do not honour device nodes in the image")
	fl.BoolVar(&f.noSUID, "nosuid", false, "do not honour setuid/setgid bits and file capabilities in the image")
	fl.BoolVar(&f.rw, "rw", false, "writable: an overlay whose changes live in --upper DIR")
	fl.StringVar(&f.upper, "upper", "", "directory holding the writable layer's changes (with --rw)")
	fl.StringVar(&f.trace, "trace", "", "prefetch the chunks this trace lists (default: FL.trace if it exists)")
	fl.BoolVar(&f.noTrace, "no-trace", false, "do not prefetch by trace, even if FL.trace exists")
	fl.StringVar(&f.bundle, "bundle", "", "stream this start bundle, a file or an http(s) URL (default: FL.bundle if it exists)")
	fl.BoolVar(&f.noBundle, "no-bundle", false, "do not use a start bundle, even if FL.bundle exists")
	fl.IntVar(&f.fetchers, "fetchers", 0, "chunk fetches in flight at once, for reads and read-ahead (default 32; a link's bandwidth x latency needs bandwidth x RTT / chunk size of them)")
	fl.IntVar(&f.prefetchers, "prefetch-fetchers", 0, "chunks the trace prefetch fetches at once (default 16; reads always get a free fetch slot first)")
	fl.StringVar(&f.filePrefetch, "file-prefetch", "", "on a file's first read, fetch up to this much of it in the background (e.g. 16M; 0 disables; default 64M, or 0 when a trace is used)")
	fl.BoolVar(&f.noLoader, "no-loader-prefetch", false, "do not fetch ahead what the dynamic loader reads of a program and its libraries when the program's file is first read")
	fl.StringVar(&f.keepWhole, "keep-whole", "", "with --cache: keep files from this size up whole in the cache once read, and serve them by FUSE passthrough at disk speed (default 1M; 0 disables)")
	fl.DurationVar(&f.fetchTimeout, "fetch-timeout", 2*time.Minute, "give up on a chunk (EIO) after retrying its fetch this long")
	fl.IntVar(&f.readyFD, "ready-fd", 0, "")
	fl.MarkHidden("ready-fd") // the background parent's readiness pipe
	return c
}

func umountCmd() *cobra.Command {
	var lazy bool
	c := &cobra.Command{
		Use:   "umount MNT [--lazy]",
		Short: "Unmount an flist mounted with 'zos flist mount'; its server then exits",
		Args:  usageArgs(1, "one MNT"),
		RunE: func(c *cobra.Command, args []string) error {
			err := mount.Unmount(args[0], lazy)
			if errors.Is(err, syscall.EBUSY) {
				return fmt.Errorf("%s is busy: files are open or a process runs there (close them, or pass --lazy to detach now and unmount when they close)", args[0])
			}
			return err
		},
	}
	c.Flags().BoolVar(&lazy, "lazy", false, "detach now even if busy; the mount goes away when its last file closes")
	return c
}

func defaultMountLog() string {
	if os.Geteuid() == 0 {
		return "/var/log/zos/mount.log"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "zos", "mount.log")
	}
	return filepath.Join(os.TempDir(), "zos-mount.log")
}

// mountForeground mounts and serves until the mount goes away or a signal
// asks for an unmount. With --ready-fd it reports to the parent that
// started it: "ok" once mounted, or the error.
func mountForeground(c *cobra.Command, args []string, f mountFlags) (err error) {
	ctx := c.Context()
	var ready *os.File
	if f.readyFD > 0 {
		ready = os.NewFile(uintptr(f.readyFD), "ready")
		defer func() {
			if ready != nil {
				if err != nil {
					io.WriteString(ready, err.Error())
				}
				ready.Close()
			}
		}()
	}
	logw := io.Writer(c.ErrOrStderr())
	if f.logFile != "" {
		lf, err := openLog(f.logFile)
		if err != nil {
			return err
		}
		defer lf.Close()
		logw = lf
	}
	level := slog.LevelInfo
	if f.debug {
		level = slog.LevelDebug
	}
	mnt, _ := filepath.Abs(args[1])
	logger := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level}))

	r, err := readFlist(args[0])
	if err != nil {
		return err
	}
	var filePrefetch int64
	if f.filePrefetch != "" {
		if filePrefetch, err = parseSizeOrOff(f.filePrefetch); err != nil {
			return &exitError{exitUsage, fmt.Errorf("--file-prefetch: %w", err)}
		}
		if filePrefetch == 0 {
			filePrefetch = -1 // off
		}
	}
	trace, err := loadTrace(args[0], f.trace, f.noTrace, r, logger)
	if err != nil {
		return err
	}
	var prefetch []uint32
	if trace != nil {
		prefetch = trace.Chunks
	}
	bundle, err := loadBundle(args[0], f.bundle, f.noBundle || f.noTrace, trace, logger)
	if err != nil {
		return err
	}
	var minWhole int64
	if f.keepWhole != "" {
		if minWhole, err = parseSizeOrOff(f.keepWhole); err != nil {
			return &exitError{exitUsage, fmt.Errorf("--keep-whole: %w", err)}
		}
		if minWhole == 0 {
			minWhole = -1 // off
		}
	}
	if prefetch != nil && f.filePrefetch == "" {
		// A trace already says what to fetch; prefetching whole files too
		// only competes with it for the link (docs/BENCHMARKS.md, lazy mount).
		filePrefetch = -1
	}
	st, local, err := openImageStore(ctx, r, f.stores, f.cacheDir, f.cacheSize)
	if err != nil {
		return err
	}
	defer st.Close()
	var lease func(store.Store) (store.Store, func())
	var files mount.FileCache
	if local != nil {
		lease = local.Lease
		if minWhole >= 0 {
			files = local
		}
	}
	m, err := mount.Mount(ctx, mnt, r, st, mount.Options{
		Lease:            lease,
		Files:            files,
		MinWhole:         minWhole,
		Logger:           logger,
		Name:             "zos:" + r.Digest().Short(),
		Dev:              !f.noDev,
		Suid:             !f.noSUID,
		Debug:            f.debug,
		Upper:            f.upper,
		FetchTimeout:     f.fetchTimeout,
		Prefetch:         prefetch,
		PrefetchExact:    trace != nil && trace.Ranges != nil,
		Bundle:           bundle,
		PrefetchFetchers: f.prefetchers,
		Fetchers:         f.fetchers,
		FilePrefetch:     filePrefetch,
		NoLoaderPrefetch: f.noLoader,
		StoreKeeps:       f.cacheDir != "",
	})
	if err != nil {
		if errors.Is(err, mount.ErrLayer) {
			return &exitError{exitUsage, err}
		}
		return err
	}
	if ready != nil {
		io.WriteString(ready, "ok")
		ready.Close()
		ready = nil
	}
	select {
	case <-m.Done():
		logger.Info("unmounted", "mnt", mnt, "stats", fmt.Sprintf("%+v", m.FS().Stats()))
		return nil
	case <-ctx.Done():
	}
	// Asked to stop: unmount, or if files are still open detach the mount
	// and serve them until they close.
	if err := m.Unmount(); err != nil {
		logger.Warn("busy: detaching, serving open files until they close", "mnt", mnt, "err", err)
		if err := m.DetachLazy(); err != nil {
			return err
		}
		m.Wait()
	}
	logger.Info("unmounted", "mnt", mnt, "stats", fmt.Sprintf("%+v", m.FS().Stats()))
	return nil
}

// openImageStore opens the stores of an image (--store, else those the
// flist records), behind the machine's bounded chunk cache when cacheDir is
// set; local is that cache, or nil.
func openImageStore(ctx context.Context, r *flist.Reader, stores []string, cacheDir, cacheSize string) (st store.Store, local *lru.Store, err error) {
	var budget int64
	if cacheSize != "" {
		if budget, err = parseSize(cacheSize); err != nil {
			return nil, nil, &exitError{exitUsage, fmt.Errorf("--cache-size: %w", err)}
		}
	}
	st, err = flistStores(ctx, r, stores, nil)
	if err != nil {
		return nil, nil, err
	}
	if cacheDir == "" {
		return st, nil, nil
	}
	local, err = lru.Open(ctx, cacheDir, lru.Options{Budget: budget})
	if err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("cache: %w", err)
	}
	return cache.New(local, st), local, nil
}

// tracePath is where a trace of the flist at fl lives by default.
func tracePath(fl string) string { return fl + ".trace" }

// loadTrace returns the chunks to prefetch: those of the trace at path,
// or of FL.trace if it exists and path is empty. A trace named on the
// command line must fit the flist; a default one that does not is logged
// and ignored (it may be left over from an older image).
func loadTrace(fl, path string, none bool, r *flist.Reader, logger *slog.Logger) (*mount.Trace, error) {
	path, explicit := besideFile(path, tracePath(fl), none)
	if path == "" {
		return nil, nil
	}
	t, err := mount.ReadTrace(path, r)
	if err != nil {
		if explicit {
			if errors.Is(err, mount.ErrTrace) {
				return nil, &exitError{exitContent, err}
			}
			return nil, fmt.Errorf("trace: %w", err)
		}
		logger.Warn("ignoring the trace beside the flist", "err", err)
		return nil, nil
	}
	logger.Info("prefetching by trace", "trace", path, "chunks", len(t.Chunks), "ranges", t.Ranges != nil)
	return t, nil
}

// bundlePath is where the start bundle of the flist at fl lives by default.
func bundlePath(fl string) string { return bundleBeside(tracePath(fl)) }

// bundleBeside is where the start bundle built from the trace at path
// goes by default: beside it.
func bundleBeside(path string) string { return strings.TrimSuffix(path, ".trace") + ".bundle" }

// besideFile returns the file to use: none if none, else path if the
// command line named one (explicit), else def if it exists, else "".
func besideFile(path, def string, none bool) (file string, explicit bool) {
	if none {
		return "", false
	}
	if path != "" {
		return path, true
	}
	if _, err := os.Stat(def); err == nil {
		return def, false
	}
	return "", false
}

func isURL(s string) bool { return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") }

// loadBundle returns the start bundle to stream: src (a file or an
// http(s) URL), or FL.bundle if it exists and src is empty. A bundle
// needs its version-2 trace: one named on the command line without it is
// refused; a default one is then ignored. Its contents are checked as it
// streams (a bad one costs only the fetches it does not save).
func loadBundle(fl, src string, none bool, t *mount.Trace, logger *slog.Logger) (*mount.Bundle, error) {
	src, explicit := besideFile(src, bundlePath(fl), none)
	if src == "" {
		return nil, nil
	}
	if t == nil || t.Ranges == nil {
		if explicit {
			return nil, &exitError{exitUsage, errors.New("--bundle needs the version-2 trace it was built from (FL.trace or --trace, recorded by this zos)")}
		}
		logger.Warn("ignoring the bundle beside the flist: no version-2 trace to go with it", "bundle", src)
		return nil, nil
	}
	b := &mount.Bundle{Trace: t, Source: src}
	if isURL(src) {
		b.Open = func(ctx context.Context) (io.ReadCloser, error) { return httpStream(ctx, src) }
	} else {
		b.Open = func(context.Context) (io.ReadCloser, error) { return os.Open(src) }
	}
	logger.Info("streaming start bundle", "bundle", src)
	return b, nil
}

// httpStream GETs url and returns its body, or an error for any status
// but 200.
func httpStream(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return resp.Body, nil
}

func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log: %w (pass --log FILE)", err)
	}
	return f, nil
}

// mountBackground starts this binary again as a detached foreground
// server and returns once it reports the mount ready (or fails).
func mountBackground(c *cobra.Command, args []string, f mountFlags) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	logPath := f.logFile
	if logPath == "" {
		logPath = defaultMountLog()
	}
	logPath = abs(logPath)
	lf, err := openLog(logPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()

	cargs := []string{"flist", "mount", abs(args[0]), abs(args[1]), "--foreground", "--ready-fd", "3"}
	for _, s := range f.stores {
		cargs = append(cargs, "--store", s)
	}
	if f.cacheDir != "" {
		cargs = append(cargs, "--cache", abs(f.cacheDir))
	}
	if f.cacheSize != "" {
		cargs = append(cargs, "--cache-size", f.cacheSize)
	}
	if f.upper != "" {
		cargs = append(cargs, "--upper", abs(f.upper))
	}
	if f.trace != "" {
		cargs = append(cargs, "--trace", abs(f.trace))
	}
	if f.bundle != "" {
		b := f.bundle
		if !isURL(b) {
			b = abs(b)
		}
		cargs = append(cargs, "--bundle", b)
	}
	cargs = append(cargs, "--fetch-timeout", f.fetchTimeout.String())
	if f.filePrefetch != "" {
		cargs = append(cargs, "--file-prefetch", f.filePrefetch)
	}
	if f.keepWhole != "" {
		cargs = append(cargs, "--keep-whole", f.keepWhole)
	}
	if f.fetchers > 0 {
		cargs = append(cargs, "--fetchers", strconv.Itoa(f.fetchers))
	}
	if f.prefetchers > 0 {
		cargs = append(cargs, "--prefetch-fetchers", strconv.Itoa(f.prefetchers))
	}
	for flag, on := range map[string]bool{"--debug": f.debug, "--nodev": f.noDev, "--nosuid": f.noSUID, "--rw": f.rw, "--no-trace": f.noTrace, "--no-bundle": f.noBundle, "--no-loader-prefetch": f.noLoader} {
		if on {
			cargs = append(cargs, flag)
		}
	}
	cmd := exec.Command(self, cargs...)
	cmd.Stderr = lf // stdin and stdout: /dev/null
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // out of the caller's session and its signals
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start mount server: %w", err)
	}
	pw.Close()

	msg := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(pr) // until the server closes its end: ready, failed or dead
		msg <- strings.TrimSpace(string(b))
	}()
	ctx, cancel := context.WithTimeout(c.Context(), mountReadyTimeout)
	defer cancel()
	var m string
	select {
	case m = <-msg:
	case <-ctx.Done():
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("mount server did not become ready: %w (log: %s)", ctx.Err(), logPath)
	}
	if m == "ok" {
		pid := cmd.Process.Pid
		cmd.Process.Release()
		fmt.Fprintf(c.OutOrStdout(), "mounted %s at %s (server pid %s, log %s)\n", args[0], abs(args[1]), strconv.Itoa(pid), logPath)
		return nil
	}
	werr := cmd.Wait()
	code := exitFail
	var ee *exec.ExitError
	if errors.As(werr, &ee) && ee.ExitCode() > 0 {
		code = ee.ExitCode()
	}
	if m == "" {
		m = fmt.Sprintf("mount server exited (%v) before the mount was ready; see %s", werr, logPath)
	}
	return &exitError{code, errors.New(m)}
}
