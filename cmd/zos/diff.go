package main

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

type piece struct {
	sum    digest.ID
	lo, hi uint64
}

// pieces describes a file's content as (chunk, range) pairs: equal pieces
// mean equal content without fetching anything.
func pieces(r *flist.Reader, e *flist.Entry) []piece {
	var out []piece
	off, end := e.Offset, e.Offset+e.Size
	for off < end {
		k := r.ChunkAt(off)
		s := r.ChunkStart(k)
		hi := min(s+uint64(r.Chunks()[k].Size), end)
		out = append(out, piece{r.Chunks()[k].Sum, off - s, hi - s})
		off = hi
	}
	return out
}

func attrDiff(a, b *flist.Entry) []string {
	var d []string
	if a.Kind() != b.Kind() {
		return []string{fmt.Sprintf("type %s -> %s", a.Kind(), b.Kind())}
	}
	if a.Perm() != b.Perm() {
		d = append(d, fmt.Sprintf("mode %o -> %o", a.Perm(), b.Perm()))
	}
	if a.UID != b.UID || a.GID != b.GID {
		d = append(d, fmt.Sprintf("owner %d:%d -> %d:%d", a.UID, a.GID, b.UID, b.GID))
	}
	if a.Mtime != b.Mtime || a.Nsec != b.Nsec {
		d = append(d, "mtime")
	}
	if a.Target != b.Target {
		d = append(d, fmt.Sprintf("target %q -> %q", a.Target, b.Target))
	}
	if a.Rdev != b.Rdev {
		d = append(d, "device")
	}
	if fmt.Sprint(a.Xattrs) != fmt.Sprint(b.Xattrs) {
		d = append(d, "xattrs")
	}
	if a.Size != b.Size {
		d = append(d, fmt.Sprintf("size %d -> %d", a.Size, b.Size))
	}
	return d
}

func entriesByPath(r *flist.Reader) (map[string]*flist.Entry, error) {
	m := map[string]*flist.Entry{}
	err := r.Walk(func(p string, i uint64, e *flist.Entry) error {
		t, err := r.Resolve(e)
		if err != nil {
			return err
		}
		m[p] = t
		return nil
	})
	return m, err
}

func diffCmd() *cobra.Command {
	var noFetch bool
	c := &cobra.Command{
		Use:   "diff A.fl B.fl",
		Short: "List paths added (+), removed (-) and changed (~) from A to B",
		Args:  usageArgs(2, "two flists"),
		RunE: func(c *cobra.Command, args []string) error {
			ra, err := readFlist(args[0])
			if err != nil {
				return err
			}
			rb, err := readFlist(args[1])
			if err != nil {
				return err
			}
			ea, err := entriesByPath(ra)
			if err != nil {
				return err
			}
			eb, err := entriesByPath(rb)
			if err != nil {
				return err
			}
			var sa, sb store.Store
			if !noFetch {
				// Content that moved between chunks is compared byte by byte
				// when the recorded stores answer; otherwise it is reported.
				sa, _ = flistStores(c.Context(), ra, nil, nil)
				sb, _ = flistStores(c.Context(), rb, nil, nil)
			}
			var paths []string
			for p := range ea {
				paths = append(paths, p)
			}
			for p := range eb {
				if _, ok := ea[p]; !ok {
					paths = append(paths, p)
				}
			}
			sort.Strings(paths)
			w := c.OutOrStdout()
			changes := 0
			for _, p := range paths {
				a, b := ea[p], eb[p]
				switch {
				case a == nil:
					fmt.Fprintf(w, "+ %s\n", p)
				case b == nil:
					fmt.Fprintf(w, "- %s\n", p)
				default:
					d := attrDiff(a, b)
					if len(d) == 0 && a.Kind() == flist.KindRegular && fmt.Sprint(pieces(ra, a)) != fmt.Sprint(pieces(rb, b)) {
						same, known := sameContent(c.Context(), ra, rb, sa, sb, a, b)
						if !known {
							d = append(d, "content (not compared: stores unreachable)")
						} else if !same {
							d = append(d, "content")
						}
					}
					if len(d) == 0 {
						continue
					}
					fmt.Fprintf(w, "~ %s (%s)\n", p, strings.Join(d, ", "))
				}
				changes++
			}
			if changes == 0 {
				fmt.Fprintln(w, "no differences")
			}
			return nil
		},
	}
	c.Flags().BoolVar(&noFetch, "no-fetch", false, "never fetch content; report files whose chunks differ as changed")
	return c
}

func sameContent(ctx context.Context, ra, rb *flist.Reader, sa, sb store.Store, a, b *flist.Entry) (same, known bool) {
	if sa == nil || sb == nil {
		return false, false
	}
	var x, y bytes.Buffer
	if readContent(ctx, ra, sa, a, &x) != nil || readContent(ctx, rb, sb, b, &y) != nil {
		return false, false
	}
	return bytes.Equal(x.Bytes(), y.Bytes()), true
}
