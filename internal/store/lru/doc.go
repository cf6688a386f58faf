// Package lru is the machine's chunk cache: a directory of sealed blobs,
// shared by every mount, flist and process, bounded by a byte budget with
// least-recently-used eviction. It implements store.Store; placed under a
// read-through cache (store/cache) it is the local side of every mount.
// docs/CACHE.md is the normative description of its directory.
//
// # Directory
//
// Blobs are files in the dir store's layout (ROOT/h[0:2]/h). There is no
// index besides the directory: a blob's size is its file's size and its
// recency is its file's modification time, set to now by a read when it is
// more than a minute old. Any process rebuilds its view from the directory
// when it needs one (an eviction scans it), so there is nothing to corrupt
// in a crash and nothing to keep in step between processes. This costs a
// scan per eviction, proportional to the number of blobs; evictions free
// a tenth of the budget at a time, so the cost per blob written stays
// small and constant, and it runs in the background.
//
// # Budget
//
// The one shared record, ROOT/.zos-cache/state, counts the cached bytes
// so that a write can respect the budget without a scan. A write reserves
// its bytes and links its blob into place under an flock of that record,
// so the count is an upper bound of what the directory holds and a scan
// under the lock is exact. Past 95% of the budget a background eviction
// brings the cache down to 90% (the low-water mark); a write that would
// pass the budget evicts synchronously first, and a blob that still does
// not fit is not cached (ErrFull).
//
// # Processes
//
// Several processes may use one directory at once: every shared change is
// a rename-free link (fails if present), an unlink (only the process whose
// unlink succeeds uncounts the blob) or an update of the state record under
// its flock. One process evicts at a time (ROOT/.zos-cache/evict.lock);
// others leave the work to it.
//
// # Pins
//
// Pin keeps a blob from eviction, by any process, until unpinned: it holds
// a shared flock on the blob's file, which an evictor must take exclusively
// before removing it. A pin dies with its process, so a crash leaves no
// stale pin. Lease wraps a store so that every blob read through it (a
// chunk and its delta bases) stays pinned until released.
//
// # Crash safety
//
// A blob is written to a temporary file and linked into place whole;
// readers never open temporary files, and scans remove those more than an
// hour old. Every Get verifies the blob with chunk.Check: a blob torn by a
// power loss or rotted on disk is removed and reported, and a read-through
// cache then fetches it again.
package lru
