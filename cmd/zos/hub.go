package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/mount"
)

func hubCmd() *cobra.Command {
	c := &cobra.Command{Use: "hub", Short: "Run a hub, or publish and fetch flists on one"}
	c.AddCommand(hubServeCmd(), hubGCCmd(), hubRegisterCmd(), hubPushCmd(), hubTraceCmd(), hubPullCmd(), hubLsCmd(),
		hubTagCmd(), hubLinkCmd(), hubPromoteCmd(), hubRmCmd(), hubConvertCmd(), hubOpenCmd())
	return c
}

// hubFlags are the client flags every hub subcommand shares.
type hubFlags struct {
	url     string
	keyFile string
	json    bool
}

func (f *hubFlags) add(c *cobra.Command, jsonToo bool) {
	c.Flags().StringVar(&f.url, "hub", os.Getenv("ZOS_HUB"), "hub URL (default $ZOS_HUB)")
	c.Flags().StringVar(&f.keyFile, "key", os.Getenv("ZOS_KEY"), "secret key file that signs requests (default $ZOS_KEY)")
	if jsonToo {
		c.Flags().BoolVar(&f.json, "json", false, "print the result as JSON")
	}
}

// client opens the hub client; needKey says the command cannot work unsigned.
func (f *hubFlags) client(needKey bool) (*hubclient.Client, error) {
	if f.url == "" {
		return nil, &exitError{exitUsage, errors.New("no hub: pass --hub URL or set ZOS_HUB")}
	}
	var k *key.Secret
	if f.keyFile != "" {
		s, err := key.Load(f.keyFile)
		if err != nil {
			return nil, err
		}
		k = &s
	} else if needKey {
		return nil, &exitError{exitUsage, errors.New("this needs a signed request: pass --key FILE or set ZOS_KEY (make one with 'zos key gen FILE')")}
	}
	return hubclient.New(f.url, k)
}

// hubErr maps client errors to exit statuses.
func hubErr(err error) error {
	var se *hubclient.StatusError
	if errors.As(err, &se) && se.Body.MissingCount > 0 {
		return &exitError{exitContent, err}
	}
	return err
}

func parseRefArg(s string) (hubclient.Ref, error) {
	r, err := hubclient.ParseRef(s)
	if err != nil {
		return r, &exitError{exitUsage, err}
	}
	return r, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func hubServeCmd() *cobra.Command {
	var listen, data, level string
	var hosts, admins []string
	var adminReg, noLimits bool
	var recompress int
	var conv hub.ConvertOptions
	var lim hub.RateLimits
	var proxies []string
	c := &cobra.Command{
		Use:   "serve [--listen ADDR] [--data DIR | --data s3://...]",
		Short: "Serve flists and chunks over HTTP (docs/HUB.md)",
		Args:  usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			var lv slog.Level
			if recompress < 0 || recompress > chunk.MaxLevel {
				return &exitError{exitUsage, fmt.Errorf("--recompress-level %d: want 1 to %d, or 0 for none", recompress, chunk.MaxLevel)}
			}
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return &exitError{exitUsage, fmt.Errorf("--log-level: %w", err)}
			}
			log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
			var adm []key.Public
			for _, a := range admins {
				k, err := key.ParsePublic(a)
				if err != nil {
					return &exitError{exitUsage, fmt.Errorf("--admin: %w", err)}
				}
				adm = append(adm, k)
			}
			for _, p := range proxies {
				pf, err := netip.ParsePrefix(p)
				if err != nil {
					a, aerr := netip.ParseAddr(p)
					if aerr != nil {
						return &exitError{exitUsage, fmt.Errorf("--trusted-proxy %q: want an address or CIDR prefix", p)}
					}
					pf = netip.PrefixFrom(a, a.BitLen())
				}
				lim.TrustedProxies = append(lim.TrustedProxies, pf)
			}
			lim.Off = noLimits
			ctx := c.Context()
			b, err := hub.OpenBackend(ctx, data)
			if err != nil {
				return err
			}
			defer b.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			if len(hosts) == 0 {
				hosts = listenHosts(listen, ln.Addr())
			}
			hb := hub.New(b, hub.Options{Hosts: hosts, Admins: adm, AdminRegistration: adminReg, Logger: log, Convert: conv, Limits: lim,
				RecompressLevel: recompress})
			defer hb.Close()
			go hb.Run(ctx)
			srv := &http.Server{Handler: hb, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				srv.Shutdown(sctx)
			}()
			log.Info("hub serving", "addr", ln.Addr().String(), "data", b.Objects.String(), "hosts", hosts, "admins", len(adm))
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to listen on")
	c.Flags().StringVar(&data, "data", "/var/lib/zos/hub", "where the hub keeps its data: a directory or s3://ACCESS:SECRET@HOST/BUCKET[/PREFIX][?tls=false]")
	c.Flags().StringArrayVar(&hosts, "host", nil, "a HOST[:PORT] clients address the hub by; requests signed for others are refused (repeatable; replaces the default: the listen address, or for a wildcard every address of the machine and its host name)")
	c.Flags().StringArrayVar(&admins, "admin", nil, "an admin's public key (ed25519:...): may act in every namespace and run gc (repeatable)")
	c.Flags().BoolVar(&adminReg, "admin-registration", false, "only admins register users (default: anyone may claim a free namespace)")
	c.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	c.Flags().IntVar(&recompress, "recompress-level", hub.DefaultRecompressLevel, "re-seal the chunks of stored flists at this zstd level (1-19) in the background, in place, when that saves bytes; 0 turns it off")
	c.Flags().BoolVar(&conv.AllowPrivate, "convert-allow-private", false, "conversions may fetch from registries at loopback and private addresses (refused by default: SSRF)")
	c.Flags().IntVar(&conv.Workers, "convert-workers", 0, "conversion jobs run at once (default: one per CPU)")
	c.Flags().IntVar(&conv.Queue, "convert-queue", 0, "conversion jobs that may wait for a worker; more are refused with 429 (default: 4 per worker)")
	c.Flags().StringVar(&conv.TempDir, "convert-tmp", "", "where conversions spool small files and uploaded archives (default: $TMPDIR)")
	c.Flags().Int64Var(&conv.MaxUpload, "convert-max-upload", 0, "bytes of an uploaded docker-archive; larger is refused with 413 (default 20 GiB)")
	c.Flags().BoolVar(&conv.NoDeltas, "convert-no-deltas", false, "store a conversion's new chunks whole, not as deltas against the flist its tag held")
	c.Flags().Int64Var(&conv.MaxBytes, "convert-max-bytes", 0, "uncompressed layer bytes one conversion may read (default 64 GiB)")
	c.Flags().Float64Var(&lim.Writes, "rate-writes", 500, "signed writes (chunk uploads included) one key may make a second, sustained")
	c.Flags().Float64Var(&lim.WriteBurst, "rate-writes-burst", 2000, "signed writes one key may make at once")
	c.Flags().Float64Var(&lim.Failures, "rate-failures", 1, "refused requests a key or an address may earn a second before its requests are refused early (429)")
	c.Flags().Float64Var(&lim.FailureBurst, "rate-failures-burst", 30, "refused requests a key or an address may earn at once")
	c.Flags().StringArrayVar(&proxies, "trusted-proxy", nil, "a load balancer's address or CIDR: for its requests the client is the last untrusted X-Forwarded-For address (repeatable)")
	c.Flags().BoolVar(&noLimits, "no-rate-limits", false, "turn rate limiting off (benchmarks)")
	c.Flags().StringVar(&conv.URL, "url", "", "the hub's public base URL, recorded as the chunk store of converted flists (default: the scheme and host of the request)")
	return c
}

func hubGCCmd() *cobra.Command {
	var data string
	var grace time.Duration
	var dry bool
	var f hubFlags
	c := &cobra.Command{
		Use:   "gc [--data DIR|s3://... | --hub URL --key ADMINKEY]",
		Short: "Delete chunks no flist needs and flists no name refers to (safe while the hub runs)",
		Args:  usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			var st hubclient.GCStats
			var err error
			switch {
			case data != "" && f.url != "":
				return &exitError{exitUsage, errors.New("give --data (collect directly) or --hub (ask a hub), not both")}
			case data != "":
				var b *hub.Backend
				b, err = hub.OpenBackend(c.Context(), data)
				if err != nil {
					return err
				}
				defer b.Close()
				st, err = hub.GC(c.Context(), b, hub.GCOptions{Grace: grace, DryRun: dry,
					Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			default:
				cl, cerr := f.client(true)
				if cerr != nil {
					return cerr
				}
				st, err = cl.GC(c.Context(), dry)
			}
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(c.OutOrStdout(), st)
			}
			verb := "deleted"
			if dry {
				verb = "would delete"
			}
			fmt.Fprintf(c.OutOrStdout(), "%s %d chunks (%d bytes) and %d flists; kept %d chunks needed by %d named flists, %d young; %v\n",
				verb, st.Deleted, st.DeletedBytes, st.DeletedFlists, st.Marked, st.Referenced, st.Young, st.Elapsed.Round(time.Millisecond))
			return nil
		},
	}
	c.Flags().StringVar(&data, "data", "", "the hub's data (as for serve): collect directly")
	c.Flags().DurationVar(&grace, "grace", time.Hour, "keep chunks and flists younger than this (uploads in flight)")
	c.Flags().BoolVar(&dry, "dry-run", false, "report without deleting")
	f.add(c, true)
	return c
}

func hubRegisterCmd() *cobra.Command {
	var f hubFlags
	var private bool
	var forKey string
	c := &cobra.Command{
		Use:   "register NAMESPACE --key FILE",
		Short: "Claim a namespace for your key (first come, first served)",
		Args:  usageArgs(1, "one NAMESPACE"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client(true)
			if err != nil {
				return err
			}
			reg := hubclient.Register{Name: args[0], Private: private}
			if forKey != "" {
				k, err := key.ParsePublic(forKey)
				if err != nil {
					return &exitError{exitUsage, err}
				}
				reg.Key = &k
			}
			u, err := cl.Register(c.Context(), reg)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(c.OutOrStdout(), u)
			}
			fmt.Fprintf(c.OutOrStdout(), "registered %s for %s\n", u.Name, u.Key)
			return nil
		},
	}
	c.Flags().BoolVar(&private, "private", false, "reads of the namespace need a request signed by its owner")
	c.Flags().StringVar(&forKey, "for", "", "register for this public key instead (admins only)")
	f.add(c, true)
	return c
}

func hubPushCmd() *cobra.Command {
	var f hubFlags
	var traceFile string
	var noTrace bool
	c := &cobra.Command{
		Use:   "push FL NAMESPACE/NAME[:TAG]",
		Short: "Publish an flist whose chunks are already in the hub (pack with --store HUB/chunks)",
		Args:  usageArgs(2, "FL and NAMESPACE/NAME[:TAG]"),
		RunE: func(c *cobra.Command, args []string) error {
			ref, err := parseRefArg(args[1])
			if err != nil {
				return err
			}
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			cl, err := f.client(true)
			if err != nil {
				return err
			}
			var tr []byte
			if traceFile, _ = besideFile(traceFile, tracePath(args[0]), noTrace); traceFile != "" {
				if tr, err = readTraceFor(b, traceFile); err != nil {
					return err
				}
			}
			p, err := cl.Push(c.Context(), ref, b)
			if err != nil {
				return hubErr(err)
			}
			out := struct {
				hubclient.Pushed
				Trace *hubclient.TraceInfo `json:"trace,omitempty"`
			}{Pushed: p}
			if tr != nil {
				ti, err := cl.PushTrace(c.Context(), p.Digest, tr)
				if err != nil {
					return fmt.Errorf("flist pushed, its trace not: %w", hubErr(err))
				}
				out.Trace = &ti
			}
			if f.json {
				return printJSON(c.OutOrStdout(), out)
			}
			fmt.Fprintf(c.OutOrStdout(), "%s@%s\n", p.Ref, p.Digest)
			if out.Trace != nil {
				printTraceInfo(c, *out.Trace)
			}
			return nil
		},
	}
	c.Flags().StringVar(&traceFile, "trace", "", "prefetch trace to store beside the flist (default: FL.trace if it exists; see 'zos flist trace')")
	c.Flags().BoolVar(&noTrace, "no-trace", false, "do not push a trace, even if FL.trace exists")
	f.add(c, true)
	return c
}

func hubPullCmd() *cobra.Command {
	var f hubFlags
	var out string
	var noBundle bool
	c := &cobra.Command{
		Use:   "pull NAMESPACE/NAME[:TAG|@DIGEST] [-o FILE]",
		Short: "Download an flist (checked against the digest the hub announces)",
		Args:  usageArgs(1, "one reference"),
		RunE: func(c *cobra.Command, args []string) error {
			var p hubclient.Pulled
			cl, err := f.client(false)
			if err != nil {
				return err
			}
			if d, derr := digest.Parse(args[0]); derr == nil {
				p, err = cl.PullDigest(c.Context(), d)
			} else {
				ref, rerr := parseRefArg(args[0])
				if rerr != nil {
					return rerr
				}
				if out == "" {
					out = ref.Name + ".fl"
				}
				p, err = cl.Pull(c.Context(), ref)
			}
			if err != nil {
				return err
			}
			if out == "" {
				out = p.Digest.String() + ".fl"
			}
			if err := os.WriteFile(out, p.Flist, 0o644); err != nil {
				return err
			}
			// The hub's trace and start bundle, if any, beside the file,
			// where 'zos flist mount' finds them.
			trace, t, err := pullTrace(c.Context(), cl, p)
			if err != nil {
				return err
			}
			// Files left by an earlier pull that the hub no longer keeps
			// would not match: they go.
			if trace != nil {
				err = os.WriteFile(out+".trace", trace, 0o644)
			} else {
				err = removeMissing(out + ".trace")
			}
			if err != nil {
				return err
			}
			var bundle int64
			if t != nil && t.Ranges != nil && !noBundle {
				if bundle, err = pullBundle(c.Context(), cl, p, t, out+".bundle"); err != nil {
					return err
				}
			}
			if bundle == 0 {
				if err := removeMissing(out + ".bundle"); err != nil {
					return err
				}
			}
			if f.json {
				return printJSON(c.OutOrStdout(), map[string]any{"file": out, "digest": p.Digest, "resolved": p.Resolved, "signers": p.Signers,
					"trace": trace != nil, "bundle": bundle})
			}
			fmt.Fprintf(c.OutOrStdout(), "%s %s\n", out, p.Resolved)
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "file to write (default NAME.fl)")
	c.Flags().BoolVar(&noBundle, "no-bundle", false, "do not download the hub's start bundle (FL.bundle) beside the flist")
	f.add(c, true)
	return c
}

// printTraceInfo reports a trace stored on the hub and the start bundle
// the hub built from it (or, on stderr, why it built none).
func printTraceInfo(c *cobra.Command, ti hubclient.TraceInfo) {
	fmt.Fprintf(c.OutOrStdout(), "trace: %d chunks to prefetch\n", ti.Chunks)
	if b := ti.Bundle; b != nil {
		fmt.Fprintf(c.OutOrStdout(), "start bundle: %.1f MB (%d chunks, %.1f MB read of them, %.1f MB of proofs), built by the hub\n",
			mb(b.Size), b.Chunks, mb(b.Plain), mb(b.Proofs))
	} else if ti.BundleError != "" {
		fmt.Fprintf(c.ErrOrStderr(), "warning: no start bundle: %s\n", ti.BundleError)
	}
}

// readTraceFor reads a trace file and checks it against the flist fl.
func readTraceFor(fl []byte, file string) ([]byte, error) {
	r, err := flist.Open(fl)
	if err != nil {
		return nil, err
	}
	tr, err := os.ReadFile(file)
	if err == nil {
		_, err = mount.ParseTraceFor(tr, r)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w (record it again with 'zos flist trace')", file, err)
	}
	return tr, nil
}

func hubTraceCmd() *cobra.Command {
	var f hubFlags
	var traceFile string
	var rm bool
	c := &cobra.Command{
		Use:   "trace FL [--trace FILE | --rm]",
		Short: "Store (or remove) the prefetch trace of an flist already on the hub; nodes mounting it prefetch by it",
		Args:  usageArgs(1, "FL"),
		RunE: func(c *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			r, err := flist.Open(b)
			if err != nil {
				return err
			}
			cl, err := f.client(true)
			if err != nil {
				return err
			}
			if rm {
				if err := cl.RemoveTrace(c.Context(), r.Digest()); err != nil {
					return hubErr(err)
				}
				return nil
			}
			if traceFile == "" {
				traceFile = tracePath(args[0])
			}
			tr, err := readTraceFor(b, traceFile)
			if err != nil {
				return err
			}
			ti, err := cl.PushTrace(c.Context(), r.Digest(), tr)
			if err != nil {
				return hubErr(err)
			}
			if f.json {
				return printJSON(c.OutOrStdout(), ti)
			}
			printTraceInfo(c, ti)
			return nil
		},
	}
	c.Flags().StringVar(&traceFile, "trace", "", "the trace file (default FL.trace)")
	c.Flags().BoolVar(&rm, "rm", false, "remove the hub's trace of FL instead")
	f.add(c, true)
	return c
}

// pullTrace returns the trace the hub keeps for the flist p, checked
// against it; nil if it keeps none.
func pullTrace(ctx context.Context, cl *hubclient.Client, p hubclient.Pulled) ([]byte, *mount.Trace, error) {
	b, err := cl.PullTrace(ctx, p.Digest)
	if errors.Is(err, hubclient.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	r, err := flist.Open(p.Flist)
	var t *mount.Trace
	if err == nil {
		t, err = mount.ParseTraceFor(b, r)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("the hub's trace of %s: %w", p.Digest.Short(), err)
	}
	return b, t, nil
}

// removeMissing removes path if it exists.
func removeMissing(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// pullBundle saves at path the start bundle the hub keeps for the flist p
// and its trace t, verified whole as it streams in (a bundle that fails
// is not saved); it returns its size, 0 if the hub keeps none.
func pullBundle(ctx context.Context, cl *hubclient.Client, p hubclient.Pulled, t *mount.Trace, path string) (int64, error) {
	rc, size, err := cl.PullBundle(ctx, p.Digest)
	if errors.Is(err, hubclient.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	r, err := flist.Open(p.Flist)
	if err != nil {
		return 0, err
	}
	var src io.Reader = rc
	if bar := newBar("start bundle"); bar != nil {
		bar.ChangeMax64(size)
		defer bar.Finish()
		src = io.TeeReader(rc, bar)
	}
	err = writeFileWith(path, func(w io.Writer) error {
		_, err := mount.VerifyBundle(io.TeeReader(src, w), r, t)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("the hub's start bundle of %s: %w (pull again, or --no-bundle)", p.Digest.Short(), err)
	}
	return size, nil
}

func hubLsCmd() *cobra.Command {
	var f hubFlags
	c := &cobra.Command{
		Use:   "ls [NAMESPACE[/NAME]]",
		Short: "List users, a namespace's flists, or one name's versions and tags",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client(false)
			if err != nil {
				return err
			}
			w := c.OutOrStdout()
			if len(args) == 0 {
				us, err := cl.Users(c.Context())
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(w, us)
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				for _, u := range us {
					vis := "public"
					if u.Private {
						vis = "private"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Key, vis)
				}
				return tw.Flush()
			}
			var repos []hubclient.Repo
			if ns, name, ok := strings.Cut(args[0], "/"); ok {
				r, err := cl.Repo(c.Context(), ns, name)
				if err != nil {
					return err
				}
				repos = []hubclient.Repo{r}
			} else if repos, err = cl.Repos(c.Context(), ns); err != nil {
				return err
			}
			if f.json {
				return printJSON(w, repos)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			for _, r := range repos {
				if r.Link != "" {
					fmt.Fprintf(tw, "%s/%s\t-> %s\n", r.NS, r.Name, r.Link)
					continue
				}
				tags := map[digest.ID][]string{}
				for t, d := range r.Tags {
					tags[d] = append(tags[d], t)
				}
				for _, v := range r.Versions {
					fmt.Fprintf(tw, "%s/%s@%s\t%s\t%d\t%s\n", r.NS, r.Name, v.Digest, strings.Join(tags[v.Digest], ","), v.Size, v.Pushed.Format(time.RFC3339))
				}
			}
			return tw.Flush()
		},
	}
	f.add(c, true)
	return c
}

func hubTagCmd() *cobra.Command {
	var f hubFlags
	c := &cobra.Command{
		Use:   "tag NAMESPACE/NAME:TAG DIGEST",
		Short: "Point a tag at one of the name's versions",
		Args:  usageArgs(2, "NAMESPACE/NAME:TAG and DIGEST"),
		RunE: func(c *cobra.Command, args []string) error {
			ref, err := parseRefArg(args[0])
			if err != nil {
				return err
			}
			if ref.Tag == "" {
				return &exitError{exitUsage, errors.New("tag takes NAMESPACE/NAME:TAG")}
			}
			d, err := digest.Parse(args[1])
			if err != nil {
				return &exitError{exitUsage, err}
			}
			cl, err := f.client(true)
			if err != nil {
				return err
			}
			return cl.Tag(c.Context(), ref.NS, ref.Name, ref.Tag, d)
		},
	}
	f.add(c, false)
	return c
}

func hubLinkCmd() *cobra.Command {
	var f hubFlags
	c := &cobra.Command{
		Use:   "link NAMESPACE/NAME TARGET",
		Short: "Make a name forward to another reference (NS/NAME[:TAG|@DIGEST]), followed on every read",
		Args:  usageArgs(2, "NAMESPACE/NAME and TARGET"),
		RunE: func(c *cobra.Command, args []string) error {
			ref, err := parseRefArg(args[0])
			if err != nil {
				return err
			}
			target, err := parseRefArg(args[1])
			if err != nil {
				return err
			}
			cl, err := f.client(true)
			if err != nil {
				return err
			}
			return cl.Link(c.Context(), ref.NS, ref.Name, target)
		},
	}
	f.add(c, false)
	return c
}

func hubPromoteCmd() *cobra.Command {
	var f hubFlags
	c := &cobra.Command{
		Use:   "promote SOURCE NAMESPACE/NAME[:TAG]",
		Short: "Copy what a reference resolves to (through links and tags) into a namespace",
		Args:  usageArgs(2, "SOURCE and NAMESPACE/NAME[:TAG]"),
		RunE: func(c *cobra.Command, args []string) error {
			src, err := parseRefArg(args[0])
			if err != nil {
				return err
			}
			dst, err := parseRefArg(args[1])
			if err != nil {
				return err
			}
			cl, err := f.client(true)
			if err != nil {
				return err
			}
			p, err := cl.Promote(c.Context(), dst, src)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(c.OutOrStdout(), p)
			}
			fmt.Fprintf(c.OutOrStdout(), "%s@%s\n", p.Ref, p.Digest)
			return nil
		},
	}
	f.add(c, true)
	return c
}

func hubRmCmd() *cobra.Command {
	var f hubFlags
	c := &cobra.Command{
		Use:   "rm NAMESPACE/NAME[:TAG|@DIGEST]",
		Short: "Remove a name (with its versions and tags), a tag, or a version and its tags",
		Args:  usageArgs(1, "one reference"),
		RunE: func(c *cobra.Command, args []string) error {
			ref, err := parseRefArg(args[0])
			if err != nil {
				return err
			}
			cl, err := f.client(true)
			if err != nil {
				return err
			}
			return cl.Remove(c.Context(), ref)
		},
	}
	f.add(c, false)
	return c
}

func hubOpenCmd() *cobra.Command {
	var f hubFlags
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "open NAMESPACE --key FILE [--for 1h]",
		Short: "Print a web page link that shows your private namespace in a browser, for a while",
		Long: `Print the URL of a namespace's page on the hub's web page with a view token signed by your
key (made here, not on the hub), so that a browser, which cannot sign requests, shows the
namespace even when it is private. The token opens that namespace only, on that hub only, and
expires after --for (at most 24h); anyone holding the link sees the namespace until then.`,
		Args: usageArgs(1, "one NAMESPACE"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client(true)
			if err != nil {
				return err
			}
			u, err := cl.ViewURL(args[0], ttl)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			fmt.Fprintln(c.OutOrStdout(), u)
			return nil
		},
	}
	c.Flags().DurationVar(&ttl, "for", time.Hour, "how long the link works (at most 24h)")
	f.add(c, false)
	return c
}
