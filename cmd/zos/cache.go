package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/store/lru"
)

func cacheCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "cache",
		Short: "Inspect and trim the machine's chunk cache (default " + lru.DefaultDir + ")",
		Long: `The chunk cache is one directory of verified chunks shared by every mount and
every flist on the machine, bounded by a budget with least-recently-used
eviction (docs/CACHE.md). Mounts fill it; these commands inspect and trim it,
and are safe to run while mounts use it: a chunk a mount is reading is pinned
and never removed.`,
	}
	c.AddCommand(cacheStatsCmd(), cacheGCCmd(), cachePruneCmd())
	return c
}

// openCache opens an existing cache directory.
func openCache(c *cobra.Command, dir string) (*lru.Store, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no chunk cache at %s (pass --cache DIR)", dir)
	}
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, &exitError{exitUsage, fmt.Errorf("%s is not a directory", dir)}
	}
	return lru.Open(c.Context(), dir, lru.Options{NoBackground: true})
}

func cacheStatsCmd() *cobra.Command {
	var dir string
	var jsonOut bool
	c := &cobra.Command{
		Use:   "stats [--cache DIR] [--json]",
		Short: "Show what the chunk cache holds: blobs, bytes, budget, pins, hits and misses",
		Args:  usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := openCache(c, dir)
			if err != nil {
				return err
			}
			defer s.Close()
			u, err := s.Usage(c.Context())
			if err != nil {
				return err
			}
			st, err := s.Stats()
			if err != nil {
				return err
			}
			if jsonOut {
				return json.NewEncoder(c.OutOrStdout()).Encode(map[string]any{
					"dir": s.Root(), "blobs": u.Blobs, "bytes": u.Bytes, "budget": st.Budget,
					"pinned": u.Pinned, "pinned_bytes": u.PinnedBytes, "temp_files": u.Temps, "temp_bytes": u.TempBytes,
					"whole_files": u.Files, "whole_file_bytes": u.FileBytes,
					"hits": st.Hits, "misses": st.Misses, "evictions": st.Evictions, "evicted_bytes": st.EvictedBytes,
					"counted_blobs": st.Blobs, "counted_bytes": st.Used, "recounted": st.Reconciled.UTC().Format(time.RFC3339),
				})
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "cache\t%s\n", s.Root())
			fmt.Fprintf(w, "blobs\t%d (%s)\n", u.Blobs-u.Files, human(u.Bytes-u.FileBytes))
			if u.Files > 0 {
				fmt.Fprintf(w, "whole files\t%d (%s), served by passthrough\n", u.Files, human(u.FileBytes))
			}
			fmt.Fprintf(w, "budget\t%s (%.1f%% used)\n", human(st.Budget), 100*float64(u.Bytes)/float64(st.Budget))
			if u.Pinned >= 0 {
				fmt.Fprintf(w, "pinned\t%d (%s)\n", u.Pinned, human(u.PinnedBytes))
			}
			if u.Temps > 0 {
				fmt.Fprintf(w, "writing\t%d temporary files (%s)\n", u.Temps, human(u.TempBytes))
			}
			rate := ""
			if n := st.Hits + st.Misses; n > 0 {
				rate = fmt.Sprintf(" (%.1f%% hits)", 100*float64(st.Hits)/float64(n))
			}
			fmt.Fprintf(w, "reads\t%d hits, %d misses%s\n", st.Hits, st.Misses, rate)
			fmt.Fprintf(w, "evicted\t%d blobs (%s)\n", st.Evictions, human(st.EvictedBytes))
			if st.Used != u.Bytes || st.Blobs != u.Blobs {
				fmt.Fprintf(w, "counted\t%d blobs (%s): writes in progress, or a crash; 'zos cache gc' recounts\n", st.Blobs, human(st.Used))
			}
			return w.Flush()
		},
	}
	c.Flags().StringVar(&dir, "cache", lru.DefaultDir, "the cache directory")
	c.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	return c
}

func cacheGCCmd() *cobra.Command {
	var dir, size string
	var jsonOut bool
	c := &cobra.Command{
		Use:   "gc [--cache DIR] [--cache-size SIZE] [--json]",
		Short: "Evict least recently used chunks down to the budget, remove crashed writers' leftovers, recount",
		Long: `Evict the least recently used chunks until the cache fits in its budget, remove
temporary files left by crashed writers, and recount the cache. --cache-size
sets the budget first, for every process using the cache (mounts included),
as 'zos flist mount --cache-size' does. Pinned chunks (being read) are kept.`,
		Args: usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			var budget int64
			if size != "" {
				var err error
				if budget, err = parseSize(size); err != nil {
					return &exitError{exitUsage, fmt.Errorf("--cache-size: %w", err)}
				}
			}
			s, err := openCache(c, dir)
			if err != nil {
				return err
			}
			defer s.Close()
			if budget > 0 {
				if err := s.SetBudget(budget); err != nil {
					return err
				}
			}
			r, err := s.GC(c.Context(), 0)
			if err != nil {
				return err
			}
			return printSweep(c, jsonOut, s, r)
		},
	}
	c.Flags().StringVar(&dir, "cache", lru.DefaultDir, "the cache directory")
	c.Flags().StringVar(&size, "cache-size", "", "set the cache's budget first (e.g. 512M, 10G)")
	c.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	return c
}

func cachePruneCmd() *cobra.Command {
	var dir, older string
	var all, jsonOut bool
	c := &cobra.Command{
		Use:   "prune [--cache DIR] (--all | --older-than DURATION) [--json]",
		Short: "Remove every chunk from the cache, or those not used for a while",
		Long: `Remove every chunk from the cache (--all), or those not read for DURATION
(--older-than 36h, 7d; recency is kept to the minute). Pinned chunks (being
read) are kept. Mounts fetch what they need again.`,
		Args: usageArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			if all == (older != "") {
				return &exitError{exitUsage, errors.New("prune takes --all or --older-than DURATION")}
			}
			var d time.Duration
			if older != "" {
				var err error
				if d, err = parseAge(older); err != nil {
					return &exitError{exitUsage, fmt.Errorf("--older-than: %w", err)}
				}
			}
			s, err := openCache(c, dir)
			if err != nil {
				return err
			}
			defer s.Close()
			r, err := s.Prune(c.Context(), d)
			if err != nil {
				return err
			}
			return printSweep(c, jsonOut, s, r)
		},
	}
	c.Flags().StringVar(&dir, "cache", lru.DefaultDir, "the cache directory")
	c.Flags().BoolVar(&all, "all", false, "remove every unpinned chunk")
	c.Flags().StringVar(&older, "older-than", "", "remove chunks not used for this long (90m, 36h, 7d)")
	c.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	return c
}

func printSweep(c *cobra.Command, jsonOut bool, s *lru.Store, r lru.Result) error {
	if jsonOut {
		return json.NewEncoder(c.OutOrStdout()).Encode(map[string]any{
			"dir": s.Root(), "removed": r.Removed, "freed_bytes": r.Freed, "kept_in_use": r.Skipped,
			"stale_temp_files": r.Stale, "blobs": r.Blobs, "bytes": r.Bytes, "budget": r.Budget,
		})
	}
	w := c.OutOrStdout()
	fmt.Fprintf(w, "removed %d chunks (%s) from %s", r.Removed, human(r.Freed), s.Root())
	if r.Skipped > 0 {
		fmt.Fprintf(w, "; kept %d in use", r.Skipped)
	}
	if r.Stale > 0 {
		fmt.Fprintf(w, "; %d leftover temporary files", r.Stale)
	}
	fmt.Fprintf(w, "\nnow %d chunks, %s of a %s budget\n", r.Blobs, human(r.Bytes), human(r.Budget))
	return nil
}

// parseSize reads a byte count: digits with an optional fraction and a
// binary suffix, K, M, G or T (KiB, KB and the like too, all powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGTP", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || v*float64(mult) >= 1<<62 {
		return 0, fmt.Errorf("%q is not a size (e.g. 512M, 10G, 1.5T)", s)
	}
	return int64(v * float64(mult)), nil
}

// parseSizeOrOff is parseSize for flags where 0 turns something off.
func parseSizeOrOff(s string) (int64, error) {
	if strings.TrimSpace(s) == "0" {
		return 0, nil
	}
	return parseSize(s)
}

// parseAge reads a Go duration or a number of days ("7d").
func parseAge(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err == nil && n > 0 {
			return time.Duration(n * 24 * float64(time.Hour)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a duration (e.g. 90m, 36h, 7d)", s)
	}
	return d, nil
}

// human formats a byte count in binary units, as sizes are given.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}
