package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/oci"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/storeurl"
	"github.com/zosgrid/zos/internal/unpack"
)

func flistCmd() *cobra.Command {
	c := &cobra.Command{Use: "flist", Short: "Pack, unpack, inspect, verify and sign flist images"}
	c.AddCommand(packCmd(), unpackCmd(), inspectCmd(), lsCmd(), catCmd(), diffCmd(), verifyCmd(), signCmd())
	c.AddCommand(mountCmds()...)
	return c
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// newBar returns a byte progress bar on a terminal's stderr, or nil.
func newBar(desc string) *progressbar.ProgressBar {
	if !isTerminal(os.Stderr) {
		return nil
	}
	return progressbar.NewOptions64(-1, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription(desc), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
}

func readFlist(path string) (*flist.Reader, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := flist.Open(b)
	if err != nil {
		return nil, &exitError{exitContent, fmt.Errorf("%s: %w", path, err)}
	}
	return r, nil
}

// flistStores opens the --store flags, or else the stores the flist records.
func flistStores(ctx context.Context, r *flist.Reader, flags []string, k *key.Secret) (store.Store, error) {
	specs := flags
	if len(specs) == 0 {
		if v, ok := r.Meta(pack.MetaStores); ok && len(v) > 0 {
			specs = strings.Split(string(v), "\n")
		}
	}
	if len(specs) == 0 {
		return nil, &exitError{exitUsage, errors.New("the flist records no store: pass --store URL")}
	}
	return storeurl.OpenAll(ctx, specs, storeurl.Options{Key: k})
}

// writeFileAtomic writes data to path through a temporary file and rename.
func writeFileAtomic(path string, data []byte) error {
	return writeFileWith(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeFileWith is writeFileAtomic for contents that write writes.
func writeFileWith(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func mb(n int64) float64 { return float64(n) / 1e6 }

func packCmd() *cobra.Command {
	var out string
	var stores []string
	var workers int
	var jsonOut, insecure bool
	var keyFile, baseFile, level, creds, platform string
	c := &cobra.Command{
		Use:   "pack DIR|docker://REF|oci:DIR[:TAG]|docker-archive:FILE -o OUT.fl --store URL [--store URL...] [--base OLD.fl]",
		Short: "Pack a directory tree, or convert a Docker/OCI image, into an flist and its chunks into stores",
		Long: `Pack a directory tree into an flist and its chunks into stores.

Given an image instead of a directory (docker://REF from a registry, oci:DIR[:TAG] from an OCI
layout, docker-archive:FILE from a docker save tarball), pack applies its layers in order, as
umoci unpack would, without a Docker daemon and without the image ever being on disk, and keeps
the image's run configuration in the flist. Registry credentials come from --creds, else from
$DOCKER_CONFIG/config.json or ~/.docker/config.json; plain HTTP is used only for loopback
registries unless --insecure.`,
		Args: usageArgs(1, "one DIR or image reference"),
		RunE: func(c *cobra.Command, args []string) error {
			if out == "" {
				return &exitError{exitUsage, errors.New("pack needs -o OUT.fl")}
			}
			src := args[0]
			image := oci.IsRef(src)
			// Fail before packing, not after: the source must be a directory
			// and the flist's directory must exist.
			if !image {
				if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
					return &exitError{exitUsage, fmt.Errorf("%s is not a directory: pack needs the root of a tree, or an image (docker://REF, oci:DIR[:TAG], docker-archive:FILE)", src)}
				}
				if creds != "" || insecure || platform != "" {
					return &exitError{exitUsage, errors.New("--creds, --insecure and --platform are for images, not directories")}
				}
			}
			if fi, err := os.Stat(filepath.Dir(out)); err != nil || !fi.IsDir() {
				return &exitError{exitUsage, fmt.Errorf("cannot write %s: directory %s does not exist (create it first)", out, filepath.Dir(out))}
			}
			var img *oci.Image
			if image {
				iopt := oci.Options{Insecure: insecure, Platform: platform}
				if creds != "" {
					u, p, ok := strings.Cut(creds, ":")
					if !ok || u == "" {
						return &exitError{exitUsage, errors.New("--creds takes USER:PASSWORD")}
					}
					iopt.Username, iopt.Password = u, p
				}
				var err error
				if img, err = oci.Open(c.Context(), src, iopt); err != nil {
					return err
				}
			}
			var k *key.Secret
			if keyFile != "" {
				s, err := key.Load(keyFile)
				if err != nil {
					return err
				}
				k = &s
			}
			st, err := storeurl.OpenAll(c.Context(), stores, storeurl.Options{Key: k})
			if err != nil {
				return err
			}
			defer st.Close()
			var recorded []string
			for _, s := range stores {
				recorded = append(recorded, storeurl.Redact(s))
			}
			opt := pack.Options{Workers: workers, Stores: recorded}
			if opt.Level, err = parseLevel(level); err != nil {
				return &exitError{exitUsage, err}
			}
			if baseFile != "" {
				if opt.Base, err = readFlist(baseFile); err != nil {
					return err
				}
			}
			var bar *progressbar.ProgressBar
			if !jsonOut {
				bar = newBar("packing")
			}
			if bar != nil {
				opt.Progress = func(s pack.Stats) {
					if image {
						bar.Describe(fmt.Sprintf("layer %d/%d", s.Layer, s.Layers))
					} else {
						bar.ChangeMax64(s.TotalBytes)
					}
					bar.Set64(s.Bytes)
				}
			}
			if opt.Workers <= 0 {
				opt.Workers = 2 * runtime.GOMAXPROCS(0) // pack's default, fixed before morePs
			}
			morePs()
			var fl []byte
			var stats pack.Stats
			if image {
				opt.Meta = img.Meta()
				fl, stats, err = pack.Layers(c.Context(), img, st, opt)
			} else {
				fl, stats, err = pack.Dir(c.Context(), src, st, opt)
			}
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				if errors.Is(err, pack.ErrLayer) || errors.Is(err, oci.ErrDiffID) {
					return &exitError{exitContent, err}
				}
				return err
			}
			if err := writeFileAtomic(out, fl); err != nil {
				return err
			}
			r, _ := flist.Open(fl)
			secs := stats.Elapsed.Seconds()
			if jsonOut {
				m := map[string]any{
					"flist": out, "digest": r.Digest().String(), "entries": stats.Entries, "files": stats.Files,
					"bytes": stats.TotalBytes, "chunks": stats.Chunks, "new_chunks": stats.NewChunks,
					"stored_chunks": stats.Chunks - stats.NewChunks, "delta_chunks": stats.DeltaChunks, "dup_files": stats.DupFiles,
					"store_bytes_written": stats.StoredBytes, "metadata_bytes": stats.MetaBytes,
					"seconds": secs, "mb_per_s": mb(stats.TotalBytes) / secs,
				}
				if image {
					m["source"], m["layers"], m["layer_bytes"], m["orphan_chunks"] = src, stats.Layers, stats.Bytes, stats.Orphans
					m["stored_chunks"] = max(stats.Chunks+stats.Orphans-stats.NewChunks, 0)
					m["mb_per_s"] = mb(stats.Bytes) / secs
				}
				return json.NewEncoder(c.OutOrStdout()).Encode(m)
			}
			w := c.OutOrStdout()
			if image {
				fmt.Fprintf(w, "converted %s -> %s\n", src, out)
			} else {
				fmt.Fprintf(w, "packed %s -> %s\n", src, out)
			}
			fmt.Fprintf(w, "  digest    %s\n", r.Digest())
			if image {
				fmt.Fprintf(w, "  layers    %d (%.1f MB of tar read)\n", stats.Layers, mb(stats.Bytes))
			}
			fmt.Fprintf(w, "  entries   %d (%d files, %d stored once for several names)\n", stats.Entries, stats.Files, stats.DupFiles)
			fmt.Fprintf(w, "  bytes     %.1f MB\n", mb(stats.TotalBytes))
			if image {
				fmt.Fprintf(w, "  chunks    %d (%d new; %d more of content a later layer replaced)\n", stats.Chunks, stats.NewChunks, stats.Orphans)
			} else {
				fmt.Fprintf(w, "  chunks    %d (%d new, %d already stored)\n", stats.Chunks, stats.NewChunks, stats.Chunks-stats.NewChunks)
			}
			if opt.Base != nil {
				fmt.Fprintf(w, "  deltas    %d new chunks stored as deltas against %s\n", stats.DeltaChunks, baseFile)
			}
			fmt.Fprintf(w, "  written   %.1f MB to %s\n", mb(stats.StoredBytes), st)
			if stats.TotalBytes > 0 && stats.MetaBytes > 0 {
				fmt.Fprintf(w, "  metadata  %d bytes (1/%.0f of the tree)\n", stats.MetaBytes, float64(stats.TotalBytes)/float64(stats.MetaBytes))
			} else {
				fmt.Fprintf(w, "  metadata  %d bytes\n", stats.MetaBytes)
			}
			fmt.Fprintf(w, "  time      %.2fs, %.1f MB/s\n", secs, mb(stats.TotalBytes)/secs)
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "where to write the flist")
	c.Flags().StringArrayVar(&stores, "store", nil, "chunk store URL, optionally prefixed by a range LO-HI= (repeatable)")
	c.Flags().IntVar(&workers, "workers", 0, "parallel sealing/upload workers (default: 2 per CPU)")
	c.Flags().StringVar(&level, "level", strconv.Itoa(chunk.DefaultLevel), "zstd level for new chunks, 1 (fastest) to 19 (smallest); names: fastest=1, default=3, better=7, best=11")
	c.Flags().BoolVar(&jsonOut, "json", false, "print the summary as JSON")
	c.Flags().StringVar(&keyFile, "key", "", "secret key file that signs writes to http stores")
	c.Flags().StringVar(&baseFile, "base", "", "an earlier flist whose chunks are in the store (e.g. the previous version): store new chunks as deltas against it")
	c.Flags().StringVar(&creds, "creds", "", "images: registry credentials USER:PASSWORD (default: the docker config.json)")
	c.Flags().BoolVar(&insecure, "insecure", false, "images: allow plain HTTP and unverified TLS to the registry")
	c.Flags().StringVar(&platform, "platform", "", "images: which image of a multi-platform index, os/arch[/variant] (default: linux and this machine's architecture)")
	return c
}

// levelNames are --level's names for zstd levels (the pure-Go encoder's
// names, which earlier versions took).
var levelNames = map[string]int{"fastest": 1, "default": 3, "better": 7, "best": 11}

func parseLevel(s string) (int, error) {
	if l, ok := levelNames[s]; ok {
		return l, nil
	}
	if l, err := strconv.Atoi(s); err == nil && l >= chunk.MinLevel && l <= chunk.MaxLevel {
		return l, nil
	}
	return 0, fmt.Errorf("unknown --level %q: use a zstd level from %d to %d, or fastest, default, better or best", s, chunk.MinLevel, chunk.MaxLevel)
}

func unpackCmd() *cobra.Command {
	var stores []string
	var workers int
	c := &cobra.Command{
		Use:   "unpack FL DEST [--store URL...]",
		Short: "Restore the tree of an flist into an empty directory, verifying every chunk",
		Args:  usageArgs(2, "FL and DEST"),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := readFlist(args[0])
			if err != nil {
				return err
			}
			st, err := flistStores(c.Context(), r, stores, nil)
			if err != nil {
				return err
			}
			defer st.Close()
			opt := unpack.Options{Workers: workers}
			bar := newBar("unpacking")
			if bar != nil {
				opt.Progress = func(done, total int64) { bar.ChangeMax64(total); bar.Set64(done) }
			}
			start := time.Now()
			stats, err := unpack.Unpack(c.Context(), r, st, args[1], opt)
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				var inv *chunk.Invalid
				if errors.As(err, &inv) || errors.Is(err, store.ErrNotFound) || errors.Is(err, flist.ErrCorrupt) {
					return &exitError{exitContent, err}
				}
				return err
			}
			secs := time.Since(start).Seconds()
			fmt.Fprintf(c.OutOrStdout(), "unpacked %d entries, %.1f MB from %d chunks in %.2fs (%.1f MB/s)\n",
				stats.Entries, mb(stats.Bytes), stats.Chunks, secs, mb(stats.Bytes)/secs)
			return nil
		},
	}
	c.Flags().StringArrayVar(&stores, "store", nil, "chunk store URL (default: the stores the flist records)")
	c.Flags().IntVar(&workers, "workers", 0, "parallel chunk fetches (default: 4 per CPU)")
	return c
}

type summary struct {
	Digest     string            `json:"digest"`
	Version    int               `json:"version"`
	Bytes      int               `json:"metadata_bytes"`
	Entries    uint64            `json:"entries"`
	Kinds      map[string]int    `json:"kinds"`
	HardLinks  int               `json:"hard_links"`
	Content    uint64            `json:"content_bytes"`
	Stream     uint64            `json:"stream_bytes"`
	Chunks     int               `json:"chunks"`
	Meta       map[string]string `json:"meta"`
	Signatures []string          `json:"signatures"`
}

func inspectCmd() *cobra.Command {
	var jsonOut bool
	c := &cobra.Command{
		Use:   "inspect FL [--json]",
		Short: "Show an flist's digest, counts, chunks, stores and signatures",
		Args:  usageArgs(1, "one FL"),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := readFlist(args[0])
			if err != nil {
				return err
			}
			s := summary{Digest: r.Digest().String(), Version: flist.Version, Bytes: len(r.Bytes()), Entries: r.Len(),
				Kinds: map[string]int{}, Stream: r.StreamSize(), Chunks: len(r.Chunks()), Meta: map[string]string{}, Signatures: []string{}}
			err = r.Walk(func(p string, i uint64, e *flist.Entry) error {
				if e.IsLink() {
					s.HardLinks++
					return nil
				}
				s.Kinds[e.Kind().String()]++
				s.Content += e.Size
				return nil
			})
			if err != nil {
				return &exitError{exitContent, err}
			}
			for _, k := range r.MetaKeys() {
				v, _ := r.Meta(k)
				s.Meta[k] = string(v)
			}
			for _, sig := range r.Signatures() {
				s.Signatures = append(s.Signatures, key.Public(sig.Key).String())
			}
			if jsonOut {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "digest\t%s\n", s.Digest)
			fmt.Fprintf(w, "format\tversion %d, %d bytes\n", s.Version, s.Bytes)
			fmt.Fprintf(w, "entries\t%d", s.Entries)
			for _, k := range []string{"dir", "file", "symlink", "char", "block", "fifo", "socket"} {
				if n := s.Kinds[k]; n > 0 {
					fmt.Fprintf(w, ", %d %s", n, k)
				}
			}
			fmt.Fprintf(w, ", %d hard links\n", s.HardLinks)
			fmt.Fprintf(w, "content\t%.1f MB in files, %.1f MB stream in %d chunks\n", mb(int64(s.Content)), mb(int64(s.Stream)), s.Chunks)
			for _, k := range r.MetaKeys() {
				fmt.Fprintf(w, "%s\t%s\n", k, strings.ReplaceAll(s.Meta[k], "\n", ", "))
			}
			if len(s.Signatures) == 0 {
				fmt.Fprintf(w, "signatures\tnone\n")
			}
			for _, sg := range s.Signatures {
				fmt.Fprintf(w, "signed by\t%s\n", sg)
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	return c
}

func lsLine(w io.Writer, r *flist.Reader, name string, e *flist.Entry) {
	t, err := r.Resolve(e)
	if err != nil {
		fmt.Fprintf(w, "?\t%s\t(%v)\n", name, err)
		return
	}
	extra := ""
	switch t.Kind() {
	case flist.KindSymlink:
		extra = " -> " + t.Target
	case flist.KindChar, flist.KindBlock:
		extra = fmt.Sprintf(" (%d, %d)", (t.Rdev>>8)&0xfff, (t.Rdev&0xff)|((t.Rdev>>12)&0xfff00))
	}
	mt := time.Unix(t.Mtime, int64(t.Nsec)).UTC().Format("2006-01-02 15:04")
	fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\t%s%s\n", t.FileMode(), t.UID, t.GID, t.Size, mt, name, extra)
}

func lsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "ls FL [PATH]",
		Short: "List a directory of an flist (or show one entry)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := readFlist(args[0])
			if err != nil {
				return err
			}
			p := "/"
			if len(args) == 2 {
				p = args[1]
			}
			_, e, err := r.Lookup(p)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 0, 1, ' ', tabwriter.AlignRight)
			if e.IsLink() || e.Kind() != flist.KindDir {
				lsLine(w, r, p, e)
				return w.Flush()
			}
			for j := e.FirstChild; j < e.FirstChild+e.NumChildren; j++ {
				ch, err := r.Entry(j)
				if err != nil {
					return err
				}
				lsLine(w, r, ch.Name, ch)
			}
			return w.Flush()
		},
	}
	return c
}

// readContent returns a regular entry's content, fetched and verified.
func readContent(ctx context.Context, r *flist.Reader, st store.Store, e *flist.Entry, w io.Writer) error {
	codec := chunk.NewCodec(0)
	off, end := e.Offset, e.Offset+e.Size
	for off < end {
		k := r.ChunkAt(off)
		data, err := store.Fetch(ctx, st, codec, r.Chunks()[k])
		if err != nil {
			return err
		}
		s := r.ChunkStart(k)
		piece := data[off-s : min(uint64(len(data)), end-s)]
		if _, err := w.Write(piece); err != nil {
			return err
		}
		off += uint64(len(piece))
	}
	return nil
}

func catCmd() *cobra.Command {
	var stores []string
	c := &cobra.Command{
		Use:   "cat FL PATH [--store URL...]",
		Short: "Write a file of an flist to standard output, verified",
		Args:  usageArgs(2, "FL and PATH"),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := readFlist(args[0])
			if err != nil {
				return err
			}
			_, e, err := r.Lookup(args[1])
			if err != nil {
				return err
			}
			if e, err = r.Resolve(e); err != nil {
				return err
			}
			if e.Kind() != flist.KindRegular {
				return fmt.Errorf("%s is a %s, not a regular file", args[1], e.Kind())
			}
			st, err := flistStores(c.Context(), r, stores, nil)
			if err != nil {
				return err
			}
			defer st.Close()
			return readContent(c.Context(), r, st, e, c.OutOrStdout())
		},
	}
	c.Flags().StringArrayVar(&stores, "store", nil, "chunk store URL (default: the stores the flist records)")
	return c
}

func signCmd() *cobra.Command {
	var keyFile, out string
	c := &cobra.Command{
		Use:   "sign FL --key FILE [-o OUT]",
		Short: "Add an ed25519 signature of the flist's digest (in place unless -o)",
		Args:  usageArgs(1, "one FL"),
		RunE: func(c *cobra.Command, args []string) error {
			if keyFile == "" {
				return &exitError{exitUsage, errors.New("sign needs --key FILE (make one with 'zos key gen FILE')")}
			}
			s, err := key.Load(keyFile)
			if err != nil {
				return err
			}
			r, err := readFlist(args[0])
			if err != nil {
				return err
			}
			if out == "" {
				out = args[0]
			}
			if err := writeFileAtomic(out, flist.Sign(r, s)); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "signed %s by %s\n", r.Digest(), s.Public())
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "secret key file")
	c.Flags().StringVarP(&out, "output", "o", "", "write the signed flist here instead of in place")
	return c
}

type verifyReport struct {
	Digest    string   `json:"digest"`
	Signed    []string `json:"signed_by"`
	SigError  string   `json:"signature_error,omitempty"`
	Chunks    int      `json:"chunks"`
	Missing   []string `json:"missing_chunks"`
	Invalid   []string `json:"invalid_chunks"`
	OtherErrs []string `json:"errors"`
	OK        bool     `json:"ok"`
}

func verifyCmd() *cobra.Command {
	var stores, pubkeys []string
	var jsonOut, noChunks bool
	var workers int
	c := &cobra.Command{
		Use:   "verify FL [--store URL...] [--pubkey K...]",
		Short: "Check the signature, the structure, then every chunk (exit 3: signature, 4: content)",
		Args:  usageArgs(1, "one FL"),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := readFlist(args[0])
			if err != nil {
				return err
			}
			rep := verifyReport{Digest: r.Digest().String(), Signed: []string{}, Missing: []string{}, Invalid: []string{}, OtherErrs: []string{}}
			var trusted []key.Public
			for _, p := range pubkeys {
				k, err := key.ParsePublic(p)
				if err != nil {
					return &exitError{exitUsage, err}
				}
				trusted = append(trusted, k)
			}
			code := 0
			if len(r.Signatures()) > 0 || len(trusted) > 0 {
				valid, err := r.VerifySignatures(trusted...)
				for _, v := range valid {
					rep.Signed = append(rep.Signed, v.String())
				}
				if err != nil {
					rep.SigError = err.Error()
					code = exitSignature
				}
			}
			if err := r.Validate(); err != nil {
				rep.OtherErrs = append(rep.OtherErrs, err.Error())
				code = max(code, exitContent)
			}
			rep.Chunks = len(r.Chunks())
			if !noChunks && code == 0 {
				st, err := flistStores(c.Context(), r, stores, nil)
				if err != nil {
					return err
				}
				defer st.Close()
				checkChunks(c.Context(), r, st, workers, &rep)
				if len(rep.Missing)+len(rep.Invalid)+len(rep.OtherErrs) > 0 {
					code = exitContent
				}
			}
			rep.OK = code == 0
			if jsonOut {
				json.NewEncoder(c.OutOrStdout()).Encode(rep)
			} else {
				w := c.OutOrStdout()
				fmt.Fprintf(w, "digest     %s\n", rep.Digest)
				switch {
				case rep.SigError != "":
					fmt.Fprintf(w, "signature  FAILED: %s\n", rep.SigError)
				case len(rep.Signed) > 0:
					fmt.Fprintf(w, "signature  ok (%s)\n", strings.Join(rep.Signed, ", "))
				default:
					fmt.Fprintf(w, "signature  none (pass --pubkey to require one)\n")
				}
				if !noChunks && code != exitSignature {
					fmt.Fprintf(w, "chunks     %d checked, %d missing, %d invalid\n", rep.Chunks, len(rep.Missing), len(rep.Invalid))
				}
				for _, m := range rep.Missing {
					fmt.Fprintf(w, "  missing  %s\n", m)
				}
				for _, m := range rep.Invalid {
					fmt.Fprintf(w, "  invalid  %s\n", m)
				}
				for _, m := range rep.OtherErrs {
					fmt.Fprintf(w, "  error    %s\n", m)
				}
			}
			switch code {
			case exitSignature:
				return &exitError{code, errors.New("signature check failed")}
			case exitContent:
				return &exitError{code, errors.New("content check failed: re-upload the missing or corrupt chunks (pack the tree again into the store)")}
			}
			return nil
		},
	}
	c.Flags().StringArrayVar(&stores, "store", nil, "chunk store URL (default: the stores the flist records)")
	c.Flags().StringArrayVar(&pubkeys, "pubkey", nil, "require a signature by this key (ed25519:..., repeatable)")
	c.Flags().BoolVar(&jsonOut, "json", false, "print the report as JSON")
	c.Flags().BoolVar(&noChunks, "no-chunks", false, "check signature and structure only")
	c.Flags().IntVar(&workers, "workers", 16, "parallel chunk checks")
	return c
}

func checkChunks(ctx context.Context, r *flist.Reader, st store.Store, workers int, rep *verifyReport) {
	codec := chunk.NewCodec(0)
	var mu sync.Mutex
	var next atomic.Int64
	chunks := r.Chunks()
	seen := make(map[chunk.Ref]bool, len(chunks))
	var uniq []chunk.Ref
	for _, ch := range chunks {
		if !seen[ch] {
			seen[ch] = true
			uniq = append(uniq, ch)
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < max(workers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(uniq) {
					return
				}
				_, err := store.Fetch(ctx, st, codec, uniq[i])
				if err == nil {
					continue
				}
				id := chunk.ID(uniq[i].Sum).String()
				var inv *chunk.Invalid
				mu.Lock()
				switch {
				case errors.Is(err, store.ErrNotFound):
					rep.Missing = append(rep.Missing, id)
				case errors.As(err, &inv):
					rep.Invalid = append(rep.Invalid, id+": "+err.Error())
				default:
					rep.OtherErrs = append(rep.OtherErrs, err.Error())
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// morePs gives the Go scheduler one P more than it has (unless the user
// set GOMAXPROCS). A pack has one streamer goroutine that reads and cuts
// the tree for all the sealing workers; with one P per CPU it waits for a
// P while the workers hold them (packing big on 2 cores, it waited 0.7 s
// of 2.4 s) and the workers then wait for it. With one P more the kernel
// shares the CPUs among them: 5% less wall time on big, with the same CPU
// time (docs/BENCHMARKS.md, session 15).
func morePs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	}
}
