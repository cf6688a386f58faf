// Package oci opens container images, from a registry, an OCI layout or a
// `docker save` tarball, as a list of layer streams and a run
// configuration, without a Docker daemon. It is the only importer of the
// registry client (go-containerregistry); package pack applies the layers.
//
// # References
//
// An image reference is one of:
//
//	docker://REF            a registry (REF as `docker pull` takes it)
//	oci:DIR[:TAG]           an OCI image layout directory
//	docker-archive:FILE     a `docker save` (or `skopeo copy docker-archive:`) tarball
//
// An image index (a multi-platform image) resolves to the manifest of
// Options.Platform, by default the host's (linux/amd64 here).
//
// # Verification
//
// Every layer stream is checked against the layer's DiffID (the SHA-256 of
// the uncompressed tar that the image's config names) when it is read to
// its end; a registry's blobs are also checked against their digests by the
// client. A mismatch is an error at the end of the stream, so a reader must
// read to the end before it trusts anything it read.
package oci
