package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store"
)

func traceCmd() *cobra.Command {
	var stores []string
	var cacheDir, out, bundleOut, logFile string
	var noChroot, noBundle bool
	var fetchTimeout time.Duration
	c := &cobra.Command{
		Use:   "trace FL [--store URL...] [-o TRACE] [--no-chroot] -- CMD [ARGS...]",
		Short: "Run a command in the mounted image and record the chunks it reads, for prefetching",
		Long: `Mount FL writable over a throwaway layer, run CMD in it, and record the order in
which its reads first needed each chunk. The trace is saved beside the flist
(FL.trace, or -o TRACE) and bound to the flist's digest; 'zos flist mount' then
fetches those chunks first, in the background.

CMD runs chrooted into the image, as a workload on a node does: in its own
mount and PID namespaces, with /proc, /sys and /dev mounted where the image has
those directories, and the environment of this command (PATH defaults to the
usual directories). When CMD exits, whatever it started is killed. With
--no-chroot CMD runs here instead, with the mount's path in $ZOS_ROOT.

The trace lists, for each chunk, the parts the command read: the kernel's
read-around is one page while it runs. With it a start bundle is built
(FL.bundle, beside the trace, or --bundle FILE; not with --no-bundle): those parts of the chunks,
each with the BLAKE3 tree nodes that verify it against the flist, as one zstd
stream that a mount streams from mount time on (docs/BUNDLE.md).

The trace is saved only if CMD succeeds; the exit status is CMD's.`,
		Args: func(c *cobra.Command, args []string) error {
			if c.ArgsLenAtDash() != 1 || len(args) < 2 {
				return &exitError{exitUsage, fmt.Errorf("%s takes FL, then -- and the command to run (see '%s --help')", c.CommandPath(), c.CommandPath())}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if out == "" {
				out = tracePath(args[0])
			}
			if bundleOut == "" && !noBundle {
				bundleOut = bundleBeside(out)
			}
			return runTrace(c, args[0], args[1:], stores, cacheDir, out, bundleOut, logFile, noChroot, fetchTimeout)
		},
	}
	fl := c.Flags()
	fl.StringArrayVar(&stores, "store", nil, "chunk store URL (default: the stores the flist records)")
	fl.StringVar(&cacheDir, "cache", "", "keep fetched chunks in this directory (default: a temporary one, until the bundle is built)")
	fl.StringVarP(&out, "output", "o", "", "where to save the trace (default FL.trace)")
	fl.StringVar(&bundleOut, "bundle", "", "where to save the start bundle (default: the trace's path, .trace replaced by .bundle)")
	fl.BoolVar(&noBundle, "no-bundle", false, "save no start bundle")
	fl.StringVar(&logFile, "log", "", "log file of the mount (default: warnings and errors on standard error)")
	fl.BoolVar(&noChroot, "no-chroot", false, "run CMD here, with the mounted image's path in $ZOS_ROOT")
	fl.DurationVar(&fetchTimeout, "fetch-timeout", 2*time.Minute, "give up on a chunk (EIO) after retrying its fetch this long")
	return c
}

func runTrace(c *cobra.Command, fl string, argv, stores []string, cacheDir, out, bundleOut, logFile string, noChroot bool, fetchTimeout time.Duration) error {
	ctx := c.Context()
	logw, level := io.Writer(c.ErrOrStderr()), slog.LevelWarn
	if logFile != "" {
		lf, err := openLog(logFile)
		if err != nil {
			return err
		}
		defer lf.Close()
		logw, level = lf, slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level}))
	r, err := readFlist(fl)
	if err != nil {
		return err
	}
	if cacheDir == "" && bundleOut != "" {
		// The bundle is built from the chunks the run read: keep them
		// until then rather than fetch them all again.
		if cacheDir, err = os.MkdirTemp("", "zos-trace-cache-"); err != nil {
			return err
		}
		defer os.RemoveAll(cacheDir)
	}
	st, _, err := openImageStore(ctx, r, stores, cacheDir, "")
	if err != nil {
		return err
	}
	defer st.Close()
	tmp, err := os.MkdirTemp("", "zos-trace-")
	if err != nil {
		return err
	}
	root := filepath.Join(tmp, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	m, err := mount.Mount(ctx, root, r, st, mount.Options{
		Logger:       logger,
		Name:         "zos:" + r.Digest().Short(),
		Dev:          true,
		Suid:         true,
		Upper:        filepath.Join(tmp, "layer"),
		Record:       true,
		FetchTimeout: fetchTimeout,
	})
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	start := time.Now()
	runErr := runIn(ctx, root, argv, noChroot, c)
	took := time.Since(start)
	order, ranges := m.FS().Trace()
	stats := m.FS().Stats()
	if err := m.Unmount(); err != nil {
		m.DetachLazy()
		select {
		case <-m.Done():
		case <-time.After(10 * time.Second):
			logger.Warn("the traced image is still busy; detached", "err", err)
		}
	}
	select {
	case <-m.Done():
		os.RemoveAll(tmp) // the throwaway layer
	default:
	}
	if runErr != nil {
		var ee *exec.ExitError
		if errors.As(runErr, &ee) && ee.ExitCode() > 0 {
			return &exitError{ee.ExitCode(), fmt.Errorf("%s exited with status %d; no trace saved", argv[0], ee.ExitCode())}
		}
		return fmt.Errorf("%s: %w; no trace saved", argv[0], runErr)
	}
	if stats.Errors > 0 {
		return fmt.Errorf("%d chunk fetches failed while tracing (see the log); no trace saved", stats.Errors)
	}
	t := &mount.Trace{Flist: r.Digest(), Chunks: order, Ranges: ranges}
	b, err := t.MarshalBinary()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(out, b); err != nil {
		return err
	}
	var bytes int64
	for _, k := range order {
		bytes += int64(r.Chunks()[k].Size)
	}
	share := 0.0
	if n := r.StreamSize(); n > 0 {
		share = 100 * float64(bytes) / float64(n)
	}
	fmt.Fprintf(c.ErrOrStderr(), "traced %d of %d chunks (%.1f MB, %.1f%% of the image) in %.2fs -> %s\n",
		len(order), len(r.Chunks()), mb(bytes), share, took.Seconds(), out)
	if bundleOut == "" {
		return nil
	}
	if err := writeBundle(c, r, t, st, bundleOut); err != nil {
		return fmt.Errorf("%w (the trace is saved; 'zos flist bundle' builds the bundle again)", err)
	}
	return nil
}

// writeBundle builds the start bundle of trace t of flist r, from the
// chunks in st, into the file out, and reports it.
func writeBundle(c *cobra.Command, r *flist.Reader, t *mount.Trace, st store.Store, out string) error {
	codec := chunk.NewCodec(0)
	var bs mount.BundleStats
	err := writeFileWith(out, func(w io.Writer) error {
		var err error
		bs, err = mount.BuildBundle(c.Context(), w, r, t, func(ctx context.Context, k int) ([]byte, error) {
			return store.Fetch(ctx, st, codec, r.Chunks()[k])
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("start bundle: %w", err)
	}
	fmt.Fprintf(c.ErrOrStderr(), "start bundle: %d chunks, %.1f MB read of them and %.1f MB of proofs in %.1f MB -> %s\n",
		bs.Chunks, mb(bs.Plain), mb(bs.Proofs), mb(bs.Bytes), out)
	return nil
}

func bundleCmd() *cobra.Command {
	var stores []string
	var cacheDir, traceFile, out string
	c := &cobra.Command{
		Use:   "bundle FL [--trace FILE] [-o FILE] [--store URL...] [--cache DIR]",
		Short: "Build the start bundle of an flist from its version-2 trace (as 'zos flist trace' does after its run)",
		Args:  usageArgs(1, "FL"),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := readFlist(args[0])
			if err != nil {
				return err
			}
			if traceFile == "" {
				traceFile = tracePath(args[0])
			}
			t, err := mount.ReadTrace(traceFile, r)
			if errors.Is(err, mount.ErrTrace) {
				return &exitError{exitContent, err}
			} else if err != nil {
				return err
			}
			if t.Ranges == nil {
				return &exitError{exitContent, fmt.Errorf("%s is a version-1 trace (no ranges): record it again with 'zos flist trace'", traceFile)}
			}
			if out == "" {
				out = bundleBeside(traceFile)
			}
			st, _, err := openImageStore(c.Context(), r, stores, cacheDir, "")
			if err != nil {
				return err
			}
			defer st.Close()
			return writeBundle(c, r, t, st, out)
		},
	}
	fl := c.Flags()
	fl.StringArrayVar(&stores, "store", nil, "chunk store URL (default: the stores the flist records)")
	fl.StringVar(&cacheDir, "cache", "", "read (and keep) chunks through this cache directory")
	fl.StringVar(&traceFile, "trace", "", "the version-2 trace (default FL.trace)")
	fl.StringVarP(&out, "output", "o", "", "where to save the bundle (default: the trace's path, .trace replaced by .bundle)")
	return c
}

// defaultPath is the PATH a chrooted command gets when we have none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runIn runs argv in the image mounted at root: chrooted, through this
// binary's hidden trace-exec command in new mount and PID namespaces, or
// here with $ZOS_ROOT set.
func runIn(ctx context.Context, root string, argv []string, noChroot bool, c *cobra.Command) error {
	var cmd *exec.Cmd
	if noChroot {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "ZOS_ROOT="+root)
	} else {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cmd = exec.CommandContext(ctx, self, append([]string{"flist", "trace-exec", root, "--"}, argv...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, c.OutOrStdout(), c.ErrOrStderr()
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	return cmd.Run()
}

// traceExecCmd is the first process of a traced command's namespaces: it
// mounts what a root filesystem needs, chroots and becomes the command.
func traceExecCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "trace-exec ROOT -- CMD [ARGS...]",
		Hidden: true,
		Args:   cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return chrootExec(args[0], args[1:])
		},
	}
}

func chrootExec(root string, argv []string) error {
	// Our mounts stay in this namespace, which dies with the command.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("private mounts: %w", err)
	}
	for _, m := range []struct {
		dir, fstype, source string
		flags               uintptr
	}{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sys", "sysfs", "sysfs", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"dev", "", "/dev", unix.MS_BIND | unix.MS_REC},
	} {
		target := filepath.Join(root, m.dir)
		if fi, err := os.Lstat(target); err != nil || !fi.IsDir() {
			continue
		}
		if err := unix.Mount(m.source, target, m.fstype, m.flags, ""); err != nil {
			return fmt.Errorf("mount /%s in the image: %w", m.dir, err)
		}
	}
	if err := unix.Chroot(root); err != nil {
		return fmt.Errorf("chroot %s: %w", root, err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", defaultPath)
	}
	path := argv[0]
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			return &exitError{127, fmt.Errorf("%s: not found in the image", path)}
		}
		path = p
	}
	err := unix.Exec(path, argv, os.Environ())
	return &exitError{126, fmt.Errorf("exec %s in the image: %w", argv[0], err)}
}

func warmCmd() *cobra.Command {
	var stores []string
	var cacheDir string
	var workers int
	var jsonOut bool
	var fetchTimeout time.Duration
	var whole string
	c := &cobra.Command{
		Use:   "warm FL --cache DIR [--store URL...] [--workers N] [--whole[=SIZE]] [--json]",
		Short: "Fetch every chunk of an flist into the local cache, verified",
		Long: `Fetch every chunk of FL from its stores into the cache at --cache, verifying
each as a mount would, so that a later mount with the same cache reads nothing
remote. Transient store errors are retried for up to --fetch-timeout per chunk;
chunks that still fail are reported and the others fetched anyway.

--whole (or --whole=SIZE) also writes every file of at least SIZE (default 1M) whole into the
cache, so that mounts serve them by FUSE passthrough, at disk speed, from the
first open (docs/CACHE.md, "Whole files").`,
		Args: usageArgs(1, "one FL"),
		RunE: func(c *cobra.Command, args []string) error {
			if cacheDir == "" {
				return &exitError{exitUsage, errors.New("warm needs --cache DIR: the cache to fill")}
			}
			ctx := c.Context()
			r, err := readFlist(args[0])
			if err != nil {
				return err
			}
			var minWhole int64
			if whole != "" {
				if minWhole, err = parseSize(whole); err != nil || minWhole <= 0 {
					return &exitError{exitUsage, fmt.Errorf("--whole: want a size above 0, e.g. 1M (%v)", err)}
				}
			}
			st, local, err := openImageStore(ctx, r, stores, cacheDir, "")
			if err != nil {
				return err
			}
			defer st.Close()
			var total int64
			seen := map[digest.ID]bool{}
			for _, ch := range r.Chunks() {
				if !seen[ch.Sum] {
					seen[ch.Sum] = true
					total += int64(ch.Size)
				}
			}
			var bar *progressbar.ProgressBar
			if isTerminal(os.Stderr) {
				bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowBytes(true),
					progressbar.OptionSetDescription("warm"), progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionClearOnFinish(), progressbar.OptionShowCount())
			}
			logger := slog.New(slog.NewTextHandler(c.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelError}))
			start := time.Now()
			ws, werr := mount.Warm(ctx, r.Chunks(), st, mount.WarmOptions{
				Logger:       logger,
				Workers:      workers,
				FetchTimeout: fetchTimeout,
				Progress: func(size int64, failed bool) {
					if bar != nil {
						bar.Add64(size)
					}
				},
			})
			if bar != nil {
				bar.Finish()
			}
			secs := time.Since(start).Seconds()
			var kept, keptBytes int64
			var skipped int
			if whole != "" && ctx.Err() == nil {
				var kerr error
				kept, keptBytes, skipped, kerr = mount.KeepWhole(ctx, r, st, local, minWhole)
				if kerr != nil {
					return kerr
				}
			}
			if jsonOut {
				json.NewEncoder(c.OutOrStdout()).Encode(struct {
					mount.WarmStats
					Seconds      float64 `json:"seconds"`
					Whole        int64   `json:"whole_files"`
					WholeBytes   int64   `json:"whole_bytes"`
					WholeSkipped int     `json:"whole_skipped"`
				}{ws, secs, kept, keptBytes, skipped})
			} else {
				fmt.Fprintf(c.OutOrStdout(), "warmed %d chunks, %.1f MB in %.2fs (%.1f MB/s) into %s\n",
					ws.Chunks-ws.Failed, mb(ws.Bytes), secs, mb(ws.Bytes)/max(secs, 1e-9), cacheDir)
				if whole != "" {
					fmt.Fprintf(c.OutOrStdout(), "kept %d files whole (%.1f MB)", kept, mb(keptBytes))
					if skipped > 0 {
						fmt.Fprintf(c.OutOrStdout(), "; %d skipped (larger than a quarter of the cache budget, or chunks missing)", skipped)
					}
					fmt.Fprintln(c.OutOrStdout())
				}
			}
			if werr != nil {
				if ctx.Err() != nil {
					return werr
				}
				return &exitError{exitContent, werr}
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.StringArrayVar(&stores, "store", nil, "chunk store URL (default: the stores the flist records)")
	fl.StringVar(&cacheDir, "cache", "", "the cache directory to fill (as given to 'zos flist mount --cache')")
	fl.IntVar(&workers, "workers", 16, "chunks fetched at once")
	fl.BoolVar(&jsonOut, "json", false, "print a JSON summary: chunks, bytes, failed, retries, seconds")
	fl.DurationVar(&fetchTimeout, "fetch-timeout", 2*time.Minute, "give up on a chunk after retrying its fetch this long")
	fl.StringVar(&whole, "whole", "", "also keep files from this size up whole in the cache, for FUSE passthrough (e.g. 1M)")
	fl.Lookup("whole").NoOptDefVal = "1M"
	return c
}
