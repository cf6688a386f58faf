// Package mount serves an flist as a read-only FUSE filesystem whose file
// content is fetched from a chunk store the first time it is read, and
// optionally a writable layer over it.
//
// # Nodes
//
// An image never changes, so the filesystem keeps no inode table: the FUSE
// node ID of an entry is its index in the flist plus one (the root, entry 0,
// is node 1, as FUSE requires), and a hard link answers with the node ID of
// the entry holding its content, so every name of an inode shares one inode
// number. Forget has nothing to free. The only per-entry state built at
// mount time is what the flist does not store: link counts (hard links per
// file, subdirectories per directory) and each directory's parent, for "..".
// They come from one pass over the metadata after flist.Reader.Validate has
// proved the tree well formed; no chunk is read at mount time.
//
// # Kernel caches
//
// Entries, negative lookups and attributes are given timeouts of a year.
// Open and opendir answer ENOSYS, which makes the kernel stop asking (no
// round trip per open) and treat every open as FOPEN_KEEP_CACHE, plus
// FOPEN_CACHE_DIR for directories: file pages and listings stay cached
// across opens, with automatic invalidation off, so a file read once is
// served from the page cache at native speed until the kernel reclaims it.
//
// # Reads
//
// A read maps the file range to its span of the image's content stream and
// that span to chunks. Each chunk goes through store.Fetch, which verifies
// it against its fingerprint before returning it, so no byte reaches the
// kernel unverified. A chunk that is missing, corrupt or too slow fails
// that read with EIO and is logged once, with its store ID and the store;
// failures are never cached, so the read succeeds once the store is
// repaired. A read inside one chunk is answered from the cached plaintext
// without a copy.
//
// # Faults
//
// A fetch that fails for a reason another try could mend (a refused or
// reset connection, a 5xx, a store-side timeout: anything but "not found"
// from every replica or a corrupt blob) is tried again after an
// exponential backoff (100 ms doubling to 5 s, jittered), for as long as
// Options.FetchTimeout allows, counted from the start of the fetch; a
// try never holds a fetch slot while it waits. So a hub that restarts
// costs a retry, not an error, and a read never hangs: past the bound it
// fails with EIO and the log gives the tries and the last store error.
// Failing over between replicas is the store's (store/router) business.
// A chunk whose fetch timed out fails at once for the next two seconds:
// the kernel answers a failed read-ahead with a read of its own, which
// would otherwise wait the whole bound again.
//
// # Chunk cache
//
// Verified plaintexts are kept in a small LRU bounded in bytes (Options.
// MemoryBytes), whatever the image size. Chunks fetched ahead of readers
// (read-ahead, trace prefetch) wait on a list of their own until a read
// uses them and are evicted only after the chunks reads used, so a
// streaming reader never finds the chunk it is about to read pushed out
// by those it read before; that list holds at most half the budget,
// oldest out first, so prefetches nobody reads cannot crowd out the
// readers' working set. A chunk has at most one fetch in
// flight: concurrent readers that need it wait for that fetch. Fetches run
// in parallel up to Options.Fetchers, under the mount's context rather than
// a reader's. Chunks started together (a read spanning several, a read-ahead
// window, a file prefetch, the next chunks of a trace) are fetched up to 8
// at a time in one batched read of the store (store.Batcher: the HTTP
// store's batched get, docs/STORE-HTTP.md) holding one fetch slot; a chunk
// the batch does not bring is fetched on its own, with the retries below,
// and a store that cannot batch (a static server, a router over such stores)
// is fetched from one chunk at a time from then on. A read waits for its
// chunks even when the kernel forwards an interrupt (a read of a regular
// file must not fail with EINTR); Options.FetchTimeout bounds the wait.
// Persistent caching of sealed blobs on disk is the store's business
// (package store/cache).
//
// # Read-ahead
//
// Each file being read tracks where a sequential reader will read next.
// A read that continues the previous one (or starts the file) starts
// background fetches of the chunks in a window past it, so a streaming
// reader finds its chunks already fetched. The window starts at 256 KiB and
// doubles with each sequential read up to Options.ReadAhead; a random read
// resets it and starts nothing. Read-ahead never crosses the end of the
// file, and it is bounded: past Options.Fetchers read-ahead fetches in
// flight it waits for the reader to come back.
//
// The first read of a file also starts background fetches of its first
// Options.FilePrefetch bytes, whatever the reader does next, under the
// same bound; each later read of the file goes on where the bound stopped
// them. A dynamic loader or an interpreter reads scattered pieces of its
// files, each a round trip waiting for the one before; with the file's
// chunks in flight they are hits instead.
//
// The kernel's own read-ahead on the mount is raised to Options.
// KernelReadAhead (2 MiB): a page fault in a mapped file, which is how
// programs read their code and data, reads that much around itself, so a
// program faulting in from a cold mount waits for fewer round trips. A
// mount recording a trace sets it to one page, so that the trace lists
// only what the program read; a mount prefetching by a version-2 trace or
// a bundle keeps one page until that prefetch is done (read-around would
// fault in what the trace does not list, each page waiting for a whole
// chunk), then raises it; a version-1 trace keeps the kernel's 128 KiB.
//
// # Loader prefetch
//
// The first read of a file that starts with an ELF header (a program or a
// library being loaded) starts background fetches of what the dynamic
// loader reads next: the file's writable segments and the span of its
// dynamic tables, and the same for its interpreter and for every library
// its DT_NEEDED entries name, found in the image by the loader's search
// rules and symlinks, recursively, each file once per mount (loader.go).
// Without it, loading a program is a chain of round trips, two or more per
// library, one library after the other. The ELF headers are input: only
// 64-bit little-endian files are read, within fixed bounds.
//
// # Whole files
//
// With a local cache that keeps whole files (Options.Files, store/lru),
// a regular file of at least Options.MinWhole bytes whose plaintext the
// cache holds whole is opened in FUSE passthrough mode: the kernel reads
// and maps it from the cache's file system, and no read reaches the
// server. A file Read served is written whole into the cache when its
// last such handle closes, if every chunk of it is cached (docs/CACHE.md,
// "Whole files"). Open is then answered (one round trip per open) instead
// of ENOSYS. The kernel gives an inode one backing file and refuses to mix
// passthrough and cached opens of it, so a new open takes the mode of the
// handles still open.
//
// # Trace prefetch
//
// A Trace is the order in which a program first read an image's chunks
// (Options.Record, FS.Trace); it is saved beside the flist (docs/TRACE.md)
// and bound to it by digest. A mount given a trace (Options.Prefetch)
// fetches those chunks in the background from mount time, in order, a few
// at a time (Options.PrefetchFetchers). Reads come first: fetch slots
// (Options.Fetchers) go to reads and read-ahead before the prefetch, which
// takes one only when no read waits, and a prefetch that a read joins is
// promoted. What the prefetch fetches is kept in memory until a read uses
// it, up to Options.PrefetchLead bytes ahead of the readers; then it
// waits for them, or, over a store that keeps chunks on disk
// (Options.StoreKeeps), goes on fetching into the store. Warm fetches a
// whole image (or any chunk list) through a store, to fill its cache.
//
// A version-2 trace also lists, for each chunk, the ranges its reads asked
// for (Trace.Ranges, 1 KiB units).
//
// # Start bundles
//
// A start bundle (BuildBundle, docs/BUNDLE.md) carries, for a version-2
// trace, only the ranges read, each with the BLAKE3 tree nodes (a Bao
// slice) that verify it against the chunk's fingerprint in the signed
// flist, in the trace's order, as one zstd stream: for a program's start,
// about half the bytes of the whole chunks. A mount given one
// (Options.Bundle) streams it from mount time; a read whose bytes lie in
// a verified slice is served from it, and a read of a listed range not yet
// arrived waits for the stream when it is near (slices.go). Anything else
// fetches the chunk whole. While it streams there is no read-ahead and no
// loader prefetch (the bundle brings what they would guess). Slices are
// held in memory, within Options.MemoryBytes of their own: ones a read
// used are dropped first, and the stream waits while only unread ones
// are left. When the stream has ended and reads have settled for a
// second, the listed chunks are fetched whole, as by a trace prefetch,
// into the cache; slices never enter it. A slice that fails
// verification, a truncated stream or a bundle for another image or trace
// costs only the fetches it would have saved.
//
// # Writable layer
//
// With Options.Upper = DIR the mount point gets a kernel overlayfs whose
// upper and work directories are DIR/upper and DIR/work, over the image
// mounted read-only at DIR/lower. Changes persist in DIR across remounts;
// files and directories of the image can be deleted (whiteouts) and
// renamed (redirect_dir=on). Hard links of the image stay linked when one
// name is written (index=on), and a chmod or chown of an image file copies
// up its metadata only, fetching no content (metacopy=on). These features
// tie DIR to the exact lower tree, so DIR is bound to one flist digest
// (DIR/zos-layer) and refused for another. The overlay's root takes the
// image root's owner, mode and time. Unmounting takes the overlay off
// first, then the image. A writable mount whose image server died leaves
// an overlay over a dead FUSE mount; the next mount detaches both.
//
// Overlay stacks such a writable layer on an image another server already
// serves read-only, so that many writable roots share one image mount (a
// node runs one FUSE server per image, not per container). An overlay
// holds on to the mount it was stacked on: if that server dies and the
// image is mounted again at the same path, the old overlay stays broken.
// The layer records the unique mount ID it stands on (DIR/lower.mnt,
// MountID), which tells such a stale overlay from a live one.
//
// # Mount points
//
// Mount refuses a mount point where a zos server is already live, and
// detaches a stale one left by a server that died (the kernel answers
// ENOTCONN there) before mounting again; for a writable mount, the same
// holds for the overlay and the image under it.
package mount
