// Package flist reads and writes the zos image format (docs/FORMAT.md).
//
// # Flist
//
// An flist is one small file describing a whole tree: every entry with its
// attributes, and a chunk table naming the content chunks by fingerprint.
// Content lives in chunk stores (package store); the flist is the
// capability to find and decrypt it.
//
// # Content stream
//
// The content of all regular files, in entry order, forms one logical
// stream cut into chunks (small files share chunks; large files start and
// end on chunk boundaries). A file records only its size and its offset in
// the stream; the chunk table turns offsets into chunks.
//
// # Digest and signatures
//
// The digest is the BLAKE3 of the body (everything but the signature
// trailer); the body is canonical, so the digest names the image. Sign adds
// ed25519 signatures over the digest without changing it.
//
// # Random access
//
// Entries are stored in independently compressed blocks with an offset
// table: a lookup decodes only the blocks on its path.
package flist
