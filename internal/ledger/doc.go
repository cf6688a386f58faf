// Package ledger is the grid ledger's state machine: twins, nodes and
// deployment contracts, changed only by signed transactions, applied
// deterministically so that every validator of a CometBFT chain
// (internal/ledger/engine drives a Machine) reaches the same state and app
// hash. It imports no consensus engine: it is pure and tested on its own.
// docs/LEDGER.md is the reference; this package implements version 1.
//
// # Twin
//
// A twin is a person or organisation: a number, assigned in order from 1,
// and an ed25519 key (package key). It signs transactions and deployment
// specs. It may rotate its key; keys are never reused.
//
// # Node
//
// A node is a machine offering capacity: a number, its owner twin, its own
// ed25519 key (the node signs its reports with it), its capacity and the
// URL of its API.
//
// # Contract
//
// A contract asks a node to run a deployment (package spec). It holds the
// spec's stripped canonical form and digest (its challenge), the
// approvals, and a state: pending until its signature requirement is met,
// then active, and cancelled at the end (final). An update of an active
// contract is a pending revision that replaces the active spec only once
// approved in its own right; a node reports what it observes of each of
// its contracts.
//
// # Approval
//
// An approval is a spec signature (spec.Sign, zos sign) of the contract's
// spec, by a twin the requirement lists, with the twin's registered key.
// A contract becomes active in the block where spec.Verify, run on the
// spec with its approvals as signatures and the twins' keys, says the
// requirement is met. Because approvals are signatures of the spec itself,
// a node can rebuild the deployment (ContractView.Deployment) and verify
// it without trusting whoever answered its query.
//
// # Transaction
//
// A transaction is a canonical JSON envelope (chain id, signer, nonce,
// type, body) signed by its signer in the key domain TxDomain. It has one
// spelling (DecodeTx refuses any other), names its chain (no replay on
// another chain) and carries a nonce above its signer's last (no replay on
// this one). NewTx builds one from a typed Body. A refused transaction
// changes nothing; its result code (Code) says why.
//
// # App hash
//
// The app hash chains the blocks: the BLAKE3 (context AppHashContext) of
// the previous hash, the height and time, each transaction's hash, result
// code and events, and every record the block wrote, sorted. Validators
// that diverge in any of these disagree at that block.
package ledger
