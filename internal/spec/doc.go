// Package spec defines zos deployments: what a group of twins asks a node
// to run, how it is written (YAML or JSON), its one canonical encoding, the
// challenge its signers sign, and the weighted multisig rule that decides
// whether it is approved. docs/SPEC.md is the reference; this package
// implements version 1 of it.
//
// # Deployment
//
// A Deployment has a version (higher on every update), an owner twin, a
// description, workloads, a signature Requirement and Signatures. Parse
// reads one strictly (unknown fields, duplicate keys, aliases and absurd
// sizes are errors), fills the defaults and validates it; every problem is
// a *FieldError wrapping ErrInvalid that names the field.
//
// # Workload
//
// A Workload has a name (a DNS label, unique in the deployment), a Kind and
// the body of that kind: a Container (an image pinned by flist digest, its
// process, limits, mounts, network attachments and ports), a Volume, a
// private Network or a web Gateway to a container's port.
//
// # Canonical form and challenge
//
// Canonical writes a deployment as JSON where equal meaning gives equal
// bytes: every default explicit, keys sorted, sets sorted, no whitespace.
// The Challenge is BLAKE3-256 in derive_key mode, with the context
// ChallengeContext, of the canonical form without signatures, so adding a
// signature never changes what the others signed.
//
// # Signatures
//
// Sign signs a challenge in the key domain Domain. Verify counts, against
// the twins' registered keys, the valid signatures of listed twins (each
// twin once; anything else ignored, with a reason) and reports whether the
// requirement is met: every required twin signed and the weights reach the
// required weight. When it is not, the error is a *SignatureError wrapping
// ErrSignature.
package spec
