package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store/lru"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"512", 512}, {"100K", 100 << 10}, {"512M", 512 << 20}, {"10G", 10 << 30}, {"10g", 10 << 30},
		{"1.5T", 3 << 39}, {"10GiB", 10 << 30}, {"10GB", 10 << 30}, {"64KiB", 64 << 10}, {"2048B", 2048},
		{"", -1}, {"G", -1}, {"10X", -1}, {"-1G", -1}, {"0", -1}, {"1e30T", -1},
	} {
		got, err := parseSize(tc.in)
		if tc.want < 0 {
			if err == nil {
				t.Errorf("parseSize(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for in, want := range map[string]time.Duration{"90m": 90 * time.Minute, "36h": 36 * time.Hour, "7d": 7 * 24 * time.Hour, "0.5d": 12 * time.Hour} {
		if got, err := parseAge(in); err != nil || got != want {
			t.Errorf("parseAge(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "7", "d", "-1h", "0s"} {
		if _, err := parseAge(in); err == nil {
			t.Errorf("parseAge(%q) accepted", in)
		}
	}
	if h := human(10 << 30); h != "10.0 GiB" {
		t.Errorf("human = %q", h)
	}
}

type cacheStats struct {
	Blobs, Bytes, Budget, Pinned, Evictions, CountedBytes int64
}

func statsOf(t *testing.T, dir string) cacheStats {
	t.Helper()
	var m map[string]any
	out := mustRun(t, "cache", "stats", "--cache", dir, "--json")
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("stats --json: %v: %s", err, out)
	}
	n := func(k string) int64 { return int64(m[k].(float64)) }
	return cacheStats{n("blobs"), n("bytes"), n("budget"), n("pinned"), n("evictions"), n("counted_bytes")}
}

// TestCLICache fills a cache directory (a store packed into it: the layout
// is the same) and runs stats, gc and prune on it.
func TestCLICache(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	rng := rand.NewChaCha8([32]byte{4})
	for i := range 12 {
		b := make([]byte, 200<<10)
		rng.Read(b)
		os.WriteFile(filepath.Join(tree, fmt.Sprint("f", i)), b, 0o644)
	}
	cache := filepath.Join(dir, "cache")
	mustRun(t, "flist", "pack", tree, "-o", filepath.Join(dir, "a.fl"), "--store", "dir://"+cache)

	st := statsOf(t, cache)
	if st.Blobs < 12 || st.Bytes < 12*200<<10 || st.Budget != 10<<30 || st.Pinned != 0 || st.CountedBytes != st.Bytes {
		t.Fatalf("stats of a fresh cache: %+v", st)
	}
	if out := mustRun(t, "cache", "stats", "--cache", cache); !strings.Contains(out, "budget") || !strings.Contains(out, "10.0 GiB") {
		t.Fatalf("stats:\n%s", out)
	}

	// gc down to a budget of half the cache.
	half := st.Bytes / 2
	out := mustRun(t, "cache", "gc", "--cache", cache, "--cache-size", fmt.Sprint(half))
	if !strings.Contains(out, "removed") {
		t.Fatalf("gc: %s", out)
	}
	after := statsOf(t, cache)
	if after.Bytes > half || after.Budget != half || after.Evictions == 0 || after.Blobs == 0 {
		t.Fatalf("after gc --cache-size %d: %+v", half, after)
	}

	// prune --older-than keeps what was used recently, removes the rest.
	mustRun(t, "cache", "prune", "--cache", cache, "--older-than", "1h")
	if s := statsOf(t, cache); s.Blobs != after.Blobs {
		t.Fatalf("prune --older-than 1h removed recent chunks: %+v, before %+v", s, after)
	}
	blobs, _ := filepath.Glob(filepath.Join(cache, "[0-9a-f][0-9a-f]", "*"))
	old := time.Now().Add(-48 * time.Hour)
	for _, b := range blobs[:2] {
		os.Chtimes(b, old, old)
	}
	var r map[string]any
	json.Unmarshal([]byte(mustRun(t, "cache", "prune", "--cache", cache, "--older-than", "1d", "--json")), &r)
	if r["removed"].(float64) != 2 {
		t.Fatalf("prune --older-than 1d: %v", r)
	}
	// A chunk pinned by another process (a mount reading it) is shown and kept.
	l, err := lru.Open(context.Background(), cache, lru.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var pinned digest.ID
	l.List(context.Background(), func(id digest.ID) error { pinned = id; return nil })
	unpin := l.Pin(pinned)
	if s := statsOf(t, cache); s.Pinned != 1 {
		t.Fatalf("stats with a pin: %+v", s)
	}
	json.Unmarshal([]byte(mustRun(t, "cache", "prune", "--cache", cache, "--all", "--json")), &r)
	if r["kept_in_use"].(float64) != 1 || r["blobs"].(float64) != 1 {
		t.Fatalf("prune --all with a pin: %v", r)
	}
	unpin()
	mustRun(t, "cache", "prune", "--cache", cache, "--all")
	if s := statsOf(t, cache); s.Blobs != 0 || s.Bytes != 0 || s.CountedBytes != 0 {
		t.Fatalf("after prune --all: %+v", s)
	}

	// Usage errors are exit 2, a missing cache exit 1, in one line.
	for _, args := range [][]string{
		{"cache", "prune", "--cache", cache},
		{"cache", "prune", "--cache", cache, "--all", "--older-than", "1h"},
		{"cache", "prune", "--cache", cache, "--older-than", "soon"},
		{"cache", "gc", "--cache", cache, "--cache-size", "lots"},
		{"cache", "stats", "extra"},
	} {
		if _, errs, code := run(t, args...); code != exitUsage || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("zos %s: exit %d, %q", strings.Join(args, " "), code, errs)
		}
	}
	if _, errs, code := run(t, "cache", "stats", "--cache", filepath.Join(dir, "none")); code != exitFail || !strings.Contains(errs, "no chunk cache") {
		t.Errorf("missing cache: exit %d, %q", code, errs)
	}
}
