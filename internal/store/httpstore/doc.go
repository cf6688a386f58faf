// Package httpstore is a chunk store over HTTP: a client (New) and a server
// (Handler) speaking zos store protocol v2, written up in docs/STORE-HTTP.md.
//
// # Reads
//
// A blob with ID h is BASE/h[0:2]/h, the dir store's layout, so any static
// web server over a dir store directory is a read-only store. The client
// verifies every blob it receives; the server is never trusted.
//
// # Writes
//
// PUT and DELETE carry a request signed with the writer's ed25519 key
// (package auth): method, host, full request target, timestamp, nonce and
// the BLAKE3 of the body. A server accepts only keys it allows, within five
// minutes of its clock, each nonce once (in a nonce store that servers
// sharing a backend share).
//
// # Retries
//
// The client retries network errors, 5xx and 429 with exponential backoff
// and full jitter, a bounded number of times, signing every try afresh (a
// reused nonce would be refused as a replay). A 404 or other 4xx is an
// answer, not a failure, and is never retried.
package httpstore
